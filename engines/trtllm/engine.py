"""TrtllmEngine: the engine contract over one of the two TensorRT-LLM paths.

The contract's bookkeeping is here (validation, held ids, outputs, stats);
a :class:`Backend` only starts, waits on and aborts requests. Stats: token
counts are ours (what we submitted and got back); ``busy_s`` and
``num_steps`` come from TensorRT-LLM's iteration stats
(:func:`engines.trtllm.mapping.fold_iteration_stats`); prefix-cache blocks
from each request's own ``cached_tokens`` where its output has them, else
from the iteration stats' running totals.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import replace

from engines.base import EngineBase
from engines.checkpoint import (
    check_max_positions,
    check_visible_gpu,
    gpu_names,
    read_config,
)
from engines.clock import Clock
from engines.contract import EngineFatalError, EngineOutput, EngineRequest, EngineStats
from engines.manifest import Manifest
from engines.requests import prefix_blocks
from engines.trtllm.artifact import ArtifactKind, artifact_kind, check_engine_dir, model_dir
from engines.trtllm.backend import Backend, Finished
from engines.trtllm.mapping import (
    IterationTotals,
    apply_totals,
    fold_iteration_stats,
    trtllm_output,
)

STATS_EVERY_S = 0.5  # how often poll() drains TensorRT-LLM's iteration stats


class TrtllmEngine(EngineBase):
    """TensorRT-LLM on the one GPU this worker sees."""

    name = "trtllm"

    def __init__(self, manifest: Manifest, *, clock: Clock | None = None) -> None:
        path = model_dir(manifest)
        config = read_config(path)
        kind = artifact_kind(config)
        if kind is ArtifactKind.ENGINE_DIR:
            check_engine_dir(manifest, config, sorted(os.listdir(path)))
        else:
            check_max_positions(manifest, config)
            check_visible_gpu(manifest.device, gpu_names())
        self._backend: Backend
        if kind is ArtifactKind.ENGINE_DIR:
            from engines.trtllm.executor import ExecutorBackend

            self._backend = ExecutorBackend(path, manifest)
        else:
            from engines.trtllm.llm_api import LlmApiBackend

            self._backend = LlmApiBackend(path, manifest)
        super().__init__(manifest, clock=clock)
        self.kind = kind
        self._totals = IterationTotals()
        self._requests: dict[int, EngineRequest] = {}  # started, not finished
        self._stats_at_s = self._clock.now_s()

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
        return self._take_ready()

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

    # --- EngineBase -----------------------------------------------------------------

    def _holds(self, request_id: int) -> bool:
        return request_id in self._requests

    def _start(self, request: EngineRequest) -> None:
        self._backend.start(request)
        self._requests[request.request_id] = request
        self._stats.prompt_tokens += len(request.prompt)

    def _release(self) -> None:
        """Shut TensorRT-LLM down."""
        self._requests.clear()
        self._backend.close()

    def _finish(self, done: Finished) -> None:
        request = self._requests.pop(done.request_id, None)
        if request is None:
            return  # not ours (or already reported)
        output = trtllm_output(request, done)
        if done.cached_tokens is not None:
            self._totals.has_request_blocks = True
            hits, misses = prefix_blocks(
                len(request.prompt), done.cached_tokens, self._capacity.kv_block_tokens
            )
            self._stats.prefix_hit_blocks += hits
            self._stats.prefix_miss_blocks += misses
        self._stats.generated_tokens += len(output.tokens)
        self._stats.computed_tokens += len(request.prompt) + len(output.tokens)
        self._ready.append(output)

    def _drain_stats(self) -> None:
        self._stats_at_s = self._clock.now_s()
        fold_iteration_stats(self._totals, self._backend.iteration_stats())
        apply_totals(self._stats, self._totals)
