"""One vLLM engine for the whole session, owned by a thread of its own.

An engine refuses calls from any thread but the one that first used it, and
the in-process workers of these tests each run their own engine thread. So
the session's engine lives on a host thread; :class:`EngineHost.call` runs a
function there, and :class:`EngineProxy` is an engine-shaped view whose
calls all run there. Starting a vLLM engine costs 40 to 80 s on two cores:
the tests share one instead of starting one each.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from engines.contract import Capacity, EngineOutput, EngineRequest, EngineStats
from engines.vllm.engine import VllmEngine

T = TypeVar("T")
CALL_TIMEOUT_S = 120.0  # one engine call: a poll is bounded by its own timeout


class EngineHost:
    """The session's :class:`VllmEngine`, on one thread."""

    def __init__(self, build: Callable[[], VllmEngine]) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vllm-host")
        self.engine: VllmEngine = self._executor.submit(build).result()

    def call(self, fn: Callable[[VllmEngine], T]) -> T:
        return self._executor.submit(fn, self.engine).result(timeout=CALL_TIMEOUT_S)

    def close(self) -> None:
        self.call(lambda engine: engine.close())
        self._executor.shutdown()


class EngineProxy:
    """An :class:`~engines.contract.Engine` whose calls run on the host's thread.

    ``close`` does not close the shared engine: it aborts what this proxy
    left in it, so the next test finds it empty. ``gate`` (set: open) holds
    ``poll`` back while cleared: in-process vLLM makes progress only inside
    ``step()``, so a held poll freezes every request where it is.
    ``cancelled`` records, for each cancel call, the ids and vLLM's own count
    of unfinished requests right after it.
    """

    def __init__(self, host: EngineHost) -> None:
        self._host = host
        self._held: set[int] = set()
        self.gate = threading.Event()
        self.gate.set()
        self.submitted: list[EngineRequest] = []
        self.cancelled: list[tuple[list[int], int]] = []

    @property
    def capacity(self) -> Capacity:
        return self._host.call(lambda engine: engine.capacity)

    def submit(self, requests: Sequence[EngineRequest]) -> None:
        batch = list(requests)
        self.submitted.extend(batch)
        self._held.update(r.request_id for r in batch)
        self._host.call(lambda engine: engine.submit(batch))

    def poll(self, timeout_s: float) -> list[EngineOutput]:
        if not self.gate.wait(timeout_s):
            return []
        outputs = self._host.call(lambda engine: engine.poll(timeout_s))
        self._held.difference_update(o.request_id for o in outputs)
        return outputs

    def cancel(self, request_ids: Iterable[int]) -> None:
        ids = list(request_ids)

        def cancel(engine: VllmEngine) -> int:
            engine.cancel(ids)
            return int(engine.stats().extra["num_unfinished"])

        self.cancelled.append((ids, self._host.call(cancel)))

    def stats(self) -> EngineStats:
        return self._host.call(lambda engine: engine.stats())

    def close(self) -> None:
        self.gate.set()
        leftover = sorted(self._held)

        def drain(engine: VllmEngine) -> Any:
            engine.cancel(leftover)
            return engine.poll(0.0)

        self._host.call(drain)
        self._held.clear()
