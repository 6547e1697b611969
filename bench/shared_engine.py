"""One engine for several contenders in one process, on a thread of its own.

An engine refuses calls from any thread but the one that first used it; the
fabric worker drives its engine from its own engine thread. So the engine
lives on a host thread, :meth:`EngineHost.call` runs a function there, and
:class:`EngineProxy` is an engine-shaped view whose calls all run there.
One vLLM start (25 to 80 s on two cores) then serves every contender.

The proxy costs a thread hop per engine call, which a worker in production does
not pay: its engine thread owns the engine. :class:`HostedEngineThread` runs a
worker's engine loop on the host thread instead, so the fabric steps the engine
the way it would its own, on the thread vLLM set up (its torch threads, its CPU
binding) like every other contender.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from engines.contract import Capacity, Engine, EngineOutput, EngineRequest, EngineStats
from fabric_worker.worker.engine_thread import EngineThread

T = TypeVar("T")
CALL_TIMEOUT_S = 300.0


class EngineHost:
    """``build()``'s engine, created and always called on one thread."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-host")
        self.engine = self._executor.submit(build).result()

    def call(self, fn: Callable[[Any], T]) -> T:
        return self._executor.submit(fn, self.engine).result(timeout=CALL_TIMEOUT_S)

    def close(self) -> None:
        self.call(lambda engine: engine.close())
        self._executor.shutdown()


class HostedEngineThread(EngineThread):
    """A worker's engine thread whose loop runs on ``host``'s thread, driving
    ``wrap(host's engine)``; the loop's final close leaves the engine open."""

    def __init__(
        self, host: Any, wrap: Callable[[Any], Engine], on_output: Callable[[], None]
    ) -> None:
        super().__init__(lambda: wrap(KeptOpen(host.engine)), on_output=on_output)
        self._host = host
        self._future: Future[None] | None = None

    def start(self) -> None:
        self._future = self._host._executor.submit(self._run)

    def join(self, timeout_s: float) -> bool:
        if self._future is not None:
            wait([self._future], timeout_s)
        return not self.is_alive

    @property
    def is_alive(self) -> bool:
        return self._future is not None and not self._future.done()


class KeptOpen:
    """``engine`` itself, except that ``close`` leaves it open for the next contender."""

    def __init__(self, engine: Any) -> None:
        self.submit = engine.submit
        self.poll = engine.poll
        self.cancel = engine.cancel
        self.stats = engine.stats
        self.capacity = engine.capacity

    def close(self) -> None:
        pass


class EngineProxy:
    """The host's engine as an :class:`~engines.contract.Engine`; ``close`` leaves it open."""

    def __init__(self, host: EngineHost) -> None:
        self._host = host

    @property
    def capacity(self) -> Capacity:
        return self._host.call(lambda engine: engine.capacity)

    def submit(self, requests: Sequence[EngineRequest]) -> None:
        batch = list(requests)
        self._host.call(lambda engine: engine.submit(batch))

    def poll(self, timeout_s: float) -> list[EngineOutput]:
        return self._host.call(lambda engine: engine.poll(timeout_s))

    def cancel(self, request_ids: Iterable[int]) -> None:
        ids = list(request_ids)
        self._host.call(lambda engine: engine.cancel(ids))

    def stats(self) -> EngineStats:
        return self._host.call(lambda engine: engine.stats())

    def close(self) -> None:
        pass


def run_direct(engine: Any, requests: Sequence[EngineRequest]) -> dict[int, EngineOutput]:
    """Every request submitted at once, in the given order, stepped until all finish
    (what ``LLM.generate`` does with a list of prompts). Call on the host thread."""
    engine.submit(list(requests))
    done: dict[int, EngineOutput] = {}
    while len(done) < len(requests):
        for output in engine.poll(1.0):
            done[output.request_id] = output
    return done
