"""A stand-in for the ``tensorrt_llm`` package, for tests on machines without a GPU.

TensorRT-LLM cannot run here (it needs an NVIDIA GPU), so the LLM API
backend's use of it is tested against this fake instead. It copies the
behaviours of TensorRT-LLM 1.2's source that the backend depends on, and
nothing more:

- ``LLM(**kwargs)`` rejects unknown keyword arguments; ``enable_chunked_prefill``
  defaults to False, and then ``generate_async`` raises ``ValueError`` at once
  for a prompt longer than ``max_num_tokens``; during shutdown it raises
  ``RuntimeError("LLM is shutting down")``.
- A result's queue is bound to the event loop running when ``generate_async``
  was called. The dispatch thread (here: the test, calling :meth:`FakeLlm.finish`)
  wakes the waiter only while that loop runs; otherwise the wake-up is lost
  (``EventLoopShutdownError``, only logged since PR #8260) and ``aresult()``
  never returns.
- Once results have been delivered through a loop, the synchronous
  ``get_stats`` yields None items, which its ``json.loads`` rejects;
  ``get_stats_async`` reads them.
- ``result.abort()`` ends the request with finish_reason "cancelled".
"""

from __future__ import annotations

import asyncio
import json
import threading
import types
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

LLM_ARGUMENTS = frozenset(
    {
        "model",
        "skip_tokenizer_init",
        "max_batch_size",
        "max_num_tokens",
        "max_seq_len",
        "enable_chunked_prefill",
        "kv_cache_config",
        "scheduler_config",
        "enable_iter_perf_stats",
        "dtype",
    }
)


@dataclass
class FakeOutput:
    token_ids: list[int]
    finish_reason: str | None = None
    cached_tokens: int | None = None


@dataclass
class FakeResult:
    prompt: list[int]
    params: dict[str, Any]
    loop: asyncio.AbstractEventLoop | None
    outputs: list[FakeOutput] = field(default_factory=lambda: [FakeOutput([])])
    done: asyncio.Future[None] | None = None
    is_aborted: bool = False

    async def aresult(self) -> FakeResult:
        assert self.done is not None, "aresult() awaited outside the loop of generate_async"
        await self.done
        return self

    def abort(self) -> None:
        self.is_aborted = True
        if self.done is not None and not self.done.done():
            self.outputs = [FakeOutput([], "cancelled")]
            self.done.set_result(None)


class FakeLlm:
    def __init__(self, **kwargs: Any) -> None:
        unknown = set(kwargs) - LLM_ARGUMENTS
        if unknown:
            raise TypeError(f"LLM got unexpected keyword arguments {sorted(unknown)}")
        self.kwargs = kwargs
        self.results: list[FakeResult] = []
        self.num_lost_wakeups = 0
        self.is_shutting_down = False
        self.has_loop_queues = False
        self._stats: list[str] = []
        self._lock = threading.Lock()

    def generate_async(self, prompt: list[int], sampling_params: Any) -> FakeResult:
        if self.is_shutting_down:
            raise RuntimeError("LLM is shutting down")
        chunked = self.kwargs.get("enable_chunked_prefill", False)
        if not chunked and len(prompt) > self.kwargs["max_num_tokens"]:
            raise ValueError(
                f"prompt length {len(prompt)} exceeds max_num_tokens "
                f"{self.kwargs['max_num_tokens']} without chunked prefill"
            )
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        result = FakeResult(list(prompt), dict(sampling_params), loop)
        if loop is not None:
            result.done = loop.create_future()
            self.has_loop_queues = True
        with self._lock:
            self.results.append(result)
        return result

    def finish(self, result: FakeResult, tokens: list[int], reason: str = "length") -> bool:
        """Complete a request from the dispatch thread; False when the wake-up was lost."""
        loop = result.loop
        if loop is None or not loop.is_running():
            self.num_lost_wakeups += 1
            return False

        def deliver() -> None:
            result.outputs = [FakeOutput(tokens, reason, cached_tokens=0)]
            if result.done is not None and not result.done.done():
                result.done.set_result(None)

        loop.call_soon_threadsafe(deliver)
        return True

    def push_stats(self, item: dict[str, Any]) -> None:
        self._stats.append(json.dumps(item))

    def get_stats(self, timeout: float) -> list[Any]:
        items: list[Any] = [None] if self.has_loop_queues else []
        items += self._stats
        self._stats = []
        return [json.loads(item) for item in items]  # None raises, as in 1.2

    async def _aiter_stats(self) -> AsyncIterator[str]:
        items, self._stats = self._stats, []
        for item in items:
            yield item

    def get_stats_async(self, timeout: float) -> AsyncIterator[str]:
        return self._aiter_stats()

    def shutdown(self) -> None:
        self.is_shutting_down = True


def module() -> tuple[types.ModuleType, types.ModuleType]:
    """``tensorrt_llm`` and ``tensorrt_llm.llmapi`` as fakes."""
    root = types.ModuleType("tensorrt_llm")
    llmapi = types.ModuleType("tensorrt_llm.llmapi")
    root.LLM = FakeLlm  # type: ignore[attr-defined]
    root.SamplingParams = dict  # type: ignore[attr-defined]
    root.llmapi = llmapi  # type: ignore[attr-defined]
    llmapi.KvCacheConfig = dict  # type: ignore[attr-defined]
    llmapi.SchedulerConfig = dict  # type: ignore[attr-defined]
    llmapi.CapacitySchedulerPolicy = types.SimpleNamespace(  # type: ignore[attr-defined]
        GUARANTEED_NO_EVICT="GUARANTEED_NO_EVICT"
    )
    return root, llmapi
