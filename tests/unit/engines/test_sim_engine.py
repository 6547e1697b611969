"""SimEngine with in-flight batching: results, limits, poll, cancel, validation."""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from engines.clock import VirtualClock
from engines.contract import (
    EngineFatalError,
    EngineOutput,
    EngineRequest,
    EngineStats,
    FinishReason,
    WrongThreadError,
)
from engines.manifest import Manifest, ManifestError
from engines.sim import SimEngine, expected_output
from engines.sim.cost import CostModel, IterationWork

from .conftest import Collect


def request(request_id: int, prompt_len: int = 16, max_new: int = 8, **kw: Any) -> EngineRequest:
    """A request whose prompt is distinct per id (no accidental prefix hits)."""
    prompt = [request_id % 32000, *((request_id * 7919 + j) % 32000 for j in range(prompt_len - 1))]
    return EngineRequest(request_id, prompt, max_new, **kw)


def assert_expected(output: EngineOutput, req: EngineRequest) -> None:
    tokens, reason = expected_output(req.prompt, req.max_new_tokens, req.end_id)
    assert output.request_id == req.request_id
    assert output.tokens == tokens
    assert output.finish_reason is reason
    assert output.error is None


@dataclasses.dataclass
class Spy:
    """Records every iteration's work and the engine's gauges at that moment."""

    works: list[IterationWork] = dataclasses.field(default_factory=list)
    gauges: list[dict[str, float]] = dataclasses.field(default_factory=list)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Callable[[SimEngine], Spy]:
    def attach(engine: SimEngine) -> Spy:
        record = Spy()
        priced = CostModel.iteration_s

        def iteration_s(self: CostModel, work: IterationWork) -> float:
            record.works.append(work)
            record.gauges.append(engine.stats().extra)
            return priced(self, work)

        monkeypatch.setattr(CostModel, "iteration_s", iteration_s)
        return record

    return attach


def test_every_result_is_the_expected_output(
    small: Manifest, clock: VirtualClock, collect: Collect
) -> None:
    rng = random.Random(1)
    requests = []
    for i in range(150):
        req = request(i, rng.randint(1, 3000), rng.randint(1, 200))
        if i % 3 == 0:  # stop early on a token it will produce
            tokens, _ = expected_output(req.prompt, req.max_new_tokens, None)
            req = dataclasses.replace(req, end_id=tokens[len(tokens) // 2])
        requests.append(req)
    engine = SimEngine(small, clock=clock)
    engine.submit(requests)
    outputs = collect(engine, len(requests))
    by_id = {o.request_id: o for o in outputs}
    assert sorted(by_id) == list(range(150))
    for req in requests:
        assert_expected(by_id[req.request_id], req)
    assert any(o.finish_reason is FinishReason.STOP for o in outputs)

    stats = engine.stats()
    num_generated = sum(len(o.tokens) for o in outputs)
    num_prompt = sum(len(r.prompt) for r in requests)
    assert stats.generated_tokens == num_generated
    assert stats.prompt_tokens == num_prompt
    # The first token of each request comes from its prefill, the rest from decode slots.
    assert stats.computed_tokens == num_prompt + num_generated - len(requests)
    assert stats.padded_tokens == 0
    assert stats.prefix_hit_blocks == 0
    assert stats.prefix_miss_blocks == sum(len(r.prompt) // 32 for r in requests)
    assert stats.busy_s == pytest.approx(clock.now_s())
    assert stats.extra["num_running"] == stats.extra["num_waiting"] == 0
    assert stats.extra["kv_used_blocks"] == 0


def test_limits_hold_in_every_iteration(
    small: Manifest, clock: VirtualClock, collect: Collect, spy: Callable[[SimEngine], Spy]
) -> None:
    engine = SimEngine(small, clock=clock)
    record = spy(engine)
    rng = random.Random(2)
    engine.submit([request(i, rng.randint(50, 600), rng.randint(50, 400)) for i in range(200)])
    collect(engine, 200)
    assert max(w.num_tokens for w in record.works) == small.max_num_tokens
    assert max(g["num_running"] for g in record.gauges) == small.max_batch_size
    assert max(g["kv_used_blocks"] for g in record.gauges) <= small.kv_cache_tokens // 32


def test_kv_capacity_holds_requests_back(
    small: Manifest, clock: VirtualClock, collect: Collect, spy: Callable[[SimEngine], Spy]
) -> None:
    # 32 blocks of KV; each request reserves 200 + 56 = 256 tokens = 8 blocks.
    manifest = dataclasses.replace(small, kv_cache_tokens=1024, max_seq_len=1024)
    engine = SimEngine(manifest, clock=clock)
    record = spy(engine)
    requests = [request(i, 200, 56) for i in range(10)]
    engine.submit(requests)
    for output in collect(engine, 10):
        assert_expected(output, requests[output.request_id])
    assert max(g["num_running"] for g in record.gauges) == 4
    assert max(g["kv_used_blocks"] for g in record.gauges) == 32


def test_long_prompt_is_prefilled_in_chunks(
    small: Manifest, clock: VirtualClock, collect: Collect, spy: Callable[[SimEngine], Spy]
) -> None:
    engine = SimEngine(small, clock=clock)
    record = spy(engine)
    req = request(1, 5000, 3)
    engine.submit([req])
    assert_expected(collect(engine, 1)[0], req)
    assert [w.num_prefill_tokens for w in record.works] == [2048, 2048, 904, 0, 0]
    assert [w.num_decode_tokens for w in record.works] == [0, 0, 0, 1, 1]
    # each chunk reads the KV of the chunks before it
    assert [w.num_kv_read_tokens for w in record.works] == [0, 2048, 4096, 5000, 5001]


def test_iteration_work_counts_tokens_pairs_and_kv_reads(
    small: Manifest, clock: VirtualClock, collect: Collect, spy: Callable[[SimEngine], Spy]
) -> None:
    engine = SimEngine(small, clock=clock)
    record = spy(engine)
    engine.submit([request(1, 100, 3)])
    collect(engine, 1)
    assert record.works == [
        # prefill: token t attends to t + 1 keys (causal); no KV to read yet
        IterationWork(100, 0, 100 * 101 // 2, 0),
        # decode: read the KV written so far, attend to it and to itself
        IterationWork(0, 1, 101, 100),
        IterationWork(0, 1, 102, 101),
    ]


def test_same_shape_requests_finish_in_submit_order(
    small: Manifest, clock: VirtualClock, collect: Collect
) -> None:
    engine = SimEngine(dataclasses.replace(small, max_batch_size=3), clock=clock)
    engine.submit([request(i, 40, 10) for i in range(9)])
    assert [o.request_id for o in collect(engine, 9)] == list(range(9))


def test_poll_on_an_empty_engine_returns_at_once(small: Manifest, clock: VirtualClock) -> None:
    engine = SimEngine(small, clock=clock)
    assert engine.poll(timeout_s=5.0) == []
    assert clock.now_s() == 0.0
    assert engine.stats().num_steps == 0


def test_poll_returns_as_soon_as_one_request_finishes(small: Manifest, clock: VirtualClock) -> None:
    engine = SimEngine(small, clock=clock)
    engine.submit([request(1, max_new=2), request(2, max_new=50)])
    assert [o.request_id for o in engine.poll(timeout_s=100.0)] == [1]
    assert engine.stats().num_steps == 2
    assert [o.request_id for o in engine.poll(timeout_s=100.0)] == [2]
    assert engine.stats().num_steps == 50


def test_poll_gives_up_after_its_timeout(small: Manifest, clock: VirtualClock) -> None:
    engine = SimEngine(small, clock=clock)
    engine.submit([request(1, max_new=1000)])
    assert engine.poll(timeout_s=0.0) == []
    assert engine.stats().num_steps == 1  # an iteration is never cut short
    first_step_s = clock.now_s()
    assert engine.poll(timeout_s=0.05) == []
    elapsed_s = clock.now_s() - first_step_s
    assert 0.05 <= elapsed_s < 0.05 + 2 * first_step_s


def test_cancel_a_decoding_request_returns_its_tokens_so_far(
    small: Manifest, clock: VirtualClock
) -> None:
    engine = SimEngine(small, clock=clock)
    req = request(1, max_new=100)
    engine.submit([req])
    engine.poll(timeout_s=0.05)
    num_generated = engine.stats().generated_tokens
    assert 1 < num_generated < 100
    engine.cancel([1, 1, 12345])  # twice, and an unknown id: both ignored
    now_s = clock.now_s()
    [output] = engine.poll(timeout_s=1.0)
    assert clock.now_s() == now_s  # came back without running the engine
    assert output.finish_reason is FinishReason.CANCELLED
    assert output.tokens == expected_output(req.prompt, 100, None)[0][:num_generated]
    assert engine.stats().extra["kv_used_blocks"] == 0
    assert engine.poll(timeout_s=1.0) == []


def test_cancel_waiting_and_prefilling_requests(small: Manifest, clock: VirtualClock) -> None:
    engine = SimEngine(dataclasses.replace(small, max_batch_size=1), clock=clock)
    engine.submit([request(1, 5000, 10), request(2)])
    engine.poll(timeout_s=0.0)  # one iteration: request 1 has a first chunk, 2 waits
    assert engine.stats().extra == {
        "num_waiting": 1.0,
        "num_running": 1.0,
        "kv_used_blocks": 157.0,
        "prefix_cache_blocks": 0.0,
    }
    engine.cancel([2, 1])
    outputs = engine.poll(timeout_s=1.0)
    assert [(o.request_id, o.tokens, o.finish_reason) for o in outputs] == [
        (2, [], FinishReason.CANCELLED),
        (1, [], FinishReason.CANCELLED),
    ]
    assert engine.stats().extra["kv_used_blocks"] == 0


def test_cancel_frees_kv_for_the_next_request(
    small: Manifest, clock: VirtualClock, collect: Collect
) -> None:
    engine = SimEngine(dataclasses.replace(small, kv_cache_tokens=1024), clock=clock)
    blocker, waiter = request(1, 500, 500), request(2, 500, 20)
    engine.submit([blocker, waiter])
    engine.poll(timeout_s=0.05)
    assert engine.stats().extra["num_waiting"] == 1
    engine.cancel([1])
    assert engine.poll(timeout_s=1.0)[0].finish_reason is FinishReason.CANCELLED
    assert_expected(collect(engine, 1)[0], waiter)


def test_a_cancelled_id_can_be_reused(
    small: Manifest, clock: VirtualClock, collect: Collect
) -> None:
    engine = SimEngine(small, clock=clock)
    engine.submit([request(7, max_new=10)])
    engine.poll(timeout_s=0.0)
    engine.cancel([7])
    assert engine.poll(timeout_s=1.0)[0].finish_reason is FinishReason.CANCELLED
    # The old request would have finished at iteration 10; the new one must not.
    reused = EngineRequest(7, [5, 6, 7, 8], 40)
    engine.submit([reused])
    assert_expected(collect(engine, 1)[0], reused)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (EngineRequest(1, [], 5), "sim: empty prompt"),
        (EngineRequest(1, [1, 2], 0), "sim: max_new_tokens 0 must be >= 1"),
        (
            EngineRequest(1, [1] * 8000, 200),
            "sim: prompt (8000) + max_new_tokens (200) = 8200 exceeds max_seq_len (8192)",
        ),
        (EngineRequest(1, [1, -2, 3], 5), "sim: prompt token out of range 0..4294967295"),
        (EngineRequest(1, [1, 2**32], 5), "sim: prompt token out of range 0..4294967295"),
    ],
)
def test_a_bad_request_fails_alone(
    small: Manifest, clock: VirtualClock, collect: Collect, bad: EngineRequest, message: str
) -> None:
    engine = SimEngine(small, clock=clock)
    good = request(2)
    engine.submit([bad, good])
    outputs = collect(engine, 2)
    assert outputs[0] == EngineOutput(1, [], FinishReason.ERROR, message)
    assert_expected(outputs[1], good)


def test_a_duplicate_id_fails_and_the_original_runs_on(
    small: Manifest, clock: VirtualClock, collect: Collect
) -> None:
    engine = SimEngine(small, clock=clock)
    original = request(1, max_new=30)
    engine.submit([original, request(1, max_new=5)])
    engine.submit([request(1, max_new=5)])
    outputs = collect(engine, 3)
    message = "sim: duplicate request_id 1: the engine already holds it"
    assert outputs[:2] == [EngineOutput(1, [], FinishReason.ERROR, message)] * 2
    assert_expected(outputs[2], original)


def test_a_request_larger_than_the_kv_cache_fails(small: Manifest, clock: VirtualClock) -> None:
    engine = SimEngine(
        dataclasses.replace(small, kv_cache_tokens=100, max_seq_len=100), clock=clock
    )
    engine.submit([EngineRequest(1, [1] * 90, 10)])
    [output] = engine.poll(timeout_s=1.0)
    assert output.error == "sim: needs 4 KV blocks, the cache has 3"


def test_prefix_cache_skips_cached_blocks(
    small: Manifest, clock: VirtualClock, collect: Collect
) -> None:
    engine = SimEngine(small, clock=clock)
    system = list(range(1000, 1064))  # two full blocks shared by both prompts
    first = EngineRequest(1, [*system, *range(40)], 4)
    second = EngineRequest(2, [*system, *range(100, 140)], 4)
    engine.submit([first])
    assert_expected(collect(engine, 1)[0], first)
    before = engine.stats()
    assert (before.prefix_hit_blocks, before.prefix_miss_blocks) == (0, 3)
    engine.submit([second])
    assert_expected(collect(engine, 1)[0], second)
    after = engine.stats()
    assert (after.prefix_hit_blocks, after.prefix_miss_blocks) == (2, 4)
    # 104 prompt tokens, 64 of them cached: 40 prompt tokens + 3 decode tokens computed.
    assert after.computed_tokens - before.computed_tokens == 40 + 3
    assert after.busy_s - before.busy_s < before.busy_s


def test_a_fully_cached_prompt_still_computes_its_last_token(
    small: Manifest, clock: VirtualClock, collect: Collect
) -> None:
    engine = SimEngine(small, clock=clock)
    req = EngineRequest(1, list(range(96)), 1)
    engine.submit([req])
    collect(engine, 1)
    before = engine.stats()
    engine.submit([dataclasses.replace(req, request_id=2)])
    assert collect(engine, 1)[0].tokens == expected_output(req.prompt, 1, None)[0]
    after = engine.stats()
    assert after.prefix_hit_blocks - before.prefix_hit_blocks == 3
    assert after.computed_tokens - before.computed_tokens == 1


def test_wall_clock_mode_really_spends_the_iteration_time(
    small: Manifest, collect: Collect
) -> None:
    engine = SimEngine(small)  # WallClock
    req = request(1, 100, 5)
    engine.submit([req])
    started = time.monotonic()
    assert_expected(collect(engine, 1)[0], req)
    busy_s = engine.stats().busy_s
    assert busy_s > 0.005
    assert time.monotonic() - started >= busy_s


def test_stats_is_a_snapshot(small: Manifest, clock: VirtualClock) -> None:
    engine = SimEngine(small, clock=clock)
    snapshot = engine.stats()
    snapshot.generated_tokens = 99
    snapshot.extra["num_waiting"] = 5.0
    assert engine.stats().generated_tokens == 0
    assert engine.stats().extra["num_waiting"] == 0.0
    assert isinstance(snapshot, EngineStats)


def test_close_is_idempotent_and_final(small: Manifest, clock: VirtualClock) -> None:
    engine = SimEngine(small, clock=clock)
    engine.submit([request(1)])
    engine.close()
    engine.close()
    with pytest.raises(EngineFatalError, match="closed"):
        engine.poll(timeout_s=0.0)
    with pytest.raises(EngineFatalError, match="closed"):
        engine.submit([request(2)])
    engine.cancel([1])
    assert engine.stats().extra["num_waiting"] >= 0
    assert engine.capacity == small.capacity()


def call(engine: SimEngine, method: str) -> None:
    if method == "capacity":
        _ = engine.capacity
    elif method == "submit":
        engine.submit([request(1)])
    elif method == "poll":
        engine.poll(timeout_s=0.0)
    elif method == "cancel":
        engine.cancel([1])
    else:
        getattr(engine, method)()


@pytest.mark.parametrize("method", ["capacity", "submit", "poll", "cancel", "stats", "close"])
def test_a_foreign_thread_is_refused(small: Manifest, clock: VirtualClock, method: str) -> None:
    engine = SimEngine(small, clock=clock)
    engine.stats()  # this thread now owns the engine
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            call(engine, method)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert isinstance(errors[0], WrongThreadError)
    call(engine, method)  # the owner still may


@pytest.mark.parametrize(
    ("field", "value"), [("device", "NVIDIA A100-SXM4-80GB"), ("model", "llama-9")]
)
def test_engine_refuses_what_it_cannot_simulate(small: Manifest, field: str, value: str) -> None:
    with pytest.raises(ManifestError) as info:
        SimEngine(dataclasses.replace(small, **{field: value}))  # type: ignore[arg-type]
    assert info.value.field == field
    assert str(info.value).startswith(f"manifest: field '{field}': {value!r} is not a ")


def test_unknown_batching_mode_is_refused(small: Manifest) -> None:
    with pytest.raises(ValueError, match="batching"):
        SimEngine(small, batching="continuous")
