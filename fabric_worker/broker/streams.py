"""The worker's side of the lanes: claim, complete, renew, reclaim, release.

Every call goes through :meth:`Broker._call`, which retries transient Redis
errors with backoff (tenacity) for at most ``outage_budget_s`` and then raises
:class:`BrokerLost`: a worker holds its in-flight work through a short outage
and fails fast past the budget.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from fabric_worker.broker import text
from fabric_worker.broker.connection import TRANSIENT_ERRORS, is_transient
from fabric_worker.broker.heartbeat import publish
from fabric_worker.broker.scripts import register
from fabric_worker.telemetry.status import WorkerStatus
from fabric_worker.wire.keys import GROUP, Keys

T = TypeVar("T")
CLUSTER_CONCURRENCY = 16  # commands in flight at once on a cluster (see Broker._each)


class BrokerLost(RuntimeError):
    """Redis stayed unreachable for the whole outage budget (exit 4)."""


@dataclass(frozen=True, slots=True)
class Claimed:
    """An entry this worker now holds (pending under its consumer name)."""

    lane: int
    entry_id: bytes
    fields: dict[bytes, bytes]  # empty if the entry was deleted while pending
    deliveries: int


@dataclass(frozen=True, slots=True)
class Completion:
    """One result to write with the complete script."""

    lane: int
    entry_id: bytes
    job_id: str
    cost_tokens: int
    header: bytes
    tokens: bytes


def _command(name: str, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
    """One command, to be called on whatever client :meth:`Broker._each` hands it."""
    return lambda client: getattr(client, name)(*args, **kwargs)


class Broker:
    """Async Redis operations of one worker (consumer ``consumer``)."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: Keys,
        consumer: str,
        *,
        retention_s: int,
        outage_budget_s: float = 30.0,
        log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    ) -> None:
        self.redis = client
        self.keys = keys
        self.consumer = consumer
        self.retention_s = retention_s
        self.outage_budget_s = outage_budget_s
        self.num_retries = 0
        self.num_recoveries = 0  # calls that succeeded after a transient failure
        self._last_retry_log_s = -1e9
        self.log = log
        self.is_cluster = isinstance(client, AsyncRedisCluster)
        self._complete = register(client, "complete")
        self._deadletter = register(client, "deadletter")
        self._renew = register(client, "renew")
        self._requeue = register(client, "requeue")
        self._retry = register(client, "retry")
        self._scripts = (self._complete, self._deadletter, self._renew, self._requeue, self._retry)

    async def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        # The fast path first: building tenacity's machinery on every call costs
        # as much as the call itself, and almost every call succeeds.
        try:
            return await make()
        except redis.AuthenticationError as exc:  # a ConnectionError, but not transient
            raise BrokerLost(f"Redis refused the credentials: {exc}") from exc
        except Exception as exc:
            if not is_transient(exc):
                raise
            self._note_retry(exc)
        retrying = AsyncRetrying(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential_jitter(multiplier=0.05, max=1.0),
            stop=stop_after_delay(self.outage_budget_s),
            before_sleep=self._count_retry,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    result = await make()
                    # A reply may have been lost on the way: see own_pending().
                    self.num_recoveries += 1
                    return result
        except RetryError as exc:  # pragma: no cover - reraise=False path
            raise BrokerLost(str(exc)) from exc
        except redis.AuthenticationError as exc:
            raise BrokerLost(f"Redis refused the credentials: {exc}") from exc
        except TRANSIENT_ERRORS as exc:
            raise BrokerLost(f"Redis unreachable for {self.outage_budget_s:g} s: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _count_retry(self, state: Any) -> None:
        self._note_retry(state.outcome.exception() if state.outcome else None)

    def _note_retry(self, exc: BaseException | None) -> None:
        self.num_retries += 1
        now = time.monotonic()
        if now - self._last_retry_log_s >= 5.0:  # say so, but not on every attempt
            self._last_retry_log_s = now
            self.log(f"broker: {type(exc).__name__}: {exc}; retrying with backoff")

    async def _each(self, calls: Sequence[Callable[[Any], Any]]) -> list[Any]:
        """Run ``calls`` (each given a client to call on) in one round trip.

        Pipelined on a single server; concurrently on a cluster, where a
        pipeline may span nodes and cannot carry scripts. A fresh pipeline per
        attempt: a failed execute() empties its stack.
        """
        if self.is_cluster:
            # Each concurrent command holds a connection of its node, and the
            # cluster client caps them (100 per node): go in bounded waves.
            results: list[Any] = []
            for i in range(0, len(calls), CLUSTER_CONCURRENCY):
                wave = calls[i : i + CLUSTER_CONCURRENCY]
                results += await asyncio.gather(*(call(self.redis) for call in wave))
            return results
        for attempt in range(2):
            pipe = self.redis.pipeline(transaction=False)
            for call in calls:
                call(pipe)
            try:
                return await pipe.execute()  # type: ignore[no-any-return]
            except redis.exceptions.NoScriptError:
                # The server lost its scripts (a restart without persistence of
                # them): load them again and resend; every script is idempotent.
                if attempt:
                    raise
                for script in self._scripts:
                    script.sha = await self.redis.script_load(script.script)
        raise AssertionError("unreachable")  # pragma: no cover

    def _script(self, script: Any, keys: list[Any], args: list[Any]) -> Callable[[Any], Any]:
        """A script call for :meth:`_each`. On a pipeline it is a bare EVALSHA:
        redis-py's Script would make every pipeline ask SCRIPT EXISTS first, one
        more round trip per batch; :meth:`_each` reloads on NOSCRIPT instead."""

        def call(client: Any) -> Any:
            if self.is_cluster:
                return script(keys=keys, args=args, client=client)
            return client.evalsha(script.sha, len(keys), *keys, *args)

        return call

    # --- claiming ---------------------------------------------------------

    async def read(self, lanes: Sequence[int], count: int, block_ms: int | None) -> list[Claimed]:
        """New entries (``>``) from the given lanes, at most ``count`` per lane.

        On a cluster one XREADGROUP may only name streams of one slot: each lane
        is read in turn, and a blocking wait is shared out between them.
        """
        lane_of = {self.keys.jobs(lane): lane for lane in lanes}
        if self.is_cluster and len(lanes) > 1:
            reply = []
            for block in (None, max(1, (block_ms or 0) // len(lanes)) if block_ms else None):
                for lane in lanes:
                    reply += await self._read({self.keys.jobs(lane): ">"}, count, block)
                    if reply and block:
                        break
                if reply or not block_ms:
                    break
        else:
            reply = await self._read(dict.fromkeys(lane_of, ">"), count, block_ms)
        claimed = []
        for stream, entries in reply or []:
            lane = lane_of[text(stream)]
            for entry_id, fields in entries:
                claimed.append(Claimed(lane, entry_id, fields or {}, 1))
        return claimed

    async def _read(self, streams: dict[str, str], count: int, block_ms: int | None) -> list[Any]:
        reply = await self._call(
            lambda: self.redis.xreadgroup(
                GROUP, self.consumer, streams, count=count, block=block_ms
            )
        )
        return list(reply or [])

    async def own_pending(self, lane: int, count: int = 1000) -> list[Claimed]:
        """Entries pending under this very consumer, with fields and delivery counts.

        After a connection was lost mid-call, the server may have delivered
        entries whose reply never arrived (an XREADGROUP executed just before
        an outage): they are pending here but the worker never saw them. This
        finds them at once, without counting a delivery, instead of leaving them
        to the lease.
        """
        stream = self.keys.jobs(lane)
        infos = await self._call(
            lambda: self.redis.xpending_range(
                stream, GROUP, min="-", max="+", count=count, consumername=self.consumer
            )
        )
        if not infos:
            return []
        ranges = await self._call(
            lambda: self._each(
                [
                    _command("xrange", stream, min=i["message_id"], max=i["message_id"])
                    for i in infos
                ]
            )
        )
        return [
            Claimed(
                lane,
                info["message_id"],
                dict(found[0][1]) if found else {},
                int(info["times_delivered"]),
            )
            for info, found in zip(infos, ranges, strict=True)
        ]

    async def reclaim(self, lane: int, min_idle_ms: int, count: int = 100) -> list[Claimed]:
        """Take over at most ``count`` entries idle for ``min_idle_ms`` (their
        owner died or gave them up), following XAUTOCLAIM's cursor until it has
        that many or the end. Each comes back with its delivery count, this
        delivery included."""
        stream = self.keys.jobs(lane)
        cursor: bytes | str = "0-0"
        taken: list[tuple[bytes, dict[bytes, bytes]]] = []
        # Stop at ``count``: what is claimed past the caller's room would be handed
        # straight back as a fresh entry, its delivery count lost with it.
        while len(taken) < count:
            want = count - len(taken)
            reply = await self._call(
                lambda c=cursor, n=want: self.redis.xautoclaim(  # type: ignore[misc]
                    stream, GROUP, self.consumer, min_idle_ms, start_id=c, count=n
                )
            )
            cursor, entries = reply[0], reply[1]
            taken += [(entry_id, fields or {}) for entry_id, fields in entries]
            if text(cursor) == "0-0":
                break
        if not taken:
            return []

        pending = [
            _command("xpending_range", stream, GROUP, min=entry_id, max=entry_id, count=1)
            for entry_id, _ in taken
        ]
        counts = await self._call(lambda: self._each(pending))
        claimed = []
        for (entry_id, fields), info in zip(taken, counts, strict=True):
            deliveries = int(info[0]["times_delivered"]) if info else 1
            claimed.append(Claimed(lane, entry_id, fields, deliveries))
        return claimed

    # --- finishing ----------------------------------------------------------

    async def complete(self, completions: Sequence[Completion]) -> list[str]:
        """Run the complete script for each, pipelined: "ok" or "duplicate" each."""
        if not completions:
            return []

        def call(c: Completion) -> Callable[[Any], Any]:
            keys = [
                self.keys.jobs(c.lane),
                self.keys.results(c.lane),
                self.keys.backlog(c.lane),
                self.keys.job(c.lane, c.job_id),
            ]
            args = [GROUP, c.entry_id, c.cost_tokens, self.retention_s, c.header, c.tokens]
            return self._script(self._complete, keys, args)

        # Re-running a completion after a lost reply is safe: the script dedupes.
        calls = [call(c) for c in completions]
        replies = await self._call(lambda: self._each(calls))
        return [text(r) for r in replies]

    async def dead_letter(
        self,
        lane: int,
        entry_id: bytes,
        *,
        job_id: str | None,
        cost_tokens: int,
        reason: str,
        deliveries: int,
        error: str = "",
    ) -> str:
        """Move an entry to the dead-letter stream: "dead", "done" or "gone"."""
        state_key = self.keys.job(lane, job_id) if job_id else self.keys.backlog(lane)
        reply = await self._call(
            lambda: self._deadletter(
                keys=[
                    self.keys.jobs(lane),
                    self.keys.dlq(lane),
                    self.keys.backlog(lane),
                    state_key,
                ],
                args=[
                    GROUP,
                    entry_id,
                    cost_tokens,
                    self.retention_s,
                    reason,
                    deliveries,
                    error,
                    self.consumer,
                    f"{time.time():.3f}",
                    "1" if job_id else "0",
                ],
            )
        )
        return text(reply)

    # --- holding and handing back -------------------------------------------

    async def renew(self, lane: int, entry_ids: Iterable[bytes]) -> list[bytes]:
        """Heartbeat the lease on ``entry_ids``; returns those whose lease was lost."""
        ids = list(entry_ids)
        if not ids:
            return []
        lost = await self._call(
            lambda: self._renew(keys=[self.keys.jobs(lane)], args=[GROUP, self.consumer, *ids])
        )
        return [bytes(x) for x in lost]

    async def requeue(self, lane: int, entry_id: bytes, job_id: str | None) -> bool:
        """Hand back an unstarted entry to the tail of its lane. False if it
        was not ours any more."""
        state_key = self.keys.job(lane, job_id) if job_id else self.keys.backlog(lane)
        reply = await self._call(
            lambda: self._requeue(
                keys=[self.keys.jobs(lane), state_key],
                args=[GROUP, self.consumer, entry_id, "1" if job_id else "0"],
            )
        )
        return bool(reply)

    async def retry_later(self, lane: int, entry_id: bytes, idle_ms: int) -> bool:
        """Let go of a failed attempt so the next reclaim retries it."""
        reply = await self._call(
            lambda: self._retry(
                keys=[self.keys.jobs(lane)], args=[GROUP, self.consumer, entry_id, idle_ms]
            )
        )
        return bool(reply)

    async def publish_status(self, status: WorkerStatus) -> None:
        """The worker's heartbeat (see :mod:`fabric_worker.broker.heartbeat`)."""
        await self._call(lambda: publish(self.redis, self.keys, status))

    async def stream_lengths(self, lanes: Sequence[int]) -> dict[int, int]:
        """Entries in each lane's stream: queued or pending (completed ones are deleted)."""

        values = await self._call(
            lambda: self._each([_command("xlen", self.keys.jobs(lane)) for lane in lanes])
        )
        return {lane: int(v) for lane, v in zip(lanes, values, strict=True)}

    async def backlogs(self, lanes: Sequence[int]) -> dict[int, int]:
        """Every lane's backlog counter in one round trip (GETs, not MGET: the
        counters of different lanes live in different cluster slots)."""
        values = await self._call(
            lambda: self._each([_command("get", self.keys.backlog(lane)) for lane in lanes])
        )
        return {lane: int(v or 0) for lane, v in zip(lanes, values, strict=True)}
