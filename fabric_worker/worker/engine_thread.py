"""The one thread that owns the engine.

It creates the engine (so the engine binds to it), feeds it what admission
hands over, steps it, and passes finished outputs to the drain. Nothing else
calls the engine. Both hand-offs are bounded: the inbox by the engine's batch
size (level 5), the outbox by a count of outputs (level 7); a full outbox
blocks this thread, which is the signal that result writing is behind. Both
move batches: a submit's requests, a poll's outputs (:mod:`.outbox`).

Stats are snapshotted at most every ``stats_interval_s`` while the engine is
busy, and once more whenever it runs dry: a snapshot after every poll costs
an adapter-dependent call per engine step (vLLM steps take milliseconds on a
CPU), while the readers (telemetry, progress lines) look a few times a second.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from engines.contract import Capacity, Engine, EngineOutput, EngineRequest, EngineStats
from fabric_worker.worker.outbox import Outbox

POLL_S = 0.002  # an engine with work returns as soon as anything finishes; this bounds a poll
IDLE_WAIT_S = 0.05  # an idle engine thread sleeps on its inbox, woken by submit/cancel/stop
STATS_INTERVAL_S = 0.5  # readers sample a few times a second; fresher snapshots are wasted


class EngineThread:
    """Runs ``factory()`` and then the engine loop on a dedicated thread."""

    def __init__(
        self,
        factory: Callable[[], Engine],
        *,
        max_outbox: int = 4096,
        on_output: Callable[[], None] = lambda: None,
        name: str = "engine",
        stats_interval_s: float = STATS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if stats_interval_s < 0:
            raise ValueError(f"stats_interval_s must be >= 0, got {stats_interval_s!r}")
        self._factory = factory
        self._stats_interval_s = stats_interval_s
        self._now_s = clock
        self._stats_due_s: float | None = None  # None: snapshot at the next poll
        self._on_output = on_output
        self._cond = threading.Condition()
        self._inbox: deque[EngineRequest] = deque()
        self._cancels: list[int] = []
        self._stopping = False
        self.num_held = 0  # requests inside the engine (written by this thread only)
        self.outbox = Outbox(max_outbox)
        self.ready = threading.Event()
        self.capacity: Capacity | None = None
        self.error: BaseException | None = None  # creation or fatal step error
        self.stats = EngineStats()  # a snapshot, replaced (never mutated) by this thread
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # --- called from the asyncio side ---------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def inbox_depth(self) -> int:
        return len(self._inbox)

    def submit(self, requests: Sequence[EngineRequest]) -> None:
        with self._cond:
            self._inbox.extend(requests)
            self._cond.notify()

    def cancel(self, request_ids: Sequence[int]) -> None:
        with self._cond:
            self._cancels.extend(request_ids)
            self._cond.notify()

    def stop(self) -> None:
        """Ask the loop to cancel everything it holds, emit it, close and exit."""
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def join(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    # --- the thread -----------------------------------------------------------

    def _run(self) -> None:
        try:
            engine = self._factory()
            self.capacity = engine.capacity
        except BaseException as exc:  # reported to the worker, which exits 2 or 3
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        try:
            self._loop(engine)
        except BaseException as exc:
            self.error = exc
            self._on_output()  # wake the worker so it sees the error
        finally:
            engine.close()

    def _loop(self, engine: Engine) -> None:
        held: set[int] = set()  # request ids inside the engine
        cancelled_all = False
        while True:
            with self._cond:
                if not (self._inbox or self._cancels or self._stopping or held):
                    self._cond.wait(IDLE_WAIT_S)
                requests = list(self._inbox)
                self._inbox.clear()
                cancels, self._cancels = self._cancels, []
                stopping = self._stopping
            if requests:
                engine.submit(requests)
                held.update(r.request_id for r in requests)
            if stopping and not cancelled_all:
                # Everything held comes back as CANCELLED; the worker decides
                # what to hand back and what to leave for reclaim.
                engine.cancel(sorted(held))
                cancelled_all = True
            elif cancels:
                engine.cancel(cancels)
            if held:
                outputs = engine.poll(POLL_S)
                if outputs:
                    held.difference_update(o.request_id for o in outputs)
                    self._emit(outputs)
                self._snapshot(engine, is_dry=not held)
            self.num_held = len(held)
            if stopping and not held:
                return

    def _snapshot(self, engine: Engine, *, is_dry: bool) -> None:
        """Replace ``stats`` when the interval has passed or the engine ran dry."""
        now_s = self._now_s()
        if is_dry or self._stats_due_s is None or now_s >= self._stats_due_s:
            self.stats = engine.stats()
            self._stats_due_s = now_s + self._stats_interval_s

    def _emit(self, outputs: list[EngineOutput]) -> None:
        # One put for the whole poll; if the worker stops while the outbox is
        # full, the batch is dropped and reclaim redoes those jobs.
        if self.outbox.put(outputs, is_stopping=lambda: self._stopping):
            self._on_output()
