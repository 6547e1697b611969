"""One worker per GPU: claim under a token budget, feed the engine, complete once.

The worker's lifecycle lives here: signals, the watchdog, starting the engine
on its own thread (:mod:`fabric_worker.worker.engine_thread`), then serving
(:mod:`fabric_worker.worker.loops`) until stopped, drained (burst) or failed.
The decisions are the pure core's (:mod:`fabric_worker.core.dispatcher`).
See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from engines.contract import Capacity, Engine, EngineStats
from engines.manifest import ManifestError
from fabric_worker.broker.streams import Broker
from fabric_worker.core.counts import Counts
from fabric_worker.core.dispatcher import Dispatcher
from fabric_worker.core.lifecycle import WorkerEvent, WorkerState, worker_transition
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.worker.engine_thread import EngineThread
from fabric_worker.worker.housekeeping import Housekeeper
from fabric_worker.worker.loops import Serving
from fabric_worker.worker.options import ExitCode, WorkerOptions


class Worker:
    """Serves one namespace with one engine until stopped, drained (burst) or failed."""

    def __init__(
        self,
        broker: Broker,
        config: FleetConfig,
        engine_factory: Callable[[], Engine],
        options: WorkerOptions,
        *,
        log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    ) -> None:
        self.broker = broker
        self.config = config
        self.options = options
        self.log = log
        self.state = WorkerState.STARTING
        self.engine_thread = self.make_engine_thread(engine_factory)
        self.stop_requested = asyncio.Event()
        self.exit_code = ExitCode.OK
        self.serving: Serving | None = None  # once the engine is up
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def counts(self) -> Counts:
        """Job outcomes so far (all zero before serving)."""
        return self.serving.dispatcher.counts if self.serving else Counts()

    @property
    def engine_stats(self) -> EngineStats:
        """The engine's cumulative counters, as of its thread's last step."""
        return self.engine_thread.stats

    # --- lifecycle -------------------------------------------------------------

    def step(self, event: WorkerEvent) -> None:
        self.state = worker_transition(self.state, event)

    def request_stop(self) -> None:
        """Graceful stop (SIGTERM): claim nothing more, finish or hand back the rest."""
        if self.state is WorkerState.RUNNING:
            self.log(f"worker {self.options.consumer}: stop requested, draining")
        if not self.state.is_terminal:
            self.step(WorkerEvent.STOP_REQUESTED)
        self._stop()

    def fail(self, code: ExitCode, why: str) -> None:
        if self.state.is_terminal:
            return
        self.log(f"worker {self.options.consumer}: fatal: {why}")
        self.step(WorkerEvent.FATAL_ERROR)
        self.exit_code = code
        self._arm_watchdog(code)
        self._stop()

    def _stop(self) -> None:
        self.stop_requested.set()
        if self.serving is not None:
            self.serving.dispatcher.stop_admitting()

    def _dump_tasks(self) -> None:
        for task in asyncio.all_tasks():
            frames: list[str] = []
            coro: Any = task.get_coro()
            while coro is not None and (frame := getattr(coro, "cr_frame", None)) is not None:
                frames.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
                coro = getattr(coro, "cr_await", None)
            self.log(f"task {task.get_name()}: {' -> '.join(frames)}")

    def _arm_watchdog(self, code: ExitCode) -> None:
        # Teardown must not outlive the deadline, whatever hangs (the engine's
        # close, a Redis call): the process exits with the same code regardless.
        timer = threading.Timer(self.options.teardown_deadline_s, os._exit, args=(int(code),))
        timer.daemon = True
        timer.start()

    def _outputs_arrived(self) -> None:
        # Called from the engine thread: wake the drain on the event loop's thread.
        if self.serving is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self.serving.outputs_ready.set)

    async def run(self) -> ExitCode:
        """Start the engine, serve, tear down. Returns the process exit code."""
        self._loop = asyncio.get_running_loop()
        # Before the engine starts (which can take minutes): a stop while starting
        # drains nothing and exits 0, as the lifecycle says, instead of dying of
        # the signal's default action.
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                self._loop.add_signal_handler(sig, self.request_stop)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            # SIGUSR1: where is every task waiting? (for a worker that looks stuck)
            self._loop.add_signal_handler(signal.SIGUSR1, self._dump_tasks)
        self.engine_thread.start()
        await asyncio.to_thread(self.engine_thread.ready.wait)
        error, capacity = self.engine_thread.error, self.engine_thread.capacity
        if error is not None or capacity is None:
            self.step(WorkerEvent.FATAL_ERROR)
            code = ExitCode.CONFIG if isinstance(error, ManifestError) else ExitCode.ENGINE
            self.log(f"error: {error or 'engine started without a capacity'}")
            return code
        dispatcher = self.make_dispatcher(capacity)
        self.log(f"worker {self.options.consumer}: {dispatcher.describe()}")
        if self.stop_requested.is_set():
            dispatcher.stop_admitting()
        if self.state is WorkerState.STARTING:
            self.step(WorkerEvent.STARTED)
        self.serving = Serving(self, dispatcher)
        config = self.config
        keeper = Housekeeper(
            self.broker, config.lanes, config.retention_s, self.stop_requested, log=self.log
        )
        housekeeping = asyncio.create_task(keeper.run(), name="housekeeping")
        tune_gc()
        try:
            return await self.serving.run()
        finally:
            housekeeping.cancel()
            await asyncio.gather(housekeeping, return_exceptions=True)

    def make_engine_thread(self, engine_factory: Callable[[], Engine]) -> EngineThread:
        """The thread that will own the engine (a seam for benchmarks)."""
        return EngineThread(engine_factory, on_output=self._outputs_arrived)

    def make_dispatcher(self, capacity: Capacity) -> Dispatcher:
        """The core's decisions for this engine's capacity (a seam for benchmarks)."""
        return Dispatcher(
            self.config, capacity, self.options.dispatch_policy, consumer=self.options.consumer
        )


# The cyclic collector's thresholds while serving (Python's defaults: 700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the hot path once start-up is done.

    A job's objects are short-lived and acyclic: reference counting frees them.
    With the default thresholds the collector ran every 700 allocations, over
    every young object of a read of thousands of jobs, and every few of those
    passes over what start-up left (modules, the engine): a few microseconds per
    job (docs/benchmarks.md section 9). Start-up's objects are frozen out of its
    sight, and it runs rarely; what cycles there are still get collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
