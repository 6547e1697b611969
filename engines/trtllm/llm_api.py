"""The LLM API path (PyTorch backend): ``generate_async`` on a private event loop.

Why a private loop: the engine thread is not an asyncio thread, and
TensorRT-LLM decides at ``generate_async`` time how a result is delivered.
Its ``GenerationResult`` makes an asyncio-aware queue when called on a thread
with a running loop and a plain ``queue.Queue`` otherwise (read in
tensorrt_llm/executor/result.py, 2025 revision: ``has_event_loop()``). So:

- this backend owns one event loop, created on the engine thread and only
  ever run there, inside :meth:`start` and :meth:`wait`;
- ``generate_async`` is called from a coroutine on that loop, so every
  awaitable it creates belongs to it; TensorRT-LLM's own background thread
  only feeds the thread-safe side of the result's queue;
- :meth:`wait` runs the loop until one request task finishes or the
  timeout passes (``asyncio.wait(..., FIRST_COMPLETED)``); between polls the
  loop is stopped, and completions that arrive meanwhile are queued on it
  and seen at the next run.

Nothing here blocks TensorRT-LLM: it schedules and runs requests on its own
threads whether or not our loop is running.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from engines.contract import EngineRequest
from engines.manifest import Manifest
from engines.trtllm.backend import Finished
from engines.trtllm.mapping import parse_iteration_stats, sampling_kwargs

STATS_TIMEOUT_S = 0.001  # get_stats waits this long for an empty queue (2025 source: queue.get)
FREE_GPU_MEMORY_FRACTION = 0.9  # docs/references.md's KvCacheConfig example


class LlmApiBackend:
    """``tensorrt_llm.LLM`` over a Hugging Face checkpoint, token-id prompts."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        # docs/references.md: LLM(model=...), KvCacheConfig(enable_block_reuse,
        # free_gpu_memory_fraction, max_tokens, tokens_per_block),
        # SchedulerConfig(capacity_scheduler_policy=GUARANTEED_NO_EVICT),
        # enable_iter_perf_stats for get_stats. Assumed from the LLM constructor
        # (tensorrt_llm/llmapi/llm.py, 2025): skip_tokenizer_init and dtype are
        # arguments, the rest go to LlmArgs (max_batch_size, max_num_tokens,
        # max_seq_len, kv_cache_config, scheduler_config, enable_iter_perf_stats);
        # the import path tensorrt_llm.llmapi for the two configs is assumed.
        import tensorrt_llm
        from tensorrt_llm.llmapi import (
            CapacitySchedulerPolicy,
            KvCacheConfig,
            SchedulerConfig,
        )

        self._sampling_params = tensorrt_llm.SamplingParams
        kwargs: dict[str, Any] = {
            "model": str(path),
            "skip_tokenizer_init": True,
            "max_batch_size": manifest.max_batch_size,
            "max_num_tokens": manifest.max_num_tokens,
            "max_seq_len": manifest.max_seq_len,
            "kv_cache_config": KvCacheConfig(
                enable_block_reuse=True,
                free_gpu_memory_fraction=FREE_GPU_MEMORY_FRACTION,
                max_tokens=manifest.kv_cache_tokens,
                tokens_per_block=manifest.kv_block_tokens,
            ),
            "scheduler_config": SchedulerConfig(
                capacity_scheduler_policy=CapacitySchedulerPolicy.GUARANTEED_NO_EVICT
            ),
            "enable_iter_perf_stats": True,
        }
        if manifest.dtype == "fp8":
            # Assumption: an FP8 run is a pre-quantized (e.g. ModelOpt) checkpoint,
            # whose config carries the quantization; the LLM API reads it from there.
            kwargs["dtype"] = "auto"
        else:
            kwargs["dtype"] = manifest.dtype
        self._llm = tensorrt_llm.LLM(**kwargs)
        self._loop = asyncio.new_event_loop()
        self._tasks: dict[asyncio.Task[Finished], int] = {}
        self._results: dict[int, Any] = {}  # request_id -> RequestOutput, for abort()
        self._aborted: set[int] = set()

    def start(self, request: EngineRequest) -> None:
        self._loop.run_until_complete(self._start(request))

    async def _start(self, request: EngineRequest) -> None:
        params = self._sampling_params(**sampling_kwargs(request))
        result = self._llm.generate_async(list(request.prompt), sampling_params=params)
        self._results[request.request_id] = result
        task = self._loop.create_task(self._await(request.request_id, result))
        self._tasks[task] = request.request_id

    async def _await(self, request_id: int, result: Any) -> Finished:
        try:
            await result.aresult()
        except Exception as exc:  # a per-request error (RequestError in the 2025 source)
            return Finished(request_id, [], error=f"{type(exc).__name__}: {exc}")
        output = result.outputs[0]
        is_cancelled = request_id in self._aborted or output.finish_reason == "cancelled"
        return Finished(request_id, list(output.token_ids), is_cancelled=is_cancelled)

    def wait(self, timeout_s: float) -> list[Finished]:
        if not self._tasks:
            return []
        done, _ = self._loop.run_until_complete(
            asyncio.wait(
                list(self._tasks), timeout=max(timeout_s, 0.0), return_when=asyncio.FIRST_COMPLETED
            )
        )
        finished: list[Finished] = []
        for task in done:
            request_id = self._tasks.pop(task)
            self._results.pop(request_id, None)
            self._aborted.discard(request_id)
            finished.append(task.result())
        return finished

    def abort(self, request_id: int) -> None:
        # GenerationResult.abort() (2025 source): the executor aborts the request and
        # its result completes with finish_reason 'cancelled'.
        result = self._results.get(request_id)
        if result is not None and request_id not in self._aborted:
            self._aborted.add(request_id)
            result.abort()

    def iteration_stats(self) -> list[dict[str, Any]]:
        return parse_iteration_stats(self._llm.get_stats(timeout=STATS_TIMEOUT_S))

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            self._loop.run_until_complete(asyncio.wait(list(self._tasks)))
        self._tasks.clear()
        self._llm.shutdown()
        self._loop.close()
