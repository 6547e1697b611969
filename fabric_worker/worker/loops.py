"""The worker's async loops, each a thin shell around one core call.

Ingress (plan a read, read, accept), drain (finish, refill, complete, settle),
lease (renew, lose), reclaim (take over idle entries, adopt orphans), report
and heartbeat. Each hop is one synchronous :class:`Dispatcher` call and at
most one batched broker call; the broker never decides, the core never awaits.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from engines.contract import EngineOutput
from fabric_worker.broker.streams import Broker, BrokerLost
from fabric_worker.core.dispatcher import Dispatcher
from fabric_worker.core.lifecycle import WorkerEvent, WorkerState
from fabric_worker.telemetry.prometheus import serve as serve_metrics
from fabric_worker.telemetry.rates import RateWindow, progress_line, summary_line
from fabric_worker.telemetry.snapshot import Telemetry, WorkerSnapshot
from fabric_worker.wire.claims import Claimed
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.worker.engine_thread import EngineThread
from fabric_worker.worker.options import ExitCode, WorkerOptions
from fabric_worker.worker.teardown import drain_gracefully, last_heartbeat, tear_down

MAX_COMPLETION_BATCH = 500


class Host(Protocol):
    """What the loops need of the worker that runs them."""

    state: WorkerState
    broker: Broker
    config: FleetConfig
    options: WorkerOptions
    engine_thread: EngineThread
    stop_requested: asyncio.Event
    exit_code: ExitCode
    log: Callable[[str], None]

    def request_stop(self) -> None: ...
    def fail(self, code: ExitCode, why: str) -> None: ...
    def step(self, event: WorkerEvent) -> None: ...


class Serving:
    """A worker whose engine is up: its loops, its telemetry, its teardown."""

    def __init__(self, host: Host, dispatcher: Dispatcher) -> None:
        self.host = host
        self.dispatcher = dispatcher
        self.broker = host.broker
        self.engine = host.engine_thread
        self.options = host.options
        self.outputs_ready = asyncio.Event()
        self.room = asyncio.Event()
        self.telemetry = Telemetry()
        self.num_writing = 0
        self._progress = RateWindow()
        self._started_s = time.monotonic()

    @property
    def is_stopping(self) -> bool:
        return self.host.stop_requested.is_set()

    def levels(self) -> dict[str, int]:
        """Depth of each of the eight bounded levels (DESIGN section 5), as seen here."""
        d = self.dispatcher
        backlogs = d.reads.backlogs
        return {
            # Producers are held at the cap of each lane: the fullest one is closest.
            "1_submit_fullest_lane_tokens": max(backlogs.values(), default=0),
            "2_lane_backlog_tokens": sum(backlogs.values()),
            "3_ingress_read_entries": d.reads.last_read_count,
            "4_admission_queue_tokens": d.queue.queued_tokens,
            "5_engine_inbox_requests": self.engine.inbox_depth,
            "6_in_flight_tokens": d.budget.in_flight_tokens,
            "7_completion_queue_outputs": self.engine.outbox.qsize(),
            "8_result_writes_in_flight": self.num_writing,
        }

    def snapshot(self) -> WorkerSnapshot:
        d = self.dispatcher
        return WorkerSnapshot(
            consumer=self.options.consumer,
            state=self.host.state.value,
            counts=d.counts,
            engine=self.engine.stats,
            in_flight_tokens=d.budget.in_flight_tokens,
            queued_tokens=d.queue.queued_tokens,
            is_admission_open=d.budget.is_open,
            kv_cache_tokens=d.capacity.kv_cache_tokens,
            max_num_tokens=d.capacity.max_num_tokens,
            levels=self.levels(),
            replica_shortfalls=self.broker.num_replica_shortfalls,
        )

    async def run(self) -> ExitCode:
        if self.options.metrics_port is not None:
            serve_metrics(
                lambda: self.telemetry.metrics(self.snapshot()), self.options.metrics_port
            )
        tasks = [
            asyncio.create_task(self._guard(loop()), name=loop.__name__.strip("_"))
            for loop in (
                self._ingress,
                self._drain,
                self._lease,
                self._reclaim,
                self._report,
                self._heartbeat,
            )
        ]
        await self.host.stop_requested.wait()
        if self.host.exit_code is ExitCode.OK:
            await drain_gracefully(self, tasks)
        else:
            await tear_down(self, tasks)
        await last_heartbeat(self)
        wall_s = time.monotonic() - self._started_s
        counts, stats = self.dispatcher.counts, self.engine.stats
        self.host.log(summary_line(self.options.consumer, counts, stats, wall_s))
        return self.host.exit_code

    async def _guard(self, body: Coroutine[Any, Any, None]) -> None:
        try:
            await body
        except asyncio.CancelledError:
            raise
        except BrokerLost as exc:
            self.host.fail(ExitCode.BROKER, f"broker lost: {exc}")
        except Exception as exc:  # an invariant broke: fail fast, loudly
            self.host.fail(ExitCode.INVARIANT, f"{type(exc).__name__}: {exc}")
            self.host.log("".join(traceback.format_exception(exc)).rstrip())

    # --- ingress: read what the budget can take -----------------------------------

    async def _ingress(self) -> None:
        reads = self.dispatcher.reads
        lanes = self.host.config.lanes
        while not self.is_stopping:
            if not reads.has_room() or self.broker.link.out_of_memory:
                await self._wait_for_room()
                continue
            plan = reads.plan(time.monotonic(), await self.broker.backlogs(lanes))
            if plan is None:
                await self._wait_for_room()
                continue
            block_ms = self.options.block_ms if plan.is_blocking else None
            claimed = await self.broker.read(plan.lanes, plan.count, block_ms)
            reads.done(plan, len(claimed), lanes_claimed={c.lane for c in claimed})
            if not claimed and plan.is_blocking and await self._burst_is_done():
                self.host.log(f"worker {self.options.consumer}: burst done, every lane is empty")
                self.host.request_stop()
                return
            if claimed:
                await self.accept(claimed)

    async def _burst_is_done(self) -> bool:
        if not self.options.burst or not self.dispatcher.is_idle:
            return False
        lengths = await self.broker.stream_lengths(self.host.config.lanes)
        return not any(lengths.values())

    async def _wait_for_room(self) -> None:
        self.room.clear()
        stop = asyncio.ensure_future(self.host.stop_requested.wait())
        wake = asyncio.ensure_future(self.room.wait())
        await asyncio.wait({stop, wake}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
        for task in (stop, wake):
            task.cancel()

    async def accept(self, claimed: list[Claimed]) -> None:
        """Queue what can be served, start what the budget admits, then settle
        the rest (dead letters, hand-backs) in one batched call."""
        rejected = self.dispatcher.accept(claimed, time.monotonic(), time.time())
        self.admit()
        await self.broker.settle(dead_letters=rejected.dead_letters, hand_backs=rejected.hand_backs)

    def admit(self) -> None:
        requests = self.dispatcher.admit(time.monotonic())
        if requests:
            self.engine.submit(requests)
            self.room.set()

    # --- drain: write results -------------------------------------------------

    async def _drain(self) -> None:
        outbox = self.engine.outbox
        while True:
            if outbox.empty():
                self.outputs_ready.clear()
                if self.engine.error is not None:
                    self.host.fail(ExitCode.ENGINE, f"engine: {self.engine.error}")
                    return
                await self.outputs_ready.wait()
                continue
            await self.handle_outputs(outbox.take(MAX_COMPLETION_BATCH))

    async def handle_outputs(self, outputs: list[EngineOutput]) -> None:
        """Release the budget at once (the engine freed its KV), refill the
        engine, then write the results and settle the failures."""
        finished = self.dispatcher.finish(outputs, time.time())
        self.admit()
        if finished.completions:
            self.num_writing = len(finished.completions)
            try:
                replies = await self.broker.complete(finished.completions)
            finally:
                self.num_writing = 0
            self.dispatcher.committed(finished.written, replies)
        await self.broker.settle(dead_letters=finished.dead_letters, retries=finished.retries)
        self.room.set()

    # --- lease and reclaim -------------------------------------------------------

    async def _lease(self) -> None:
        holdings = self.dispatcher.holdings
        while not self.is_stopping or holdings:
            await asyncio.sleep(self.host.config.lease_s / 3)
            for lane, ids in holdings.ids_by_lane().items():
                lost = {(lane, entry_id) for entry_id in await self.broker.renew(lane, ids)}
                if lost:
                    self._lost(lost)

    def _lost(self, lost: set[tuple[int, bytes]]) -> None:
        cancels, num_lost = self.dispatcher.lose(lost)
        if cancels:
            self.engine.cancel(cancels)
        if num_lost:
            self.host.log(f"worker {self.options.consumer}: lease lost on {num_lost} entries")

    async def _reclaim(self) -> None:
        config = self.host.config
        every = self.options.reclaim_every_s or min(config.lease_s / 4, 1.0)
        min_idle_ms = int(config.lease_s * 1000)
        recoveries_seen = 0
        while not self.is_stopping:
            await self._sleep_or_stop(every)
            if self.broker.num_recoveries != recoveries_seen:
                recoveries_seen = self.broker.num_recoveries
                await self._adopt_orphans()
            for lane in config.lanes:
                count = self.dispatcher.reads.reclaim_count(lane)
                if self.is_stopping:
                    break
                if count is None or self.broker.link.out_of_memory:  # none when full, as ingress
                    continue
                claimed = await self.broker.reclaim(lane, min_idle_ms, count=count)
                if claimed:
                    self.dispatcher.counts.reclaimed += len(claimed)
                    await self.accept(claimed)

    async def _adopt_orphans(self) -> None:
        """After Redis came back: take up entries pending under our own name that
        we never saw (a read whose reply the outage swallowed)."""
        for lane in self.host.config.lanes:
            orphans = self.dispatcher.unheld(await self.broker.own_pending(lane))
            if orphans:
                self.host.log(
                    f"worker {self.options.consumer}: adopting {len(orphans)} entries of lane "
                    f"{lane} whose read reply was lost"
                )
                await self.accept(orphans)

    # --- reporting -------------------------------------------------------------

    async def _report(self) -> None:
        while not self.is_stopping:
            await self._sleep_or_stop(self.options.log_every_s)
            d = self.dispatcher
            rates = self._progress.advance(self.engine.stats, d.counts.completed)
            line = progress_line(
                rates,
                d.counts,
                in_flight_tokens=d.budget.in_flight_tokens,
                queued_tokens=d.queue.queued_tokens,
            )
            self.host.log(f"{line} levels {','.join(str(v) for v in self.levels().values())}")

    async def _heartbeat(self) -> None:
        """Publish the status hash (with its TTL) until stopped; a failed
        publish is retried by the broker like any other call."""
        while not self.is_stopping:
            await self.broker.publish_status(self.telemetry.status(self.snapshot()))
            await self._sleep_or_stop(self.options.heartbeat_every_s)

    async def _sleep_or_stop(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.host.stop_requested.wait(), seconds)
