"""SimEngine with static batching: padding, idle slots, no joining."""

from __future__ import annotations

import dataclasses
import random

from engines.clock import VirtualClock
from engines.contract import EngineRequest, FinishReason
from engines.manifest import Manifest
from engines.sim import SimEngine, expected_output

from .conftest import Collect


def expected(req: EngineRequest) -> list[int]:
    return expected_output(req.prompt, req.max_new_tokens, req.end_id)[0]


def poll_groups(engine: SimEngine, n: int) -> list[list[int]]:
    """Request ids as they come back, one list per poll that returned any."""
    groups: list[list[int]] = []
    while sum(map(len, groups)) < n:
        outputs = engine.poll(timeout_s=100.0)
        assert outputs, "the engine stopped producing"
        groups.append([o.request_id for o in outputs])
    return groups


SHORT = EngineRequest(1, list(range(10)), 5)
LONG = EngineRequest(2, list(range(100, 130)), 20)


def test_padding_and_idle_slots_are_counted(small: Manifest, clock: VirtualClock) -> None:
    engine = SimEngine(small, clock=clock, batching="static")
    engine.submit([SHORT, LONG])
    outputs = engine.poll(timeout_s=100.0)  # both come back when the batch ends
    assert [(o.request_id, o.tokens) for o in outputs] == [
        (1, expected(SHORT)),
        (2, expected(LONG)),
    ]
    stats = engine.stats()
    # Prefill: 2 rows x 30 slots, 20 of them padding. Decode: 19 iterations x 2
    # slots; the short row idles in 15 of them.
    assert stats.padded_tokens == 20 + 15
    assert stats.computed_tokens == 2 * 30 + 2 * 19
    assert stats.generated_tokens == 25
    assert stats.prompt_tokens == 40
    assert stats.num_steps == 20


def test_in_flight_computes_no_padding_for_the_same_jobs(
    small: Manifest, clock: VirtualClock, collect: Collect
) -> None:
    engine = SimEngine(small, clock=clock)
    engine.submit([SHORT, LONG])
    collect(engine, 2)
    stats = engine.stats()
    assert stats.padded_tokens == 0
    assert stats.computed_tokens == 40 + (5 - 1) + (20 - 1)


def test_nothing_joins_a_running_batch(small: Manifest, clock: VirtualClock) -> None:
    engine = SimEngine(small, clock=clock, batching="static")
    engine.submit([LONG])
    assert engine.poll(timeout_s=0.0) == []  # the batch has started
    late = EngineRequest(3, [1, 2, 3], 3)
    engine.submit([late])
    assert engine.stats().extra["num_waiting"] == 1
    assert [o.request_id for o in engine.poll(timeout_s=100.0)] == [2]
    assert engine.stats().num_steps == 20
    [output] = engine.poll(timeout_s=100.0)
    assert output.tokens == expected(late)
    assert engine.stats().num_steps == 20 + 3


def test_batch_size_splits_batches(small: Manifest, clock: VirtualClock) -> None:
    engine = SimEngine(dataclasses.replace(small, max_batch_size=4), clock=clock, batching="static")
    engine.submit([EngineRequest(i, [i, 1, 2], 4) for i in range(10)])
    assert poll_groups(engine, 10) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_kv_at_the_padded_shape_splits_batches(small: Manifest, clock: VirtualClock) -> None:
    # 32 blocks of KV. Three rows of 100 + 28 tokens take 4 blocks each; a
    # 400-token prompt would pad every row to 428 tokens (14 blocks): no room.
    manifest = dataclasses.replace(small, kv_cache_tokens=1024, max_seq_len=1024)
    engine = SimEngine(manifest, clock=clock, batching="static")
    requests = [EngineRequest(i, [i] * 100, 28) for i in range(3)]
    requests.append(EngineRequest(3, [3] * 400, 28))
    engine.submit(requests)
    engine.poll(timeout_s=0.0)
    assert engine.stats().extra["kv_used_blocks"] == 12
    assert poll_groups(engine, 4) == [[0, 1, 2], [3]]


def test_cancel_a_row_shortens_the_batch(small: Manifest, clock: VirtualClock) -> None:
    engine = SimEngine(small, clock=clock, batching="static")
    engine.submit([SHORT, LONG])
    for _ in range(3):  # prefill and two decode iterations
        assert engine.poll(timeout_s=0.0) == []
    engine.cancel([2])
    [cancelled] = engine.poll(timeout_s=100.0)
    assert cancelled.finish_reason is FinishReason.CANCELLED
    assert cancelled.tokens == expected(LONG)[:3]
    [done] = engine.poll(timeout_s=100.0)
    assert done.tokens == expected(SHORT)
    stats = engine.stats()
    assert stats.num_steps == 5  # the batch ended with the short row
    assert stats.generated_tokens == 3 + 5
    # the cancelled row kept its slot: 2 idle decode slots after the cancel
    assert stats.padded_tokens == 20 + 2


def test_cancel_a_row_that_is_done_but_waits_for_its_batch(
    small: Manifest, clock: VirtualClock
) -> None:
    engine = SimEngine(small, clock=clock, batching="static")
    engine.submit([SHORT, LONG])
    for _ in range(6):  # the short row has all 5 tokens after 5 iterations
        assert engine.poll(timeout_s=0.0) == []
    engine.cancel([1])  # too late: it finished, it only waits for the batch
    outputs = engine.poll(timeout_s=100.0)
    assert [(o.request_id, o.finish_reason) for o in outputs] == [
        (1, FinishReason.LENGTH),
        (2, FinishReason.LENGTH),
    ]
    assert outputs[0].tokens == expected(SHORT)


def test_cancel_every_row_drops_the_batch(small: Manifest, clock: VirtualClock) -> None:
    engine = SimEngine(small, clock=clock, batching="static")
    engine.submit([SHORT, LONG, EngineRequest(3, [9], 4)])
    engine.poll(timeout_s=0.0)
    engine.cancel([1, 2, 3])
    outputs = engine.poll(timeout_s=100.0)
    assert {o.finish_reason for o in outputs} == {FinishReason.CANCELLED}
    assert len(outputs) == 3
    stats = engine.stats()
    assert stats.extra["kv_used_blocks"] == 0
    assert stats.extra["num_running"] == 0
    assert engine.poll(timeout_s=100.0) == []


def test_every_static_result_is_the_expected_output(
    small: Manifest, clock: VirtualClock, collect: Collect
) -> None:
    rng = random.Random(3)
    requests = [
        EngineRequest(
            i, [rng.randrange(32000) for _ in range(rng.randint(1, 600))], rng.randint(1, 80)
        )
        for i in range(100)
    ]
    engine = SimEngine(small, clock=clock, batching="static")
    engine.submit(requests)
    outputs = collect(engine, 100)
    assert sorted(o.request_id for o in outputs) == list(range(100))
    for output in outputs:
        assert output.tokens == expected(requests[output.request_id])
    stats = engine.stats()
    assert stats.generated_tokens == sum(len(o.tokens) for o in outputs)
    # every slot paid for is a prompt token, a decode token, or padding
    assert stats.computed_tokens == (
        stats.prompt_tokens + stats.generated_tokens - len(requests) + stats.padded_tokens
    )
    assert stats.padded_tokens > 0
    assert stats.prefix_hit_blocks == stats.prefix_miss_blocks == 0
