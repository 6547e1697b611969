"""Publishing and reading worker heartbeats (see :mod:`fabric_worker.telemetry.status`)."""

from __future__ import annotations

import redis
import redis.asyncio

from fabric_worker.telemetry.status import TTL_S, WorkerStatus
from fabric_worker.wire.keys import Keys

FORGET_AFTER_S = 3600.0


async def publish(client: redis.asyncio.Redis, keys: Keys, status: WorkerStatus) -> None:
    """Write the status hash with its TTL and touch the worker's score.

    Workers also forget names silent for an hour, so the set does not grow with
    every worker that ever ran, and readers stay read-only. Four single-key
    commands, not a pipeline: on a cluster these keys live in different slots.
    """
    key = keys.worker(status.consumer)
    await client.hset(key, mapping=status.to_hash())
    await client.expire(key, int(TTL_S) + 1)
    await client.zadd(keys.workers, {status.consumer: status.heartbeat_at})
    await client.zremrangebyscore(keys.workers, "-inf", status.heartbeat_at - FORGET_AFTER_S)


def read_one(client: redis.Redis, keys: Keys, consumer: str) -> WorkerStatus | None:
    raw = client.hgetall(keys.worker(consumer))
    return WorkerStatus.from_hash(raw) if raw else None


def read_all(client: redis.Redis, keys: Keys) -> list[WorkerStatus]:
    """Every worker whose status hash still exists (read-only)."""
    names = [n.decode() for n in client.zrange(keys.workers, 0, -1)]
    if not names:
        return []
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.worker(name))
    return [WorkerStatus.from_hash(raw) for raw in pipe.execute() if raw]


def backlogs(client: redis.Redis, keys: Keys, lanes: tuple[int, ...]) -> dict[int, int]:
    """Every lane's backlog counter (GETs in a pipeline: MGET cannot span cluster slots)."""
    pipe = client.pipeline(transaction=False)
    for lane in lanes:
        pipe.get(keys.backlog(lane))
    return {lane: int(v or 0) for lane, v in zip(lanes, pipe.execute(), strict=True)}
