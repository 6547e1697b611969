"""TrtllmEngine: the engine contract over one of the two TensorRT-LLM paths.

The contract's bookkeeping is here (validation, held ids, outputs, stats);
a :class:`Backend` only starts, waits on and aborts requests. Stats: token
counts are ours (what we submitted and got back); ``busy_s``, ``num_steps``
and the prefix-cache blocks come from TensorRT-LLM's iteration stats
(:func:`engines.trtllm.mapping.fold_iteration_stats`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import replace

from engines.clock import Clock, WallClock
from engines.contract import (
    Capacity,
    EngineFatalError,
    EngineOutput,
    EngineRequest,
    EngineStats,
    FinishReason,
    ThreadOwner,
)
from engines.manifest import Manifest
from engines.sim.sequence import request_problem
from engines.trtllm.artifact import (
    ArtifactKind,
    artifact_kind,
    check_checkpoint,
    check_device,
    check_engine_dir,
    model_dir,
    read_config,
)
from engines.trtllm.backend import Backend, Finished
from engines.trtllm.mapping import (
    IterationTotals,
    apply_totals,
    finished_output,
    fold_iteration_stats,
)

STATS_EVERY_S = 0.5  # how often poll() drains TensorRT-LLM's iteration stats


class TrtllmEngine:
    """TensorRT-LLM on the one GPU this worker sees."""

    def __init__(self, manifest: Manifest, *, clock: Clock | None = None) -> None:
        path = model_dir(manifest)
        config = read_config(path)
        kind = artifact_kind(config)
        if kind is ArtifactKind.ENGINE_DIR:
            check_engine_dir(manifest, config, sorted(os.listdir(path)))
        else:
            check_checkpoint(manifest, config)
        check_device(manifest.device, _gpu_names())
        self._backend: Backend
        if kind is ArtifactKind.ENGINE_DIR:
            from engines.trtllm.executor import ExecutorBackend

            self._backend = ExecutorBackend(path, manifest)
        else:
            from engines.trtllm.llm_api import LlmApiBackend

            self._backend = LlmApiBackend(path, manifest)
        self.kind = kind
        self._owner = ThreadOwner()
        self._capacity = manifest.capacity()
        self._clock: Clock = clock if clock is not None else WallClock()
        self._stats = EngineStats()
        self._totals = IterationTotals()
        self._requests: dict[int, EngineRequest] = {}  # started, not finished
        self._ready: list[EngineOutput] = []
        self._stats_at_s = self._clock.now_s()
        self._is_closed = False

    @property
    def capacity(self) -> Capacity:
        self._owner.check()
        return self._capacity

    def submit(self, requests: Sequence[EngineRequest]) -> None:
        """Start requests in TensorRT-LLM; bad ones come back as ERROR."""
        self._owner.check()
        self._check_open()
        for request in requests:
            problem = request_problem(request, self._capacity)
            if request.request_id in self._requests:
                problem = f"duplicate request_id {request.request_id}: the engine already holds it"
            if problem is not None:
                self._ready.append(
                    EngineOutput(request.request_id, [], FinishReason.ERROR, f"trtllm: {problem}")
                )
                continue
            self._backend.start(request)
            self._requests[request.request_id] = request
            self._stats.prompt_tokens += len(request.prompt)

    def poll(self, timeout_s: float) -> list[EngineOutput]:
        """Outputs finished since the last poll; waits up to ``timeout_s`` for one."""
        self._owner.check()
        self._check_open()
        if not self._ready and self._requests:
            try:
                finished = self._backend.wait(timeout_s)
            except Exception as exc:
                raise EngineFatalError(f"trtllm: {type(exc).__name__}: {exc}") from exc
            for done in finished:
                self._finish(done)
        if self._clock.now_s() - self._stats_at_s >= STATS_EVERY_S:
            self._drain_stats()
        outputs, self._ready = self._ready, []
        return outputs

    def cancel(self, request_ids: Iterable[int]) -> None:
        """Abort in TensorRT-LLM; the request comes back CANCELLED when it says so."""
        self._owner.check()
        for request_id in request_ids:
            if request_id in self._requests:
                self._backend.abort(request_id)

    def stats(self) -> EngineStats:
        """A snapshot; ``extra`` has num_running (ours) and num_active (TensorRT-LLM's)."""
        self._owner.check()
        extra = {
            "num_running": float(len(self._requests)),
            "num_active": float(self._totals.num_active_requests),
        }
        return replace(self._stats, extra=extra)

    def close(self) -> None:
        """Shut TensorRT-LLM down. Idempotent."""
        self._owner.check()
        if self._is_closed:
            return
        self._is_closed = True
        self._requests.clear()
        self._ready.clear()
        self._backend.close()

    def _finish(self, done: Finished) -> None:
        request = self._requests.pop(done.request_id, None)
        if request is None:
            return  # not ours (or already reported)
        if done.error is not None:
            output = EngineOutput(done.request_id, [], FinishReason.ERROR, f"trtllm: {done.error}")
        else:
            output = finished_output(request, done.tokens, is_cancelled=done.is_cancelled)
        self._stats.generated_tokens += len(output.tokens)
        self._stats.computed_tokens += len(request.prompt) + len(output.tokens)
        self._ready.append(output)

    def _drain_stats(self) -> None:
        self._stats_at_s = self._clock.now_s()
        fold_iteration_stats(self._totals, self._backend.iteration_stats())
        apply_totals(self._stats, self._totals)

    def _check_open(self) -> None:
        if self._is_closed:
            raise EngineFatalError("trtllm: engine is closed")


def _gpu_names() -> list[str]:
    import torch  # TensorRT-LLM depends on torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
