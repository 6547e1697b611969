"""One worker per GPU: claim under a token budget, feed the engine, complete once.

Asyncio at the edges (ingress, drain, lease, reclaim, report); the engine on its
own thread (:mod:`fabric_worker.worker.engine_thread`). The scheduling decisions are
the pure core's (:mod:`admission`, :mod:`lanes`, :mod:`classes`); this module
only wires them to Redis and the engine. See docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from engines.contract import (
    Capacity,
    Engine,
    EngineOutput,
    EngineRequest,
    EngineStats,
    FinishReason,
)
from engines.manifest import ManifestError
from fabric_worker.broker.heartbeat import publish as publish_status
from fabric_worker.broker.streams import Broker, BrokerLost, Claimed, Completion
from fabric_worker.core.admission import BudgetMarks, TokenBudget
from fabric_worker.core.classes import ClassQueue
from fabric_worker.core.holdings import Held, Holdings
from fabric_worker.core.lanes import LaneChooser, LanePolicy
from fabric_worker.core.lifecycle import (
    JobEvent,
    JobState,
    WorkerEvent,
    WorkerState,
    worker_transition,
)
from fabric_worker.telemetry.prometheus import serve as serve_metrics
from fabric_worker.telemetry.rates import Meter
from fabric_worker.telemetry.snapshot import Telemetry
from fabric_worker.telemetry.status import HEARTBEAT_EVERY_S
from fabric_worker.wire.entries import (
    EntryError,
    JobEntry,
    ResultEntry,
    decode_job,
    encode_result,
    peek_id,
)
from fabric_worker.wire.fleet_config import FleetConfig, padded_cost
from fabric_worker.worker.engine_thread import EngineThread

MAX_READ_COUNT = 1000
MAX_COMPLETION_BATCH = 500


class ExitCode(IntEnum):
    OK = 0
    CONFIG = 2
    ENGINE = 3
    BROKER = 4
    INVARIANT = 5


def default_consumer() -> str:
    """Unique per process: host, pid and start time."""
    return f"{socket.gethostname()}-{os.getpid()}-{int(time.time())}"


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    consumer: str
    burst: bool = False
    max_tps: bool = False
    lane_max_wait_s: float = 2.0
    class_max_wait_s: float = 5.0
    log_every_s: float = 5.0
    grace_s: float = 30.0
    outage_budget_s: float = 30.0
    teardown_deadline_s: float = 4.5  # fatal errors exit within 5 s, watchdog included
    block_ms: int = 200
    reclaim_every_s: float | None = None  # default: a quarter of the lease, at most 1 s
    metrics_port: int | None = None  # serve Prometheus /metrics here
    heartbeat_every_s: float = HEARTBEAT_EVERY_S


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
        self.holdings = Holdings()
        self.meter = Meter()
        self.telemetry = Telemetry(self)
        self._engine_thread = EngineThread(engine_factory, on_output=self._outputs_arrived)
        self._request_ids = itertools.count(1)
        self._outputs_ready = asyncio.Event()
        self._room = asyncio.Event()
        self._stop = asyncio.Event()
        self._exit = ExitCode.OK
        self._empty_at: dict[int, int] = {}  # lane -> backlog value at which a read came back empty
        self._est_new_tokens = {lane: float(lane) for lane in config.lanes}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._backlogs: dict[int, int] = {}
        self._last_read_count = 0
        self._num_writing = 0
        self.capacity: Capacity | None = None
        self.budget: TokenBudget | None = None
        self.queue: ClassQueue[Held] | None = None

    def levels(self) -> dict[str, int]:
        """Depth of each of the eight bounded levels (DESIGN section 5), as seen here."""
        return {
            # Producers are held at the cap of each lane: the fullest one is closest.
            "1_submit_fullest_lane_tokens": max(self._backlogs.values(), default=0),
            "2_lane_backlog_tokens": sum(self._backlogs.values()),
            "3_ingress_read_entries": self._last_read_count,
            "4_admission_queue_tokens": self.queue.queued_tokens if self.queue else 0,
            "5_engine_inbox_requests": self._engine_thread.inbox_depth,
            "6_in_flight_tokens": self.budget.in_flight_tokens if self.budget else 0,
            "7_completion_queue_outputs": self._engine_thread.outbox.qsize(),
            "8_result_writes_in_flight": self._num_writing,
        }

    @property
    def engine_stats(self) -> EngineStats:
        """The engine's cumulative counters, as of its thread's last step."""
        return self._engine_thread.stats

    # --- lifecycle -------------------------------------------------------------

    def _step(self, event: WorkerEvent) -> None:
        self.state = worker_transition(self.state, event)

    def request_stop(self) -> None:
        """Graceful stop (SIGTERM): claim nothing more, finish or hand back the rest."""
        if self.state is WorkerState.RUNNING:
            self.log(f"worker {self.options.consumer}: stop requested, draining")
        if not self.state.is_terminal:
            self._step(WorkerEvent.STOP_REQUESTED)
        self._stop.set()

    def _fail(self, code: ExitCode, why: str) -> None:
        if self.state.is_terminal:
            return
        self.log(f"worker {self.options.consumer}: fatal: {why}")
        self._step(WorkerEvent.FATAL_ERROR)
        self._exit = code
        self._arm_watchdog(code)
        self._stop.set()

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
        self._engine_thread.start()
        await asyncio.to_thread(self._engine_thread.ready.wait)
        error = self._engine_thread.error
        if error is not None:
            self._step(WorkerEvent.FATAL_ERROR)
            code = ExitCode.CONFIG if isinstance(error, ManifestError) else ExitCode.ENGINE
            self.log(f"error: {error}")
            return code
        self._configure(self._engine_thread.capacity)
        if self.state is WorkerState.STARTING:
            self._step(WorkerEvent.STARTED)
        if self.options.metrics_port is not None:
            serve_metrics(self.telemetry.snapshot, self.options.metrics_port)
        tasks = [
            asyncio.create_task(self._guard(self._ingress()), name="ingress"),
            asyncio.create_task(self._guard(self._drain()), name="drain"),
            asyncio.create_task(self._guard(self._lease()), name="lease"),
            asyncio.create_task(self._guard(self._reclaim()), name="reclaim"),
            asyncio.create_task(self._guard(self._report()), name="report"),
            asyncio.create_task(self._guard(self._heartbeat()), name="heartbeat"),
        ]
        await self._stop.wait()
        if self._exit is ExitCode.OK:
            await self._drain_gracefully(tasks)
        else:
            await self._tear_down(tasks)
        await self._last_heartbeat()
        self.log(self.meter.summary_line(self.options.consumer, self._engine_thread.stats))
        return self._exit

    def _configure(self, capacity: Capacity | None) -> None:
        if capacity is None:  # pragma: no cover - ready without error means capacity is set
            raise RuntimeError("engine started without a capacity")
        self.capacity = capacity
        marks = BudgetMarks.from_capacity(
            kv_cache_tokens=capacity.kv_cache_tokens,
            max_num_tokens=capacity.max_num_tokens,
            max_tps=self.options.max_tps,
        )
        self.budget = TokenBudget(marks)
        # Read ahead one budget's worth (two in max-TPS mode): deep enough to
        # group classes and keep the engine fed while results are written.
        depth = 2 if self.options.max_tps else 1
        wait = self.options.class_max_wait_s * (4 if self.options.max_tps else 1)
        self.queue = ClassQueue(max_tokens=depth * marks.high_water_tokens, max_wait_s=wait)
        self.chooser = LaneChooser(
            self.config.lanes,
            LanePolicy(max_wait_s=self.options.lane_max_wait_s, max_tps=self.options.max_tps),
        )
        self.log(
            f"worker {self.options.consumer}: engine capacity batch={capacity.max_batch_size} "
            f"step_tokens={capacity.max_num_tokens} kv_tokens={capacity.kv_cache_tokens} "
            f"max_seq_len={capacity.max_seq_len}; budget high={marks.high_water_tokens} "
            f"low={marks.low_water_tokens} tokens; read-ahead {self.queue.max_tokens} tokens; "
            f"lanes {','.join(map(str, self.config.lanes))}"
        )

    async def _guard(self, body: Coroutine[Any, Any, None]) -> None:
        try:
            await body
        except asyncio.CancelledError:
            raise
        except BrokerLost as exc:
            self._fail(ExitCode.BROKER, f"broker lost: {exc}")
        except Exception as exc:  # an invariant broke: fail fast, loudly
            self._fail(ExitCode.INVARIANT, f"{type(exc).__name__}: {exc}")

    # --- ingress: read what the budget can take -----------------------------------

    async def _ingress(self) -> None:
        assert self.queue is not None
        while not self._stop.is_set():
            room = self.queue.max_tokens - self.queue.queued_tokens
            # Room for less than the cheapest likely job counts as full: reading
            # one entry only to hand it back would spin (and reorder the lane).
            if room < min(self._estimate(lane) for lane in self.config.lanes):
                self._room.clear()
                await self._wait_or_stop(self._room, 1.0)
                continue
            backlogs = await self.broker.backlogs(self.config.lanes)
            self._backlogs = backlogs
            readable = {
                lane: 0 if self._empty_at.get(lane) == value else value
                for lane, value in backlogs.items()
            }
            lane = self.chooser.choose(time.monotonic(), readable)
            if lane is not None and room < self._estimate(lane):
                self._room.clear()
                await self._wait_or_stop(self._room, 1.0)
                continue
            if lane is not None:
                count = self._read_count(lane, room)
                claimed = await self.broker.read([lane], count, block_ms=None)
                if not claimed:
                    self._empty_at[lane] = backlogs[lane]
            else:
                middle = self.config.lanes[len(self.config.lanes) // 2]
                count = max(1, min(MAX_READ_COUNT, room // (2 * middle)))
                claimed = await self.broker.read(self.config.lanes, count, self.options.block_ms)
                if not claimed and self.options.burst and await self._all_done():
                    self.log(f"worker {self.options.consumer}: burst done, every lane is empty")
                    self.request_stop()
                    return
            self._last_read_count = len(claimed)
            if claimed:
                await self._accept(claimed)

    def _estimate(self, lane: int) -> int:
        """Expected padded cost of a job of this lane (EWMA of its max_new_tokens)."""
        return lane + int(self._est_new_tokens[lane])

    def _read_count(self, lane: int, room: int) -> int:
        return max(1, min(MAX_READ_COUNT, room // self._estimate(lane)))

    async def _all_done(self) -> bool:
        if self.holdings or self.queue:
            return False
        lengths = await self.broker.stream_lengths(self.config.lanes)
        return not any(lengths.values())

    async def _accept(self, claimed: list[Claimed]) -> None:
        """Decode, check and queue claimed entries; dead-letter what cannot be served."""
        assert self.queue is not None and self.budget is not None and self.capacity is not None
        now_unix = time.time()
        for c in claimed:
            if (c.lane, c.entry_id) in self.holdings:
                continue  # our own entry, reclaimed back after a stall
            reason, job = self._check(c)
            if job is None:
                await self.broker.dead_letter(
                    c.lane,
                    c.entry_id,
                    job_id=peek_id(c.fields),
                    cost_tokens=0,
                    reason=reason,
                    deliveries=c.deliveries,
                )
                self.meter.dead_lettered += 1
                continue
            cost = padded_cost(c.lane, job.max_new_tokens)
            if c.deliveries > self.config.max_deliveries:
                await self.broker.dead_letter(
                    c.lane,
                    c.entry_id,
                    job_id=job.id,
                    cost_tokens=cost,
                    reason=f"delivered {c.deliveries} times (max {self.config.max_deliveries})",
                    deliveries=c.deliveries,
                )
                self.meter.dead_lettered += 1
                continue
            held = Held(c.lane, c.entry_id, job, cost, c.deliveries, now_unix)
            if not self.queue.can_push(cost):
                await self.broker.requeue(c.lane, c.entry_id, job.id)
                continue
            self.holdings.add(held)
            held.step(JobEvent.ENQUEUED)
            self.queue.push(held, cls=job.prefix_class, cost_tokens=cost, now_s=time.monotonic())
            est = self._est_new_tokens
            est[c.lane] += 0.05 * (job.max_new_tokens - est[c.lane])
        self._admit()

    def _check(self, c: Claimed) -> tuple[str, JobEntry | None]:
        assert self.budget is not None and self.capacity is not None
        if not c.fields:
            return "entry was deleted while pending", None
        try:
            job = decode_job(
                c.fields,
                vocab_size=self.config.vocab_size,
                max_prompt_tokens=self.config.max_prompt_tokens,
            )
        except EntryError as exc:
            return exc.reason, None
        if len(job.tokens) > c.lane:
            return f"prompt of {len(job.tokens)} tokens does not belong in lane {c.lane}", None
        need = len(job.tokens) + job.max_new_tokens
        cost = padded_cost(c.lane, job.max_new_tokens)
        if need > self.capacity.max_seq_len or not self.budget.fits_ever(cost):
            return (
                f"job needs {need} tokens (padded {cost}); this engine holds at most "
                f"{self.capacity.max_seq_len} per sequence and "
                f"{self.budget.marks.high_water_tokens} in flight"
            ), None
        return "", job

    # --- admission: hand the engine what the budget admits ------------------------

    def _admit(self) -> None:
        assert self.queue is not None and self.budget is not None and self.capacity is not None
        if self.state is not WorkerState.RUNNING and self.state is not WorkerState.DRAINING:
            return
        if self._stop.is_set():
            return  # draining: what is queued is handed back, not started
        room = self.capacity.max_batch_size - self._engine_thread.inbox_depth
        now = time.monotonic()
        requests: list[EngineRequest] = []
        while len(requests) < room:
            cost = self.queue.peek_cost(now)
            if cost is None or not self.budget.try_admit(cost):
                break
            held = self.queue.pop(now)
            assert held is not None
            request_id = next(self._request_ids)
            self.holdings.start(held, request_id)
            job = held.job
            requests.append(
                EngineRequest(
                    request_id=request_id,
                    prompt=job.tokens,
                    max_new_tokens=job.max_new_tokens,
                    end_id=job.end_id,
                    prefix_class=job.prefix_class,
                    pad_to=held.lane,
                )
            )
        if requests:
            self._engine_thread.submit(requests)
            self._room.set()

    # --- drain: write results -------------------------------------------------

    def _outputs_arrived(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._outputs_ready.set)

    async def _drain(self) -> None:
        outbox = self._engine_thread.outbox
        while True:
            if outbox.empty():
                self._outputs_ready.clear()
                if self._engine_thread.error is not None:
                    self._fail(ExitCode.ENGINE, f"engine: {self._engine_thread.error}")
                    return
                await self._outputs_ready.wait()
                continue
            outputs: list[EngineOutput] = []
            while len(outputs) < MAX_COMPLETION_BATCH and not outbox.empty():
                outputs.append(outbox.get_nowait())
            await self._handle_outputs(outputs)

    async def _handle_outputs(self, outputs: list[EngineOutput]) -> None:
        assert self.budget is not None
        done: list[tuple[Held, Completion]] = []
        failed: list[tuple[Held, EngineOutput]] = []
        now_unix = time.time()
        for out in outputs:
            held = self.holdings.finish(out.request_id)
            if held is None:
                raise RuntimeError(f"engine returned unknown request {out.request_id}")
            self.budget.release(held.cost_tokens)
            if held.state is JobState.LOST:
                self.meter.lease_lost += 1
            elif out.finish_reason is FinishReason.CANCELLED:
                # Cancelled at teardown: leave it pending, another worker reclaims it.
                self.holdings.drop(held, JobEvent.ABANDONED)
            elif out.finish_reason is FinishReason.ERROR:
                held.step(JobEvent.ENGINE_DONE)
                failed.append((held, out))
            else:
                held.step(JobEvent.ENGINE_DONE)
                done.append((held, self._completion(held, out, now_unix)))
        self._admit()
        if done:
            self._num_writing = len(done)
            try:
                replies = await self.broker.complete([c for _, c in done])
            finally:
                self._num_writing = 0
            for (held, _), reply in zip(done, replies, strict=True):
                ok = reply == "ok"
                self.holdings.drop(held, JobEvent.COMMITTED if ok else JobEvent.ALREADY_DONE)
                self.meter.count_completion(ok=ok)
        for held, out in failed:
            await self._attempt_failed(held, out.error or "engine error")
        self._room.set()

    def _completion(self, held: Held, out: EngineOutput, now_unix: float) -> Completion:
        result = ResultEntry(
            id=held.job.id,
            tokens=out.tokens,
            finish_reason=out.finish_reason.value,
            deliveries=held.deliveries,
            worker=self.options.consumer,
            submitted_at=held.job.submitted_at,
            started_at=held.claimed_at,
            finished_at=now_unix,
        )
        fields = encode_result(result)
        return Completion(
            held.lane, held.entry_id, held.job.id, held.cost_tokens, fields["h"], fields["t"]
        )

    async def _attempt_failed(self, held: Held, error: str) -> None:
        """Retry through reclaim until max_deliveries, then dead-letter with the error."""
        if held.deliveries >= self.config.max_deliveries:
            self.holdings.drop(held, JobEvent.DEAD_LETTERED)
            await self.broker.dead_letter(
                held.lane,
                held.entry_id,
                job_id=held.job.id,
                cost_tokens=held.cost_tokens,
                reason=f"engine failed it on each of {held.deliveries} deliveries",
                deliveries=held.deliveries,
                error=error,
            )
            self.meter.dead_lettered += 1
        else:
            self.holdings.drop(held, JobEvent.ATTEMPT_FAILED)
            idle_ms = int(self.config.lease_s * 1000) * 2
            await self.broker.retry_later(held.lane, held.entry_id, idle_ms)
            self.meter.retried += 1

    # --- lease and reclaim -------------------------------------------------------

    async def _lease(self) -> None:
        assert self.queue is not None
        while not self._stop.is_set() or self.holdings:
            await self._sleep_or_stop(self.config.lease_s / 3, stop_aware=False)
            for lane, ids in self.holdings.ids_by_lane().items():
                lost = {(lane, entry_id) for entry_id in await self.broker.renew(lane, ids)}
                if lost:
                    self._lost(lost)

    def _lost(self, lost: set[tuple[int, bytes]]) -> None:
        assert self.queue is not None
        self.queue.remove_if(lambda h: h.key in lost)
        cancels = []
        num_lost = 0
        for key in lost:
            held = self.holdings.get(key)
            if held is None or held.state is JobState.FINISHED:
                # Completed (or being written) while the renewal was on its way:
                # not a lost lease; the complete script settles it.
                continue
            num_lost += 1
            was_running = held.state is JobState.RUNNING
            self.holdings.lose(held)
            if was_running and held.request_id is not None:
                cancels.append(held.request_id)
            else:
                self.meter.lease_lost += 1
        if cancels:
            self._engine_thread.cancel(cancels)
        if num_lost:
            self.log(f"worker {self.options.consumer}: lease lost on {num_lost} entries")

    async def _reclaim(self) -> None:
        assert self.queue is not None
        every = self.options.reclaim_every_s or min(self.config.lease_s / 4, 1.0)
        min_idle_ms = int(self.config.lease_s * 1000)
        recoveries_seen = 0
        while not self._stop.is_set():
            await self._sleep_or_stop(every)
            if self.broker.num_recoveries != recoveries_seen:
                recoveries_seen = self.broker.num_recoveries
                await self._adopt_orphans()
            for lane in self.config.lanes:
                room = self.queue.max_tokens - self.queue.queued_tokens
                if self._stop.is_set():
                    break
                if room < self._estimate(lane):
                    continue
                claimed = await self.broker.reclaim(
                    lane, min_idle_ms, count=self._read_count(lane, room)
                )
                if claimed:
                    self.meter.reclaimed += len(claimed)
                    await self._accept(claimed)

    async def _adopt_orphans(self) -> None:
        """After Redis came back: take up entries pending under our own name that
        we never saw (a read whose reply the outage swallowed)."""
        for lane in self.config.lanes:
            orphans = [
                c
                for c in await self.broker.own_pending(lane)
                if (c.lane, c.entry_id) not in self.holdings
            ]
            if orphans:
                self.log(
                    f"worker {self.options.consumer}: adopting {len(orphans)} entries of lane "
                    f"{lane} whose read reply was lost"
                )
                await self._accept(orphans)

    # --- reporting -------------------------------------------------------------

    async def _report(self) -> None:
        while not self._stop.is_set():
            await self._sleep_or_stop(self.options.log_every_s)
            assert self.budget is not None and self.queue is not None
            self.log(
                self.meter.progress_line(
                    self._engine_thread.stats,
                    in_flight_tokens=self.budget.in_flight_tokens,
                    queued_tokens=self.queue.queued_tokens,
                )
                + " levels "
                + ",".join(str(v) for v in self.levels().values())
            )

    async def _heartbeat(self) -> None:
        """Publish the status hash (with its TTL) until stopped; a failed
        publish is retried by the broker like any other call."""
        while not self._stop.is_set():
            await self.broker.publish_status(self.telemetry.status())
            await self._sleep_or_stop(self.options.heartbeat_every_s)

    async def _last_heartbeat(self) -> None:
        # Say how it ended (stopped or failed) so probes and `top` see it at once;
        # best effort: when Redis is what failed, there is nobody to tell.
        with contextlib.suppress(Exception):
            status = self.telemetry.status()
            await asyncio.wait_for(publish_status(self.broker.redis, self.broker.keys, status), 1.0)

    async def _sleep_or_stop(self, seconds: float, *, stop_aware: bool = True) -> None:
        if not stop_aware:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _wait_or_stop(self, event: asyncio.Event, seconds: float) -> None:
        stop = asyncio.ensure_future(self._stop.wait())
        wake = asyncio.ensure_future(event.wait())
        await asyncio.wait({stop, wake}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for task in (stop, wake):
            task.cancel()

    # --- teardown -----------------------------------------------------------------

    async def _drain_gracefully(self, tasks: list[asyncio.Task[None]]) -> None:
        """Stop claiming; hand back what was not started; finish the rest within
        the grace period; leave anything still running for reclaim."""
        assert self.queue is not None
        ingress, drain, lease, reclaim, report, heartbeat = tasks
        await asyncio.gather(ingress, reclaim, report, heartbeat, return_exceptions=True)
        handed_back = 0
        for held in self.queue.drain():
            self.holdings.drop(held, JobEvent.RELEASED)
            if await self.broker.requeue(held.lane, held.entry_id, held.job.id):
                handed_back += 1
        if handed_back:
            self.log(f"worker {self.options.consumer}: handed back {handed_back} unstarted entries")
        deadline = time.monotonic() + self.options.grace_s
        while self.holdings and time.monotonic() < deadline and self._exit is ExitCode.OK:
            self._room.clear()
            await self._wait_or_stop_room(deadline)
        if self.holdings:
            self.log(
                f"worker {self.options.consumer}: grace period over, "
                f"{len(self.holdings)} entries left for reclaim"
            )
        self._engine_thread.stop()
        await asyncio.to_thread(self._engine_thread.join, 5.0)
        for task in (drain, lease):
            task.cancel()
        await asyncio.gather(drain, lease, return_exceptions=True)
        if self.state is WorkerState.DRAINING:
            self._step(WorkerEvent.DRAINED)

    async def _wait_or_stop_room(self, deadline: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._room.wait(), max(0.0, deadline - time.monotonic()))

    async def _tear_down(self, tasks: list[asyncio.Task[None]]) -> None:
        """Fatal: stop ingress and admission, cancel engine work, flush finished
        results (broker permitting), exit. The watchdog bounds all of it."""
        ingress, drain, lease, reclaim, report, heartbeat = tasks
        for task in (ingress, reclaim, report, lease, heartbeat):
            task.cancel()
        self._engine_thread.stop()
        await asyncio.to_thread(self._engine_thread.join, 2.0)
        drain.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._exit is not ExitCode.BROKER:
            outputs = []
            while not self._engine_thread.outbox.empty():
                outputs.append(self._engine_thread.outbox.get_nowait())
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._flush(outputs), 2.0)

    async def _flush(self, outputs: list[EngineOutput]) -> None:
        done = (FinishReason.LENGTH, FinishReason.STOP)
        finished = [o for o in outputs if o.finish_reason in done]
        if finished:
            await self._handle_outputs(finished)
