"""Publishing and reading worker heartbeats (see :mod:`fabric_worker.status`)."""

from __future__ import annotations

import redis
import redis.asyncio

from fabric_worker.protocol import Keys
from fabric_worker.status import TTL_S, WorkerStatus


async def publish(client: redis.asyncio.Redis, keys: Keys, status: WorkerStatus) -> None:
    """Write the status hash with its TTL and touch the worker's score."""
    pipe = client.pipeline(transaction=False)
    key = keys.worker(status.consumer)
    pipe.hset(key, mapping=status.to_hash())
    pipe.expire(key, int(TTL_S) + 1)
    pipe.zadd(keys.workers, {status.consumer: status.heartbeat_at})
    await pipe.execute()


def read_one(client: redis.Redis, keys: Keys, consumer: str) -> WorkerStatus | None:
    raw = client.hgetall(keys.worker(consumer))
    return WorkerStatus.from_hash(raw) if raw else None


def read_all(
    client: redis.Redis, keys: Keys, *, forget_after_s: float = 3600.0
) -> list[WorkerStatus]:
    """Every worker whose status hash still exists, by name.

    Names whose hash expired more than ``forget_after_s`` ago are dropped from
    the set so it does not grow with every worker that ever ran.
    """
    names = [n.decode() for n in client.zrange(keys.workers, 0, -1)]
    if not names:
        return []
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.worker(name))
    statuses = [WorkerStatus.from_hash(raw) for raw in pipe.execute() if raw]
    now = client.time()
    client.zremrangebyscore(keys.workers, "-inf", now[0] - forget_after_s)
    return statuses
