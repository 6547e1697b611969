"""The engine contract (engines/contract.py), one suite for every engine.

``sim``, ``null`` and ``hf`` run everywhere (``hf`` needs the hf extra:
torch and transformers). ``trtllm`` and ``vllm`` run only where their
package and an NVIDIA GPU are present, on a small local checkpoint that
``fabric engine make-model`` builds; elsewhere they are skipped with the
reason. Nothing here knows an engine's outputs: the checks are the
contract's (each request back once, finish reasons, end_id, cancel, errors,
stats, thread ownership, close).
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engines.clock import VirtualClock
from engines.contract import (
    Engine,
    EngineFatalError,
    EngineOutput,
    EngineRequest,
    FinishReason,
    WrongThreadError,
)
from engines.manifest import MANIFEST_DIR, Manifest, load_manifest, parse_manifest
from engines.registry import create_engine

from .conftest import Collect

ENGINES = ["sim", "null", "hf", "trtllm", "vllm"]
MAX_NEW = 24  # long enough to cancel mid-run, short enough for a CPU


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _gpu_name() -> str | None:
    if not _has("torch"):
        return None
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def _manifest(backend: str, model: str, dtype: str, device: str) -> Manifest:
    return parse_manifest(
        {
            "backend": backend,
            "model": model,
            "dtype": dtype,
            "max_batch_size": 16,
            "max_num_tokens": 2048,
            "max_seq_len": 1024,
            "kv_cache_tokens": 32768,
            "kv_block_tokens": 32,
            "device": device,
        },
        f"contract-{backend}",
    )


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Build each make-model size once per session, on first use."""
    built: dict[str, Path] = {}

    def get(size: str) -> Path:
        if size not in built:
            from engines.hf.checkpoint import build_checkpoint

            out = tmp_path_factory.mktemp(f"model-{size}")
            build_checkpoint(out, size=size, seed=0, vocab_size=32_000)
            built[size] = out
        return built[size]

    return get


@pytest.fixture(params=ENGINES)
def make(
    request: pytest.FixtureRequest, checkpoints: Callable[[str], Path]
) -> Callable[[], Engine]:
    """A factory for a fresh engine of the parametrised kind (skips with a reason)."""
    name: str = request.param
    if name == "sim":
        manifest = load_manifest(MANIFEST_DIR / "sim-small.json")
        return lambda: create_engine(manifest, clock=VirtualClock())
    if name == "null":
        manifest = load_manifest(MANIFEST_DIR / "null.json")
        return lambda: create_engine(manifest)
    if name == "hf":
        if not (_has("torch") and _has("transformers")):
            pytest.skip("hf engine needs the hf extra (torch, transformers)")
        manifest = _manifest("hf", str(checkpoints("tiny")), "float32", "cpu")
        return lambda: create_engine(manifest)
    package = {"trtllm": "tensorrt_llm", "vllm": "vllm"}[name]
    if not _has(package):
        pytest.skip(f"{name} engine needs the {package} package, which is not installed")
    gpu = _gpu_name()
    if gpu is None:
        pytest.skip(f"{name} engine needs an NVIDIA GPU; none is visible")
    manifest = _manifest(name, str(checkpoints("small")), "bfloat16", gpu)
    return lambda: create_engine(manifest)


@pytest.fixture
def engine(make: Callable[[], Engine]) -> Iterator[Engine]:
    built = make()
    yield built
    built.close()


def prompt(seed: int, length: int = 12) -> list[int]:
    return [(seed * 7919 + 31 * j) % 30_000 + 1 for j in range(length)]


def by_id(outputs: list[EngineOutput]) -> dict[int, EngineOutput]:
    ids = [o.request_id for o in outputs]
    assert len(ids) == len(set(ids)), f"a request came back twice: {sorted(ids)}"
    return {o.request_id: o for o in outputs}


def poll_until_back(engine: Engine, outputs: list[EngineOutput], request_id: int) -> None:
    """Poll into ``outputs`` until ``request_id`` is among them."""
    for _ in range(100_000):
        if request_id in by_id(outputs):
            return
        outputs.extend(engine.poll(timeout_s=10.0))
    pytest.fail(f"request {request_id} never came back")


def test_capacity_is_the_manifests(engine: Engine) -> None:
    capacity = engine.capacity
    assert capacity.max_batch_size >= 1
    assert capacity.max_seq_len <= capacity.kv_cache_tokens


def test_every_request_comes_back_once_within_its_budget(engine: Engine, collect: Collect) -> None:
    requests = [EngineRequest(i, prompt(i, 3 + 5 * i), 1 + 3 * i) for i in range(6)]
    engine.submit(requests)
    outputs = by_id(collect(engine, len(requests)))
    assert sorted(outputs) == [r.request_id for r in requests]
    for request in requests:
        output = outputs[request.request_id]
        assert output.finish_reason is FinishReason.LENGTH, output
        assert len(output.tokens) == request.max_new_tokens
        assert output.error is None
    assert engine.poll(timeout_s=0.0) == []


def test_greedy_outputs_repeat_and_end_id_stops_after_itself(
    engine: Engine, collect: Collect
) -> None:
    first = EngineRequest(1, prompt(5), MAX_NEW)
    engine.submit([first])
    (reference,) = collect(engine, 1)
    end_id = reference.tokens[3]
    cut = reference.tokens.index(end_id) + 1
    engine.submit(
        [EngineRequest(2, prompt(5), MAX_NEW), EngineRequest(3, prompt(5), MAX_NEW, end_id)]
    )
    outputs = by_id(collect(engine, 2))
    assert outputs[2].tokens == reference.tokens  # greedy: the same job, the same tokens
    assert outputs[3].finish_reason is FinishReason.STOP
    assert outputs[3].tokens == reference.tokens[:cut]
    assert outputs[3].tokens[-1] == end_id


def test_idle_poll_returns_at_once(engine: Engine) -> None:
    started = time.monotonic()
    assert engine.poll(timeout_s=5.0) == []
    assert time.monotonic() - started < 1.0


def test_cancel_before_the_engine_runs_it(engine: Engine, collect: Collect) -> None:
    engine.submit([EngineRequest(1, prompt(1), MAX_NEW), EngineRequest(2, prompt(2), 3)])
    engine.cancel([1, 999])  # 999 is unknown: ignored
    outputs = by_id(collect(engine, 2))
    assert outputs[1].finish_reason is FinishReason.CANCELLED
    assert len(outputs[1].tokens) < MAX_NEW
    assert outputs[2].finish_reason is FinishReason.LENGTH
    engine.cancel([1, 2])  # both finished and returned: ignored
    assert engine.poll(timeout_s=0.0) == []


def test_cancel_while_running(engine: Engine) -> None:
    long = EngineRequest(1, prompt(1), 200)
    engine.submit([long, EngineRequest(2, prompt(2), 1)])
    outputs: list[EngineOutput] = []
    poll_until_back(engine, outputs, 2)
    if 1 not in by_id(outputs):
        engine.cancel([1])
    poll_until_back(engine, outputs, 1)
    cancelled = by_id(outputs)[1]
    if cancelled.finish_reason is FinishReason.CANCELLED:
        assert len(cancelled.tokens) < long.max_new_tokens
    else:  # the engine may finish it before the cancel lands (the contract allows it)
        assert cancelled.finish_reason is FinishReason.LENGTH
        assert len(cancelled.tokens) == long.max_new_tokens


def test_bad_requests_fail_alone(engine: Engine, collect: Collect) -> None:
    engine.submit(
        [
            EngineRequest(1, [], 3),  # empty prompt
            EngineRequest(2, prompt(2), 3),
            EngineRequest(2, prompt(3), 3),  # duplicate id
            EngineRequest(3, prompt(3), engine.capacity.max_seq_len),  # too long
        ]
    )
    outputs = collect(engine, 4)
    errors = [o for o in outputs if o.finish_reason is FinishReason.ERROR]
    assert sorted(o.request_id for o in errors) == [1, 2, 3]
    assert all(o.error for o in errors)
    assert [o.finish_reason for o in outputs if o.request_id == 2].count(FinishReason.LENGTH) == 1


def test_stats_are_cumulative_snapshots(engine: Engine, collect: Collect) -> None:
    before = engine.stats()
    requests = [EngineRequest(i, prompt(i, 8), 5) for i in range(4)]
    engine.submit(requests)
    outputs = collect(engine, 4)
    after = engine.stats()
    assert after.generated_tokens - before.generated_tokens >= sum(len(o.tokens) for o in outputs)
    # a token slot is paid for when the token is fed in: every prompt token (or its
    # cached KV), and each generated token but the last of its sequence
    assert after.computed_tokens - before.computed_tokens >= sum(len(o.tokens) - 1 for o in outputs)
    assert after.padded_tokens <= after.computed_tokens
    assert after.busy_s >= before.busy_s >= 0.0
    after.generated_tokens += 10**6  # a snapshot: the engine's counters do not move
    assert engine.stats().generated_tokens == after.generated_tokens - 10**6


CALLS: dict[str, Callable[[Engine], Any]] = {
    "capacity": lambda e: e.capacity,
    "submit": lambda e: e.submit([]),
    "poll": lambda e: e.poll(timeout_s=0.0),
    "cancel": lambda e: e.cancel([]),
    "stats": lambda e: e.stats(),
    "close": lambda e: e.close(),
}


def test_calls_from_a_foreign_thread_are_refused(engine: Engine) -> None:
    engine.stats()  # the test's thread owns it now
    errors: dict[str, BaseException | None] = {}

    def other() -> None:
        for name, call in CALLS.items():
            try:
                call(engine)
                errors[name] = None
            except BaseException as exc:
                errors[name] = exc

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert {name: type(exc) for name, exc in errors.items()} == dict.fromkeys(
        CALLS, WrongThreadError
    )
    engine.submit([EngineRequest(1, prompt(1), 1)])  # still usable by its owner


def test_close_is_idempotent_and_final(make: Callable[[], Engine]) -> None:
    engine = make()
    engine.submit([EngineRequest(1, prompt(1), MAX_NEW)])
    engine.close()
    engine.close()
    with pytest.raises(EngineFatalError):
        engine.submit([EngineRequest(2, prompt(2), 1)])
    with pytest.raises(EngineFatalError):
        engine.poll(timeout_s=0.0)
