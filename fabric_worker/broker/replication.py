"""Writes that wait for replicas: script calls followed by ``WAIT`` on the same connection.

Redis replicates asynchronously: a master that dies can take its last writes
with it (a submit whose OK the producer already has, a completion that then
runs again). With ``replica_acks`` set in the fleet config, the submit and
complete scripts are followed by ``WAIT replica_acks timeout`` (``WAITAOF 0
replica_acks timeout`` where the server has it, 7.2+, so the replicas have also
written it to their AOF). ``WAIT`` counts the writes of its own connection, so
it is pipelined behind the scripts on one connection: on a single server or a
Sentinel master that is any pipeline; on a cluster, where the client spreads
commands over pooled connections, the calls are grouped by the node that
serves their slot and sent through a client pinned to that node.

The reply is the number of replicas that acknowledged every write of the call
(the least over the nodes written to). What falls short is the caller's
business: submit retries the round (dedupe makes that safe), a worker counts it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio
import redis.exceptions
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from fabric_worker.broker.scripts import Call


@dataclass(frozen=True, slots=True)
class AckedReplies:
    replies: list[Any]
    num_acked: int  # replicas that acknowledged every write (least over nodes)


# Asked once per writer by running a WAITAOF that waits for nothing: Redis 7.0
# answers "unknown command", and a user not granted it is refused; both mean WAIT
# (INFO would need a grant of its own).
_PROBE = ("WAITAOF", 0, 0, 0)


def wait_command(num_replicas: int, timeout_ms: int, *, has_waitaof: bool) -> tuple[Any, ...]:
    """The command that waits for ``num_replicas``: WAITAOF where the server
    has it (untested here: Debian's 7.0 has only WAIT), else WAIT."""
    if has_waitaof:
        return ("WAITAOF", 0, num_replicas, timeout_ms)
    return ("WAIT", num_replicas, timeout_ms)


def num_acked(reply: Any) -> int:
    """Replicas that acknowledged, from a WAIT (an integer) or WAITAOF reply
    (``[local, replicas]``)."""
    if isinstance(reply, list | tuple):
        return int(reply[1])
    return int(reply)


class SyncReplicaWriter:
    """Script calls plus WAIT for a synchronous client (single, Sentinel or cluster)."""

    def __init__(
        self,
        client: redis.Redis | RedisCluster,
        registered: Mapping[str, Any],
        num_replicas: int,
        timeout_ms: int,
    ):
        self.client = client
        self.registered = registered  # script name -> redis-py Script
        self.num_replicas = num_replicas
        self.timeout_ms = timeout_ms
        self._has_waitaof: bool | None = None

    def _wait(self) -> tuple[Any, ...]:
        if self._has_waitaof is None:
            try:
                self.client.execute_command(*_PROBE)
                self._has_waitaof = True
            except redis.ResponseError:
                self._has_waitaof = False
        return wait_command(self.num_replicas, self.timeout_ms, has_waitaof=self._has_waitaof)

    def run(self, calls: Sequence[Call]) -> AckedReplies:
        if not calls:
            return AckedReplies([], self.num_replicas)
        wait = self._wait()
        if not isinstance(self.client, RedisCluster):
            return self._on(self.client, list(range(len(calls))), calls, wait)
        groups: dict[str, list[int]] = {}
        nodes = {}
        for i, call in enumerate(calls):
            node = self.client.get_node_from_key(call.keys[0])
            groups.setdefault(node.name, []).append(i)
            nodes[node.name] = node
        replies: list[Any] = [None] * len(calls)
        least = self.num_replicas
        for name, indexes in groups.items():
            pinned = self.client.get_redis_connection(nodes[name])
            part = self._on(pinned, indexes, calls, wait)
            for i, reply in zip(indexes, part.replies, strict=True):
                replies[i] = reply
            least = min(least, part.num_acked)
        return AckedReplies(replies, least)

    def _on(
        self, client: redis.Redis, indexes: list[int], calls: Sequence[Call], wait: tuple[Any, ...]
    ) -> AckedReplies:
        pipe = client.pipeline(transaction=False)
        for i in indexes:
            # The Script object on a pipeline loads itself first where needed.
            script = self.registered[calls[i].script]
            script(keys=calls[i].keys, args=calls[i].args, client=pipe)
        pipe.execute_command(*wait)
        out = pipe.execute()
        return AckedReplies(list(out[:-1]), num_acked(out[-1]))


class AsyncReplicaWriter:
    """Script calls plus WAIT for an asyncio client (single, Sentinel or cluster)."""

    def __init__(
        self,
        client: redis.asyncio.Redis | AsyncRedisCluster,
        registered: Mapping[str, Any],
        num_replicas: int,
        timeout_ms: int,
    ):
        self.client = client
        self.registered = registered  # script name -> redis-py AsyncScript
        self.num_replicas = num_replicas
        self.timeout_ms = timeout_ms
        self._has_waitaof: bool | None = None
        self._pinned: dict[str, redis.asyncio.Redis] = {}

    async def _wait(self) -> tuple[Any, ...]:
        if self._has_waitaof is None:
            if isinstance(self.client, AsyncRedisCluster):
                await self.client.initialize()  # the slot map, before nodes are asked for
            try:
                await self.client.execute_command(*_PROBE)
                self._has_waitaof = True
            except redis.ResponseError:
                self._has_waitaof = False
        return wait_command(self.num_replicas, self.timeout_ms, has_waitaof=self._has_waitaof)

    def _pin(self, node: AsyncClusterNode) -> redis.asyncio.Redis:
        """A plain client on one cluster node, built from the node's own
        connection settings (credentials, TLS), so a pipeline stays on one
        connection of that node."""
        pinned = self._pinned.get(node.name)
        if pinned is None:
            pool = redis.asyncio.ConnectionPool(
                connection_class=node.connection_class, **node.connection_kwargs
            )
            # from_pool: the client owns the pool, so closing it closes the sockets.
            pinned = self._pinned[node.name] = redis.asyncio.Redis.from_pool(pool)
        return pinned

    async def run(self, calls: Sequence[Call]) -> AckedReplies:
        if not calls:
            return AckedReplies([], self.num_replicas)
        wait = await self._wait()
        if not isinstance(self.client, AsyncRedisCluster):
            return await self._on(self.client, list(range(len(calls))), calls, wait)
        groups: dict[str, list[int]] = {}
        nodes = {}
        for i, call in enumerate(calls):
            node = self.client.get_node_from_key(call.keys[0])
            groups.setdefault(node.name, []).append(i)
            nodes[node.name] = node
        replies: list[Any] = [None] * len(calls)
        least = self.num_replicas
        for name, indexes in groups.items():
            try:
                part = await self._on(self._pin(nodes[name]), indexes, calls, wait)
            except (redis.exceptions.AskError, redis.ConnectionError):
                # The slot moved or the node failed over: let the cluster
                # client learn the new map (a keyed read follows redirects),
                # drop the pinned client, and let the caller's retry resend.
                stale = self._pinned.pop(name, None)
                if stale is not None:
                    await stale.aclose()
                await self.client.exists(calls[indexes[0]].keys[0])
                raise
            for i, reply in zip(indexes, part.replies, strict=True):
                replies[i] = reply
            least = min(least, part.num_acked)
        return AckedReplies(replies, least)

    async def _on(
        self,
        client: redis.asyncio.Redis,
        indexes: list[int],
        calls: Sequence[Call],
        wait: tuple[Any, ...],
    ) -> AckedReplies:
        pipe = client.pipeline(transaction=False)
        for i in indexes:
            script = self.registered[calls[i].script]
            await script(keys=calls[i].keys, args=calls[i].args, client=pipe)
        pipe.execute_command(*wait)
        out = await pipe.execute()
        return AckedReplies(list(out[:-1]), num_acked(out[-1]))

    async def aclose(self) -> None:
        for pinned in self._pinned.values():
            await pinned.aclose()
        self._pinned.clear()
