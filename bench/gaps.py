"""Where an engine's idle time goes, seen from the engine thread.

:class:`GapEngine` wraps the worker's engine and times, on the wall clock, each call the
engine thread makes. With the engine's own ``busy_s`` that splits the thread's time into:

- busy: iterations, at the time the cost model gives them;
- in poll, not busy: inside ``poll()`` but not iterating; split into the simulator's
  own Python (this thread's CPU time there) and the rest: the sleep overrunning its
  deadline and waiting for the GIL after it;
- between polls, holding work: the engine thread's loop around the engine (hand-off,
  stats snapshot, queue puts) and GIL waits there;
- holding nothing: the engine is empty; the worker has not handed it anything (yet).

Benchmarks only: this wraps the engine, it changes nothing in the worker.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from engines.contract import Capacity, Engine, EngineOutput, EngineRequest, EngineStats


class GapEngine:
    """Delegates to ``engine``; adds up wall time by what the engine thread was doing."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._num_held = 0
        self._since = time.monotonic()  # start of the current stretch outside poll()
        self.in_poll_s = 0.0
        self.in_poll_cpu_s = 0.0  # this thread's CPU inside poll(): the simulator's own Python
        self.outside_held_s = 0.0
        self.outside_empty_s = 0.0

    @property
    def capacity(self) -> Capacity:
        return self._engine.capacity

    def _close_stretch(self, now: float) -> None:
        if self._num_held:
            self.outside_held_s += now - self._since
        else:
            self.outside_empty_s += now - self._since
        self._since = now

    def submit(self, requests: Sequence[EngineRequest]) -> None:
        self._close_stretch(time.monotonic())  # the stretch so far was empty or held
        self._engine.submit(requests)
        self._num_held += len(requests)

    def poll(self, timeout_s: float) -> list[EngineOutput]:
        entered = time.monotonic()
        self._close_stretch(entered)
        cpu = time.thread_time()
        outputs = self._engine.poll(timeout_s)
        self.in_poll_cpu_s += time.thread_time() - cpu
        left = time.monotonic()
        self.in_poll_s += left - entered
        self._num_held -= len(outputs)
        self._since = left
        return outputs

    def cancel(self, request_ids: Iterable[int]) -> None:
        self._engine.cancel(request_ids)

    def stats(self) -> EngineStats:
        return self._engine.stats()

    def close(self) -> None:
        self._engine.close()

    def report(self) -> dict[str, Any]:
        self._close_stretch(time.monotonic())
        return {
            "in_poll_s": self.in_poll_s,
            "in_poll_cpu_s": self.in_poll_cpu_s,
            "outside_held_s": self.outside_held_s,
            "outside_empty_s": self.outside_empty_s,
        }
