"""The null engine: everything finishes on the next poll, at no cost."""

from __future__ import annotations

import dataclasses
import threading
from array import array

import pytest

from engines.contract import (
    Engine,
    EngineFatalError,
    EngineOutput,
    EngineRequest,
    FinishReason,
    WrongThreadError,
)
from engines.manifest import MANIFEST_DIR, Manifest, ManifestError, load_manifest
from engines.null import NullEngine
from engines.sim import expected_output


@pytest.fixture
def null() -> Manifest:
    return load_manifest(MANIFEST_DIR / "null.json")


def test_everything_finishes_on_the_next_poll(null: Manifest) -> None:
    engine: Engine = NullEngine(null)  # mypy checks it meets the contract
    assert engine.poll(timeout_s=5.0) == []
    requests = [EngineRequest(i, [i, 2, 3], 10 + i) for i in range(5)]
    first_tokens = expected_output(requests[0].prompt, 10, None)[0]
    requests.append(EngineRequest(5, [0, 2, 3], 10, end_id=first_tokens[3]))
    engine.submit(requests)
    outputs = engine.poll(timeout_s=0.0)
    for req, output in zip(requests, outputs, strict=True):
        tokens, reason = expected_output(req.prompt, req.max_new_tokens, req.end_id)
        assert output == EngineOutput(req.request_id, tokens, reason)
    assert outputs[-1].finish_reason is FinishReason.STOP
    assert engine.poll(timeout_s=0.0) == []
    stats = engine.stats()
    assert stats.generated_tokens == sum(len(o.tokens) for o in outputs)
    assert stats.prompt_tokens == 18
    assert stats.busy_s == 0.0
    assert stats.num_steps == 1


def test_bad_requests_fail_like_in_sim(null: Manifest) -> None:
    engine = NullEngine(null)
    engine.submit([EngineRequest(1, [], 3), EngineRequest(2, [1], 3), EngineRequest(2, [1], 3)])
    outputs = engine.poll(timeout_s=0.0)
    assert [(o.request_id, o.finish_reason, o.error) for o in outputs] == [
        (1, FinishReason.ERROR, "null: empty prompt"),
        (2, FinishReason.ERROR, "null: duplicate request_id 2: the engine already holds it"),
        (2, FinishReason.LENGTH, None),
    ]


def test_cancel_before_poll(null: Manifest) -> None:
    engine = NullEngine(null)
    engine.submit([EngineRequest(1, [1], 3), EngineRequest(2, [2], 3)])
    engine.cancel([1, 99])
    outputs = engine.poll(timeout_s=0.0)
    assert [(o.request_id, o.finish_reason, o.tokens) for o in outputs] == [
        (1, FinishReason.CANCELLED, []),
        (2, FinishReason.LENGTH, expected_output([2], 3, None)[0]),
    ]


def test_device_must_be_cpu(null: Manifest) -> None:
    with pytest.raises(ManifestError) as info:
        NullEngine(dataclasses.replace(null, device="NVIDIA H200"))
    assert info.value.field == "device"


def test_foreign_thread_is_refused_and_close_is_final(null: Manifest) -> None:
    engine = NullEngine(null)
    engine.stats()
    errors: list[BaseException] = []

    def other() -> None:
        try:
            engine.poll(timeout_s=0.0)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert [type(e) for e in errors] == [WrongThreadError]
    engine.close()
    engine.close()
    with pytest.raises(EngineFatalError):
        engine.submit([EngineRequest(1, [1], 1)])


def test_out_of_range_tokens_fail_unless_the_prompt_is_uint32_by_type(null: Manifest) -> None:
    engine = NullEngine(null)
    engine.submit(
        [
            EngineRequest(1, [1, -1], 3),
            EngineRequest(2, [2**32], 3),
            EngineRequest(3, array("q", [5, -5]), 3),  # 64-bit signed: scanned
            EngineRequest(4, array("I", [0, 2**32 - 1]), 3),  # uint32: in range by type
        ]
    )
    outputs = {o.request_id: o for o in engine.poll(timeout_s=0.0)}
    out_of_range = "null: prompt token out of range 0..4294967295"
    assert [outputs[i].error for i in (1, 2, 3)] == [out_of_range] * 3
    assert outputs[4] == EngineOutput(4, *expected_output(array("I", [0, 2**32 - 1]), 3, None))
