"""FabricClient: submit jobs and exit.

One server-side script per lane batch does dedupe, the backlog-cap check, the
``XADD`` and the backlog ``INCRBY`` atomically, so a retried submit (after a
dropped connection, or a producer run twice) never enqueues a job twice.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_delay,
    wait_exponential_jitter,
)

from fabric_worker.broker.client import SyncRedis
from fabric_worker.broker.connection import DEFAULT_URL, connect
from fabric_worker.broker.lookup import Lookup, lookup
from fabric_worker.broker.memory import is_out_of_memory, memory
from fabric_worker.broker.namespace import load_config
from fabric_worker.broker.submit import ScriptJob, Submitter
from fabric_worker.broker.transient import is_transient
from fabric_worker.wire.entries import encode_job
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import Keys
from producers.batches import BatchMethods
from producers.validation import (
    InvalidJobsError,
    Job,
    LanedJob,
    check_batch,
    validate_jobs,
)

T = TypeVar("T")

BATCH_SIZE = 500  # jobs per script call: large enough to amortise, small enough not to stall Redis


@dataclass(slots=True)
class SubmitReport:
    """What a submit did: ``ids`` in the order the jobs were given."""

    ids: list[str] = field(default_factory=list)
    num_submitted: int = 0
    num_duplicates: int = 0
    duplicate_ids: list[str] = field(default_factory=list)
    batch: str | None = None  # a duplicate stays in the batch it first came with


def _script_job(job: LanedJob) -> ScriptJob:
    fields = encode_job(job.entry)
    return job.entry.id, job.cost_tokens, fields["h"], fields["t"]


class BackpressureError(RuntimeError):
    """A lane's backlog stayed at its cap for the whole wait. ``report`` says
    what was submitted before giving up; the rest can be submitted again."""

    def __init__(self, message: str, report: SubmitReport, num_pending: int) -> None:
        super().__init__(message)
        self.report = report
        self.num_pending = num_pending


class RedisMemoryError(BackpressureError):
    """Redis stayed out of memory (maxmemory, noeviction) for the whole wait.
    Each job's script was refused whole: no job is half written."""


class FabricClient(BatchMethods):
    """Submit-and-exit producer client for one namespace; batches: :class:`BatchMethods`."""

    def __init__(
        self,
        client: SyncRedis,
        namespace: str = "fabric",
        *,
        backpressure_timeout_s: float = 60.0,
        retry_budget_s: float = 30.0,
    ) -> None:
        self._redis = client
        self.keys = Keys(namespace)
        self.backpressure_timeout_s = backpressure_timeout_s
        self.retry_budget_s = retry_budget_s
        self._submitter = Submitter(client, self.keys)
        self._config: FleetConfig | None = None

    @classmethod
    def from_url(
        cls, url: str = DEFAULT_URL, namespace: str = "fabric", **options: float
    ) -> FabricClient:
        return cls(connect(url), namespace, **options)

    @property
    def config(self) -> FleetConfig:
        """The namespace's fleet config, loaded once (with connection retries)."""
        if self._config is None:
            self._config = self._retrying_call(lambda: load_config(self._redis, self.keys))
        return self._config

    def close(self) -> None:
        self._redis.close()

    def __enter__(self) -> FabricClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def results(self, ids: Sequence[str]) -> list[Lookup]:
        """Each job's state (queued, done, dead or unknown) and, where Redis
        recorded its entry, its result. Probes every lane: lanes + 1 Redis
        calls per job, pipelined in two round trips."""
        lanes = self.config.lanes
        return self._retrying_call(lambda: lookup(self._redis, self.keys, lanes, ids))

    def result(self, job_id: str) -> Lookup:
        return self.results([job_id])[0]

    def validate(self, jobs: Iterable[Job], *, batch: str | None = None) -> list[LanedJob]:
        """Validate every job; raises InvalidJobsError listing each bad one."""
        if batch is not None:
            check_batch(batch)
        laned, errors = validate_jobs(
            list(jobs), self.config, submitted_at=time.time(), batch=batch
        )
        if errors:
            raise InvalidJobsError(errors)
        return laned

    def submit(self, jobs: Iterable[Job], *, batch: str | None = None) -> SubmitReport:
        """Validate all jobs, then enqueue them. Nothing is written if any is
        invalid. Waits (with backoff) while a lane is at its backlog cap, up to
        ``backpressure_timeout_s``, then raises BackpressureError; so while
        Redis is out of memory, then RedisMemoryError.

        With ``batch``, every new job joins that batch (see :mod:`producers.batches`);
        a job id already known stays in the batch it first came with. A
        cancelled batch takes no jobs: BatchCancelledError."""
        return self.submit_laned(self.validate(jobs, batch=batch))

    def submit_laned(self, laned: list[LanedJob]) -> SubmitReport:
        """Enqueue jobs already validated by :meth:`validate` (all of one batch, or none)."""
        batches = {job.entry.batch for job in laned}
        if len(batches) > 1:
            raise ValueError(f"one submit takes jobs of one batch, got {sorted(map(str, batches))}")
        batch = batches.pop() if batches else None
        report = SubmitReport(ids=[job.entry.id for job in laned], batch=batch)
        nonce = uuid.uuid4().hex[:16]
        # An id given twice in one call is a duplicate of its first occurrence;
        # sending both would make the second look like our own retried write.
        seen: set[str] = set()
        pending = []
        for job in laned:
            if job.entry.id in seen:
                report.num_duplicates += 1
                report.duplicate_ids.append(job.entry.id)
            else:
                seen.add(job.entry.id)
                pending.append(job)

        full: list[bool] = [False]  # whether the last round met a full Redis

        def round_trip() -> list[LanedJob]:
            nonlocal pending
            try:
                pending, full[0] = self._retrying_call(
                    lambda: self._send(pending, nonce, report, batch)
                )
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                full[0] = True  # wait as at the cap: the whole round goes again
            return pending

        waiting = Retrying(
            retry=retry_if_result(bool),
            wait=wait_exponential_jitter(multiplier=0.05, max=2.0),
            stop=stop_after_delay(self.backpressure_timeout_s),
        )
        try:
            waiting(round_trip)
        except RetryError:
            if full[0]:
                usage = memory(self._redis)
                raise RedisMemoryError(
                    f"Redis is out of memory ({usage.describe() if usage else 'INFO denied'}) "
                    f"for {self.backpressure_timeout_s:g} s; {len(pending)} job(s) not "
                    f"submitted (submitted at least {report.num_submitted}, duplicates "
                    f"{report.num_duplicates}); free memory or raise maxmemory, then retry: "
                    "ids already queued are not enqueued twice",
                    report,
                    len(pending),
                ) from None
            lanes = sorted({job.lane for job in pending})
            raise BackpressureError(
                f"backlog of lane(s) {lanes} stayed at the cap of "
                f"{self.config.backlog_cap_tokens} tokens for {self.backpressure_timeout_s:g} s; "
                f"{len(pending)} job(s) not submitted (submitted {report.num_submitted}, "
                f"duplicates {report.num_duplicates}); retry later: ids already queued "
                f"are not enqueued twice",
                report,
                len(pending),
            ) from None
        return report

    def _retrying_call(self, call: Callable[[], T]) -> T:
        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential_jitter(multiplier=0.05, max=2.0),
            stop=stop_after_delay(self.retry_budget_s),
            reraise=True,
        )
        return retrying(call)

    def _send(
        self, jobs: list[LanedJob], nonce: str, report: SubmitReport, batch_name: str | None
    ) -> tuple[list[LanedJob], bool]:
        """One pipelined round of script calls. Returns the jobs the backlog cap
        or a full Redis turned away, and whether Redis was full. On a connection
        error nothing in ``report`` changes, and the whole round is sent again:
        dedupe makes that safe. A batch refused for memory is sent again alone:
        the batches that went through are counted once, here."""
        by_lane: dict[int, list[LanedJob]] = defaultdict(list)
        for job in jobs:
            by_lane[job.lane].append(job)
        batches = [
            lane_jobs[i : i + BATCH_SIZE]
            for lane_jobs in by_lane.values()
            for i in range(0, len(lane_jobs), BATCH_SIZE)
        ]
        outcomes = self._submitter.submit(
            # Lazy: each call is packed while Redis runs the one before.
            ((batch[0].lane, [_script_job(job) for job in batch]) for batch in batches),
            cap=self.config.backlog_cap_tokens,
            nonce=nonce,
            replica_acks=self.config.replica_acks,
            replica_ack_timeout_ms=self.config.replica_ack_timeout_ms,
            batch=batch_name,
        )
        turned_away: list[LanedJob] = []
        is_full = False
        for batch, handled in zip(batches, outcomes, strict=True):
            if handled is None:  # refused whole for memory: nothing written
                is_full = True
                turned_away += batch
                continue
            for job, is_ours in zip(batch, handled, strict=False):
                if is_ours:
                    report.num_submitted += 1
                else:
                    report.num_duplicates += 1
                    report.duplicate_ids.append(job.entry.id)
            turned_away += batch[len(handled) :]
        return turned_away, is_full
