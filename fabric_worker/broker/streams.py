"""The worker's side of the lanes: claim, complete, renew, reclaim, release.

Every call goes through :meth:`Broker._call`, which retries transient Redis
errors with backoff (tenacity) for at most ``outage_budget_s`` and then raises
:class:`BrokerLost`: a worker holds its in-flight work through a short outage
and fails fast past the budget.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from fabric_worker.broker.connection import TRANSIENT_ERRORS
from fabric_worker.broker.scripts import register
from fabric_worker.protocol import GROUP, Keys

T = TypeVar("T")


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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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
    ) -> None:
        self.redis = client
        self.keys = keys
        self.consumer = consumer
        self.retention_s = retention_s
        self.outage_budget_s = outage_budget_s
        self.num_retries = 0
        self._complete = register(client, "complete")
        self._deadletter = register(client, "deadletter")
        self._renew = register(client, "renew")
        self._requeue = register(client, "requeue")
        self._retry = register(client, "retry")

    async def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(TRANSIENT_ERRORS),
            wait=wait_exponential_jitter(multiplier=0.05, max=1.0),
            stop=stop_after_delay(self.outage_budget_s),
            before_sleep=self._count_retry,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await make()
        except RetryError as exc:  # pragma: no cover - reraise=False path
            raise BrokerLost(str(exc)) from exc
        except TRANSIENT_ERRORS as exc:
            raise BrokerLost(f"Redis unreachable for {self.outage_budget_s:g} s: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _count_retry(self, _state: Any) -> None:
        self.num_retries += 1

    # --- claiming ---------------------------------------------------------

    async def read(self, lanes: Sequence[int], count: int, block_ms: int | None) -> list[Claimed]:
        """New entries (``>``) from the given lanes, at most ``count`` per lane."""
        streams = {self.keys.jobs(lane): ">" for lane in lanes}
        lane_of = {self.keys.jobs(lane): lane for lane in lanes}
        reply = await self._call(
            lambda: self.redis.xreadgroup(
                GROUP, self.consumer, streams, count=count, block=block_ms
            )
        )
        claimed = []
        for stream, entries in reply or []:
            lane = lane_of[_text(stream)]
            for entry_id, fields in entries:
                claimed.append(Claimed(lane, entry_id, fields or {}, 1))
        return claimed

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
            if _text(cursor) == "0-0":
                break
        if not taken:
            return []

        async def delivery_counts() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for entry_id, _ in taken:
                pipe.xpending_range(stream, GROUP, min=entry_id, max=entry_id, count=1)
            return await pipe.execute()  # type: ignore[no-any-return]

        counts = await self._call(delivery_counts)
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

        async def attempt() -> list[Any]:
            # A fresh pipeline per attempt: a failed execute() empties its stack.
            # Re-running a completion is safe: the script dedupes on job state.
            pipe = self.redis.pipeline(transaction=False)
            for c in completions:
                await self._complete(
                    keys=[
                        self.keys.jobs(c.lane),
                        self.keys.results(c.lane),
                        self.keys.backlog(c.lane),
                        self.keys.job(c.lane, c.job_id),
                    ],
                    args=[GROUP, c.entry_id, c.cost_tokens, self.retention_s, c.header, c.tokens],
                    client=pipe,
                )
            return await pipe.execute()  # type: ignore[no-any-return]

        replies = await self._call(attempt)
        return [_text(r) for r in replies]

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
        return _text(reply)

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

    async def stream_lengths(self, lanes: Sequence[int]) -> dict[int, int]:
        """Entries in each lane's stream: queued or pending (completed ones are deleted)."""

        async def lengths() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for lane in lanes:
                pipe.xlen(self.keys.jobs(lane))
            return await pipe.execute()  # type: ignore[no-any-return]

        values = await self._call(lengths)
        return {lane: int(v) for lane, v in zip(lanes, values, strict=True)}

    async def backlogs(self, lanes: Sequence[int]) -> dict[int, int]:
        """Every lane's backlog counter in one round trip."""
        values = await self._call(
            lambda: self.redis.mget([self.keys.backlog(lane) for lane in lanes])
        )
        return {lane: int(v or 0) for lane, v in zip(lanes, values, strict=True)}
