"""The LLM API path (PyTorch backend): ``generate_async`` on an event loop of its own.

Why a loop that runs forever, on a thread of its own (TensorRT-LLM 1.2's
source, tensorrt_llm/executor/result.py and executor/proxy.py): a request's
result is delivered through a ``_SyncQueue`` bound to the event loop that
was running when ``generate_async`` was called, and ``notify_many`` wakes its
waiter only while that loop runs. Otherwise it raises
``EventLoopShutdownError``, which the dispatch thread only logs since PR
#8260: a loop that is stopped between uses loses completions, and that
request's ``aresult()`` never returns. So:

- one loop is started at construction and runs until :meth:`close`;
- ``generate_async``, ``aresult`` and ``abort`` run on it, handed over with
  ``run_coroutine_threadsafe`` / ``call_soon_threadsafe``;
- a finished request goes on a thread-safe queue that :meth:`wait` (on the
  engine thread) blocks on.

``generate_async`` raises at once for some requests (``ValueError``: a prompt
longer than ``max_num_tokens`` while chunked prefill is off; ``RuntimeError``
while shutting down): that request alone comes back as an error. Chunked
prefill is on, so the first no longer happens for a prompt the manifest
allows.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from engines.contract import EngineRequest
from engines.manifest import Manifest
from engines.trtllm.backend import Finished
from engines.trtllm.mapping import parse_iteration_stats, sampling_kwargs

STATS_TIMEOUT_S = 0.001  # get_stats_async waits this long on an empty stats queue
CALL_TIMEOUT_S = 30.0  # bound on every hand-over to the loop (TensorRT-LLM #12735: hangs)
FREE_GPU_MEMORY_FRACTION = 0.9  # docs/references.md's KvCacheConfig example


def llm_kwargs(path: Path, manifest: Manifest, llmapi: Any) -> dict[str, Any]:
    """``tensorrt_llm.LLM(**kwargs)``: the manifest's nine values and nothing unknown.

    ``LLM`` rejects unknown keyword arguments (1.2). ``llmapi`` is the
    ``tensorrt_llm.llmapi`` module (its config classes).
    """
    kwargs: dict[str, Any] = {
        "model": str(path),
        "skip_tokenizer_init": True,
        "max_batch_size": manifest.max_batch_size,
        "max_num_tokens": manifest.max_num_tokens,
        "max_seq_len": manifest.max_seq_len,
        # Off by default in 1.2; without it a prompt longer than max_num_tokens
        # is refused by generate_async although the manifest allows it.
        "enable_chunked_prefill": True,
        "kv_cache_config": llmapi.KvCacheConfig(
            enable_block_reuse=True,
            free_gpu_memory_fraction=FREE_GPU_MEMORY_FRACTION,
            max_tokens=manifest.kv_cache_tokens,
            tokens_per_block=manifest.kv_block_tokens,
        ),
        "scheduler_config": llmapi.SchedulerConfig(
            capacity_scheduler_policy=llmapi.CapacitySchedulerPolicy.GUARANTEED_NO_EVICT
        ),
        "enable_iter_perf_stats": True,
        # An FP8 run is a pre-quantized checkpoint whose config carries the
        # quantization; the LLM API reads it from there.
        "dtype": "auto" if manifest.dtype == "fp8" else manifest.dtype,
    }
    return kwargs


class LlmApiBackend:
    """``tensorrt_llm.LLM`` over a Hugging Face checkpoint, token-id prompts."""

    def __init__(self, path: Path, manifest: Manifest) -> None:
        import tensorrt_llm
        from tensorrt_llm import llmapi

        self._sampling_params = tensorrt_llm.SamplingParams
        self._llm = tensorrt_llm.LLM(**llm_kwargs(path, manifest, llmapi))
        self._done: queue.Queue[Finished] = queue.Queue()
        self._results: dict[int, Any] = {}  # request_id -> result, touched on the loop only
        self._aborted: set[int] = set()  # loop only
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="trtllm-event-loop", daemon=True
        )
        self._thread.start()

    def start(self, request: EngineRequest) -> None:
        self._call(self._start(request))

    def wait(self, timeout_s: float) -> list[Finished]:
        try:
            finished = [self._done.get(timeout=max(timeout_s, 0.0))]
        except queue.Empty:
            return []
        while True:
            try:
                finished.append(self._done.get_nowait())
            except queue.Empty:
                return finished

    def abort(self, request_id: int) -> None:
        self._loop.call_soon_threadsafe(self._abort, request_id)

    def iteration_stats(self) -> list[dict[str, Any]]:
        items: list[Any] = self._call(self._stats())
        return parse_iteration_stats(items)

    def close(self) -> None:
        try:
            self._call(self._cancel_all())
            self._llm.shutdown()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=CALL_TIMEOUT_S)
            if not self._thread.is_alive():
                self._loop.close()

    # --- on the loop ----------------------------------------------------------------

    async def _start(self, request: EngineRequest) -> None:
        request_id = request.request_id
        params = self._sampling_params(**sampling_kwargs(request))
        try:
            result = self._llm.generate_async(list(request.prompt), sampling_params=params)
        except (ValueError, RuntimeError) as exc:
            self._done.put(Finished(request_id, [], error=f"{type(exc).__name__}: {exc}"))
            return
        self._results[request_id] = result
        asyncio.get_running_loop().create_task(self._await(request_id, result))

    async def _await(self, request_id: int, result: Any) -> None:
        try:
            await result.aresult()
        except Exception as exc:  # a per-request error (RequestError in 1.2)
            finished = Finished(request_id, [], error=f"{type(exc).__name__}: {exc}")
        else:
            output = result.outputs[0]
            finished = Finished(
                request_id,
                list(output.token_ids),
                is_cancelled=request_id in self._aborted,
                finish_reason=output.finish_reason,
                cached_tokens=getattr(output, "cached_tokens", None),
            )
        finally:
            self._results.pop(request_id, None)
            self._aborted.discard(request_id)
        self._done.put(finished)

    def _abort(self, request_id: int) -> None:
        # result.abort(): the request ends with finish_reason "cancelled".
        result = self._results.get(request_id)
        if result is not None and request_id not in self._aborted:
            self._aborted.add(request_id)
            result.abort()

    async def _stats(self) -> list[Any]:
        # get_stats (sync) under a running loop can yield None items, which its
        # json.loads rejects; the async form reads the loop-aware queue.
        return [item async for item in self._llm.get_stats_async(timeout=STATS_TIMEOUT_S)]

    async def _cancel_all(self) -> None:
        for result in self._results.values():
            result.abort()

    def _call(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=CALL_TIMEOUT_S)
