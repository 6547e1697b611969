"""The LLM API backend against a stand-in for TensorRT-LLM (no GPU here).

The stand-in (tests/unit/engines/fake_tensorrt_llm.py) copies the 1.2
behaviours each test is about; each test fails on the backend as it was
before the correction it names.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engines.contract import EngineRequest, FinishReason
from engines.manifest import MANIFEST_DIR, Manifest, load_manifest
from engines.trtllm.backend import Finished
from engines.trtllm.mapping import trtllm_output

from . import fake_tensorrt_llm
from .fake_tensorrt_llm import FakeLlm

WAIT_S = 10.0  # an upper bound only: wait() returns as soon as a request finishes


@pytest.fixture
def manifest() -> Manifest:
    return load_manifest(MANIFEST_DIR / "trtllm-llama-3.1-8b-fp8-h200.json")


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch, manifest: Manifest, tmp_path: Path) -> Iterator[Any]:
    root, llmapi = fake_tensorrt_llm.module()
    monkeypatch.setitem(sys.modules, "tensorrt_llm", root)
    monkeypatch.setitem(sys.modules, "tensorrt_llm.llmapi", llmapi)
    from engines.trtllm.llm_api import LlmApiBackend

    built = LlmApiBackend(tmp_path, manifest)
    yield built
    built.close()


def llm_of(backend: Any) -> FakeLlm:
    llm: FakeLlm = backend._llm
    return llm


def wait_for(backend: Any, num: int) -> list[Finished]:
    finished: list[Finished] = []
    while len(finished) < num:
        more = backend.wait(WAIT_S)
        assert more, f"{len(finished)} of {num} requests came back"
        finished += more
    return finished


def test_a_request_finished_between_polls_is_not_lost(backend: Any) -> None:
    """One loop runs forever: completions that arrive while nobody polls still land."""
    llm = llm_of(backend)
    backend.start(EngineRequest(1, [5, 6], 3))
    backend.start(EngineRequest(2, [7], 2))
    first, second = llm.results
    # the engine thread is not in wait(): a loop stopped between polls drops this
    assert llm.finish(first, [1, 2, 3])
    assert llm.finish(second, [4, 5])
    finished = {done.request_id: done for done in wait_for(backend, 2)}
    assert finished[1].tokens == [1, 2, 3] and finished[2].tokens == [4, 5]
    assert finished[1].finish_reason == "length"
    assert llm.num_lost_wakeups == 0


def test_stats_are_read_with_the_async_form(backend: Any) -> None:
    llm = llm_of(backend)
    backend.start(EngineRequest(1, [5], 1))
    llm.finish(llm.results[0], [9])
    wait_for(backend, 1)
    llm.push_stats({"iter": 3, "iterLatencyMS": 2.0, "kvCacheStats": {"reusedBlocks": 4}})
    # the sync form would raise here (a None item under the loop's queues)
    with pytest.raises(TypeError):
        llm.get_stats(timeout=0.001)
    llm.push_stats({"iter": 4, "iterLatencyMS": 1.0, "kvCacheStats": {"reusedBlocks": 6}})
    stats = backend.iteration_stats()
    assert [item["iter"] for item in stats] == [4]


def test_chunked_prefill_is_on_and_refusals_are_one_requests_error(
    backend: Any, manifest: Manifest
) -> None:
    llm = llm_of(backend)
    assert llm.kwargs["enable_chunked_prefill"] is True
    assert llm.kwargs["max_num_tokens"] == manifest.max_num_tokens
    long_prompt = [1] * (manifest.max_num_tokens + 1)
    backend.start(EngineRequest(1, long_prompt, 1))  # accepted: prefilled in chunks
    assert len(llm.results) == 1
    # without chunked prefill the same prompt is refused at once: that request's error
    llm.kwargs["enable_chunked_prefill"] = False
    backend.start(EngineRequest(2, long_prompt, 1))
    llm.is_shutting_down = True
    backend.start(EngineRequest(3, [1], 1))
    errors = {done.request_id: done.error for done in wait_for(backend, 2)}
    assert (errors[2] or "").startswith("ValueError: prompt length")
    assert errors[3] == "RuntimeError: LLM is shutting down"
    llm.is_shutting_down = False
    llm.finish(llm.results[0], [8])
    assert [done.tokens for done in wait_for(backend, 1)] == [[8]]  # the first still served


def test_abort_ends_a_request_cancelled(backend: Any) -> None:
    request = EngineRequest(1, [5], 4, end_id=9)
    backend.start(request)
    backend.abort(1)
    (done,) = wait_for(backend, 1)
    assert (done.is_cancelled, done.finish_reason) == (True, "cancelled")
    assert trtllm_output(request, done).finish_reason is FinishReason.CANCELLED


def test_close_shuts_the_llm_down_and_stops_the_loop(
    monkeypatch: pytest.MonkeyPatch, manifest: Manifest, tmp_path: Path
) -> None:
    root, llmapi = fake_tensorrt_llm.module()
    monkeypatch.setitem(sys.modules, "tensorrt_llm", root)
    monkeypatch.setitem(sys.modules, "tensorrt_llm.llmapi", llmapi)
    from engines.trtllm.llm_api import LlmApiBackend

    backend = LlmApiBackend(tmp_path, manifest)
    backend.start(EngineRequest(1, [5], 4))
    backend.close()
    assert llm_of(backend).is_shutting_down
    assert llm_of(backend).results[0].is_aborted
    assert not backend._thread.is_alive()
