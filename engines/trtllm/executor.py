"""The legacy path: ``tensorrt_llm.bindings.executor.Executor`` over a built engine directory.

TensorRT-LLM 1.2.x still ships ``bindings.executor.Executor``; it was removed
later, on main (PR #16369, with ``trtllm-build`` and the TensorRT engine
backend: docs/references.md), so this path runs only where the installed
release still has it: :func:`executor_module` detects it and the engine refuses the
manifest's ``model`` otherwise. The calls are the ones docs/references.md lists
(``Executor(engine_dir, ModelType.DECODER_ONLY, ExecutorConfig(...))``,
``Request(...)``, ``enqueue_requests``, ``await_responses(timeout=timedelta)``,
``cancel_request``, ``get_latest_iteration_stats``, ``shutdown``). The
Executor's own threads run the batch; ``await_responses`` is a blocking,
thread-safe wait, so no asyncio is involved.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from engines.contract import EngineRequest
from engines.manifest import Manifest, ManifestError
from engines.trtllm.backend import Finished
from engines.trtllm.mapping import executor_request_kwargs, strip_prompt

FREE_GPU_MEMORY_FRACTION = 0.9
ITER_STATS_MAX_ITERATIONS = 1000  # docs/references.md's ExecutorConfig example


def executor_module() -> Any | None:
    """``tensorrt_llm.bindings.executor`` when it still has ``Executor``, else None."""
    try:
        from tensorrt_llm.bindings import executor as tle
    except ImportError:
        return None
    return tle if hasattr(tle, "Executor") else None


class ExecutorBackend:
    """One Executor, in-flight batching, block reuse on."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        tle = executor_module()
        if tle is None:
            raise ManifestError(
                None,
                "model",
                f"{manifest.model!r} is a built engine directory, but this TensorRT-LLM has no "
                "bindings.executor.Executor (removed after 1.2.x); point model at a "
                "Hugging Face checkpoint to use the LLM API instead",
            )
        self._tle = tle
        # Assumed: KvCacheConfig/SchedulerConfig take the same names here as in the
        # LLM API (docs/references.md lists them there); ExecutorConfig's are listed.
        config = tle.ExecutorConfig(
            max_beam_width=1,
            scheduler_config=tle.SchedulerConfig(tle.CapacitySchedulerPolicy.GUARANTEED_NO_EVICT),
            kv_cache_config=tle.KvCacheConfig(
                enable_block_reuse=True,
                max_tokens=manifest.kv_cache_tokens,
                free_gpu_memory_fraction=FREE_GPU_MEMORY_FRACTION,
            ),
            batching_type=tle.BatchingType.INFLIGHT,
            max_batch_size=manifest.max_batch_size,
            max_num_tokens=manifest.max_num_tokens,
            iter_stats_max_iterations=ITER_STATS_MAX_ITERATIONS,
        )
        self._executor = tle.Executor(path, tle.ModelType.DECODER_ONLY, config)
        self._requests: dict[int, EngineRequest] = {}  # executor id -> request
        self._ids: dict[int, int] = {}  # our request_id -> executor id
        self._cancelled: set[int] = set()
        # Assumed: Request takes output_config=OutputConfig(exclude_input_from_output=...)
        # (the LLM API mirrors OutputConfig's fields in SamplingParams, 2025 source).
        # Without it the output echoes the prompt, which is then cut off and checked.
        self._is_echoing = not hasattr(tle, "OutputConfig")

    def start(self, request: EngineRequest) -> None:
        kwargs = executor_request_kwargs(request)
        if not self._is_echoing:
            kwargs["output_config"] = self._tle.OutputConfig(exclude_input_from_output=True)
        (executor_id,) = self._executor.enqueue_requests([self._tle.Request(**kwargs)])
        self._requests[executor_id] = request
        self._ids[request.request_id] = executor_id

    def wait(self, timeout_s: float) -> list[Finished]:
        responses = self._executor.await_responses(timeout=timedelta(seconds=max(timeout_s, 0.0)))
        finished: list[Finished] = []
        for response in responses:
            # Assumed: Response.request_id is the id enqueue_requests returned.
            request = self._requests.get(response.request_id)
            if request is None:
                continue
            if response.has_error():
                finished.append(self._done(request, [], error=str(response.error_msg)))
                continue
            result = response.result
            if not result.is_final:
                continue  # not streaming: only the final response carries tokens
            tokens = list(result.output_token_ids[0])
            if self._is_echoing:
                stripped = strip_prompt(tokens, request.prompt)
                if stripped is None:
                    finished.append(self._done(request, [], error="output does not follow prompt"))
                    continue
                tokens = stripped
            finished.append(self._done(request, tokens))
        return finished

    def abort(self, request_id: int) -> None:
        executor_id = self._ids.get(request_id)
        if executor_id is not None and request_id not in self._cancelled:
            self._cancelled.add(request_id)
            self._executor.cancel_request(executor_id)

    def iteration_stats(self) -> list[dict[str, Any]]:
        stats: list[dict[str, Any]] = []
        for item in self._executor.get_latest_iteration_stats():
            kv = getattr(item, "kv_cache_stats", None)
            stats.append(
                {
                    "iter_latency_ms": getattr(item, "iter_latency_ms", None),
                    "num_active_requests": getattr(item, "num_active_requests", None),
                    "kv_cache_stats": {
                        "reused_blocks": getattr(kv, "reused_blocks", None),
                        "missed_blocks": getattr(kv, "missed_blocks", None),
                    },
                }
            )
        return stats

    def close(self) -> None:
        self._executor.shutdown()
        self._requests.clear()
        self._ids.clear()

    def _done(
        self, request: EngineRequest, tokens: list[int], error: str | None = None
    ) -> Finished:
        rid = request.request_id
        executor_id = self._ids.pop(rid, None)
        if executor_id is not None:
            self._requests.pop(executor_id, None)
        is_cancelled = rid in self._cancelled
        self._cancelled.discard(rid)
        return Finished(rid, tokens, is_cancelled=is_cancelled, error=error)
