"""Random workloads, polls and cancels: the invariants hold in both batching modes."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.clock import VirtualClock
from engines.contract import EngineOutput, EngineRequest, FinishReason
from engines.manifest import MANIFEST_DIR, load_manifest
from engines.sim import SimEngine, expected_output

# Tight limits so batch size, token budget and KV all bind.
TIGHT = dataclasses.replace(
    load_manifest(MANIFEST_DIR / "sim-small.json"),
    max_batch_size=8,
    max_num_tokens=256,
    kv_cache_tokens=4096,
    max_seq_len=512,
)
PREFIXES: list[list[int]] = [[], list(range(500, 564)), list(range(900, 964))]


@st.composite
def jobs(draw: st.DrawFn) -> list[EngineRequest]:
    requests = []
    for request_id in range(draw(st.integers(1, 24))):
        prefix = draw(st.sampled_from(PREFIXES))
        suffix = draw(st.lists(st.integers(0, 31999), min_size=1, max_size=200))
        max_new = draw(st.integers(1, 60))
        prompt = [*prefix, *suffix]
        end_id = None
        if draw(st.booleans()):
            tokens, _ = expected_output(prompt, max_new, None)
            end_id = draw(st.sampled_from(tokens))
        requests.append(EngineRequest(request_id, prompt, max_new, end_id))
    return requests


actions = st.lists(
    st.one_of(
        st.tuples(st.just("poll"), st.sampled_from([0.0, 0.002, 0.02, 0.2])),
        st.tuples(st.just("cancel"), st.integers(0, 30)),
    ),
    max_size=12,
)


@pytest.mark.parametrize("batching", ["inflight", "static"])
@settings(max_examples=60, deadline=None)
@given(requests=jobs(), script=actions)
def test_invariants(
    batching: str, requests: list[EngineRequest], script: list[tuple[str, float]]
) -> None:
    clock = VirtualClock()
    engine = SimEngine(TIGHT, clock=clock, batching=batching)
    engine.submit(requests)
    outputs: list[EngineOutput] = []
    num_kv_blocks = TIGHT.kv_cache_tokens // TIGHT.kv_block_tokens
    for action, arg in script:
        if action == "poll":
            outputs.extend(engine.poll(timeout_s=arg))
        else:
            engine.cancel([int(arg)])
        gauges = engine.stats().extra
        assert gauges["kv_used_blocks"] <= num_kv_blocks
        assert gauges["num_running"] <= TIGHT.max_batch_size
    for _ in range(10_000):
        if len(outputs) == len(requests):
            break
        outputs.extend(engine.poll(timeout_s=1.0))
    assert sorted(o.request_id for o in outputs) == [r.request_id for r in requests]
    for output in outputs:
        req = requests[output.request_id]
        tokens, reason = expected_output(req.prompt, req.max_new_tokens, req.end_id)
        if output.finish_reason is FinishReason.CANCELLED:
            assert output.tokens == tokens[: len(output.tokens)]
            assert len(output.tokens) < len(tokens)
        else:
            assert (output.tokens, output.finish_reason) == (tokens, reason)
    stats = engine.stats()
    assert stats.generated_tokens == sum(len(o.tokens) for o in outputs)
    assert stats.busy_s == pytest.approx(clock.now_s())
    assert stats.extra["kv_used_blocks"] == stats.extra["num_running"] == 0
    assert engine.poll(timeout_s=1.0) == []
