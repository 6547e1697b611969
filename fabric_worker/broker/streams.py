"""The worker's side of the lanes: claim, complete, renew, reclaim, settle.

Each method is one batched round trip through :class:`~.link.Link`, which
rides out short outages and raises :class:`~.link.BrokerLost` past the
budget. The broker carries out what the core decided; it decides nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio

from fabric_worker.broker import scripts, text
from fabric_worker.broker.heartbeat import publish
from fabric_worker.broker.link import BrokerLost, Link, command
from fabric_worker.broker.replication import AsyncReplicaWriter
from fabric_worker.telemetry.status import WorkerStatus
from fabric_worker.wire.claims import Claimed, Completion, DeadLetter, HandBack, Retry
from fabric_worker.wire.keys import GROUP, Keys
from fabric_worker.wire.replies import CompleteReply, DeadLetterReply

__all__ = ["Broker", "BrokerLost", "Claimed", "Completion", "Settled"]


@dataclass(slots=True)
class Settled:
    """What one settle round trip did."""

    dead_letters: list[DeadLetterReply] = field(default_factory=list)
    handed_back: list[bool] = field(default_factory=list)  # False: not ours any more
    retried: list[bool] = field(default_factory=list)

    @property
    def num_handed_back(self) -> int:
        return sum(self.handed_back)


def _is_reply(reply: CompleteReply | str) -> bool:
    return isinstance(reply, CompleteReply)


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
        replica_acks: int = 0,
        replica_ack_timeout_ms: int = 1000,
        log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    ) -> None:
        self.redis = client
        self.keys = keys
        self.consumer = consumer
        self.retention_s = retention_s
        self.link = Link(client, outage_budget_s=outage_budget_s, log=log)
        # Completions wait for this many replicas (the fleet config's replica_acks).
        # A batch they fall short on is counted, not retried: its results are
        # written, and a master lost before replicating them means running them again.
        self._replicated = (
            AsyncReplicaWriter(client, self.link.registered, replica_acks, replica_ack_timeout_ms)
            if replica_acks
            else None
        )
        self.num_replica_shortfalls = 0

    @property
    def num_recoveries(self) -> int:
        """Calls that succeeded after a transient failure: a reply may be lost."""
        return self.link.num_recoveries

    # --- claiming ---------------------------------------------------------

    async def read(self, lanes: Sequence[int], count: int, block_ms: int | None) -> list[Claimed]:
        """New entries (``>``) from the given lanes, at most ``count`` per lane.

        On a cluster one XREADGROUP may only name streams of one slot: each lane
        is read in turn, and a blocking wait is shared out between them.
        """
        lane_of = {self.keys.jobs(lane): lane for lane in lanes}
        if self.link.is_cluster and len(lanes) > 1:
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
        reply = await self.link.call(
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
        infos = await self.link.call(
            lambda: self.redis.xpending_range(
                stream, GROUP, min="-", max="+", count=count, consumername=self.consumer
            )
        )
        if not infos:
            return []
        ranges = await self.link.call(
            lambda: self.link.each(
                [command("xrange", stream, min=i["message_id"], max=i["message_id"]) for i in infos]
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
            reply = await self.link.call(
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
            command("xpending_range", stream, GROUP, min=entry_id, max=entry_id, count=1)
            for entry_id, _ in taken
        ]
        counts = await self.link.call(lambda: self.link.each(pending))
        claimed = []
        for (entry_id, fields), info in zip(taken, counts, strict=True):
            deliveries = int(info[0]["times_delivered"]) if info else 1
            claimed.append(Claimed(lane, entry_id, fields, deliveries))
        return claimed

    # --- finishing ----------------------------------------------------------

    async def complete(self, completions: Sequence[Completion]) -> list[CompleteReply]:
        """Run the complete script once per lane (one cluster slot each) for
        the whole batch, in one round trip. Re-running a completion after a
        lost reply is safe: the script dedupes.

        A job the script could not complete fails alone there (the others are
        written); here it raises :class:`redis.ResponseError` after the batch,
        as a failed script call in a pipeline always did.
        """
        by_lane: dict[int, list[int]] = {}
        for i, c in enumerate(completions):
            by_lane.setdefault(c.lane, []).append(i)
        calls = [
            scripts.complete(
                self.keys, lane, [completions[i] for i in indexes], retention_s=self.retention_s
            )
            for lane, indexes in by_lane.items()
        ]
        writer = self._replicated
        if writer is None or not calls:
            raw = await self.link.scripts(calls)
        else:
            acked = await self.link.call(lambda: writer.run(calls))
            if acked.num_acked < writer.num_replicas:
                self.num_replica_shortfalls += 1
            raw = acked.replies
        replies: list[CompleteReply | str] = [""] * len(completions)
        for indexes, lane_raw in zip(by_lane.values(), raw, strict=True):
            for i, reply in zip(indexes, scripts.complete_replies(lane_raw), strict=True):
                replies[i] = reply
        failed = [
            (c.job_id, r) for c, r in zip(completions, replies, strict=True) if not _is_reply(r)
        ]
        if failed:
            raise redis.ResponseError(f"complete: {len(failed)} job(s) failed: {failed[:5]}")
        return [CompleteReply(r) for r in replies]

    def _dead_letter(self, d: DeadLetter, now_unix: float) -> scripts.Call:
        return scripts.dead_letter(
            self.keys, d, retention_s=self.retention_s, consumer=self.consumer, now_unix=now_unix
        )

    async def dead_letter(self, letters: Sequence[DeadLetter]) -> list[DeadLetterReply]:
        """Move entries to their dead-letter streams: dead, done (finished
        elsewhere meanwhile) or gone, each."""
        return (await self.settle(dead_letters=letters)).dead_letters

    async def requeue(self, hand_backs: Sequence[HandBack]) -> list[bool]:
        """Hand back unstarted entries to the tail of their lanes; False for
        each that was not ours any more."""
        return (await self.settle(hand_backs=hand_backs)).handed_back

    async def retry_later(self, retries: Sequence[Retry]) -> list[bool]:
        """Let go of failed attempts so that the next reclaim retries them."""
        return (await self.settle(retries=retries)).retried

    async def settle(
        self,
        *,
        dead_letters: Sequence[DeadLetter] = (),
        hand_backs: Sequence[HandBack] = (),
        retries: Sequence[Retry] = (),
    ) -> Settled:
        """Dead letters, hand-backs and retries, all in one round trip."""
        now_unix = time.time()
        calls = [self._dead_letter(d, now_unix) for d in dead_letters]
        calls += [scripts.requeue(self.keys, h, self.consumer) for h in hand_backs]
        calls += [scripts.retry(self.keys, r, self.consumer) for r in retries]
        replies = await self.link.scripts(calls)
        num_dead, num_back = len(dead_letters), len(hand_backs)
        return Settled(
            [scripts.dead_letter_reply(r) for r in replies[:num_dead]],
            [scripts.requeue_reply(r) for r in replies[num_dead : num_dead + num_back]],
            [scripts.retry_reply(r) for r in replies[num_dead + num_back :]],
        )

    # --- holding --------------------------------------------------------------

    async def renew(self, lane: int, entry_ids: Sequence[bytes]) -> list[bytes]:
        """Heartbeat the lease on ``entry_ids``; returns those whose lease was lost."""
        if not entry_ids:
            return []
        call = scripts.renew(self.keys, lane, self.consumer, list(entry_ids))
        [lost] = await self.link.scripts([call])
        return scripts.renew_reply(lost)

    async def publish_status(self, status: WorkerStatus) -> None:
        """The worker's heartbeat (see :mod:`fabric_worker.broker.heartbeat`)."""
        await self.link.call(lambda: publish(self.redis, self.keys, status))

    async def stream_lengths(self, lanes: Sequence[int]) -> dict[int, int]:
        """Entries in each lane's stream: queued or pending (completed ones are deleted)."""
        calls = [command("xlen", self.keys.jobs(lane)) for lane in lanes]
        values = await self.link.call(lambda: self.link.each(calls))
        return {lane: int(v) for lane, v in zip(lanes, values, strict=True)}

    async def backlogs(self, lanes: Sequence[int]) -> dict[int, int]:
        """Every lane's backlog counter in one round trip (GETs, not MGET: the
        counters of different lanes live in different cluster slots)."""
        calls = [command("get", self.keys.backlog(lane)) for lane in lanes]
        values = await self.link.call(lambda: self.link.each(calls))
        return {lane: int(v or 0) for lane, v in zip(lanes, values, strict=True)}
