"""Trimming results streams past the retention, by the server's clock.

``XTRIM key MINID <cutoff>`` (Redis 7.0) where the cutoff is the server's
``TIME`` less the retention: entry ids are the server's milliseconds, so the
worker's own clock, which may be off, never decides what goes. XTRIM and TIME
carry no ``denyoom`` flag: a Redis at maxmemory still runs them, and trimming
is how it gets memory back.

Dead-letter streams are not trimmed: a dead letter waits for a person to read
and replay it, however long that takes; ``fabric dlq purge`` removes them.
Job streams are never trimmed (DESIGN section 2). On a cluster the cutoff
comes from one node's clock (redis-py sends TIME to its default node) and
each lane is trimmed on the node that holds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fabric_worker.broker.link import Link, command
from fabric_worker.core.retention import StreamId, trim_cutoff
from fabric_worker.wire.keys import Keys


@dataclass(frozen=True, slots=True)
class Trimmed:
    """What one trim did: the cutoff used and the results removed per lane."""

    cutoff: StreamId
    num_removed: dict[int, int]

    @property
    def num_removed_total(self) -> int:
        return sum(self.num_removed.values())


def server_time_ms(reply: Any) -> int:
    """TIME's ``(seconds, microseconds)`` as milliseconds."""
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) // 1000


def _xtrim(keys: Keys, lane: int, cutoff: StreamId) -> Any:
    # approximate=False: exact MINID, no "~" (see core.retention).
    return command("xtrim", keys.results(lane), minid=str(cutoff), approximate=False)


def trim_results(client: Any, keys: Keys, lanes: Sequence[int], retention_s: int) -> Trimmed:
    """Trim every lane's results now (synchronous client): ``fabric trim``."""
    cutoff = trim_cutoff(server_time_ms(client.time()), retention_s)
    pipe = client.pipeline(transaction=False)
    for lane in lanes:
        _xtrim(keys, lane, cutoff)(pipe)
    removed = pipe.execute()
    return Trimmed(cutoff, {lane: int(n) for lane, n in zip(lanes, removed, strict=True)})


async def trim_results_async(
    link: Link, keys: Keys, lanes: Sequence[int], retention_s: int
) -> Trimmed:
    """The same through a worker's link (retried through an outage, like any call).

    Two round trips: TIME first, because on a cluster the lanes live on
    different nodes and a pipeline cannot carry one clock reading to all.
    """
    now_ms = server_time_ms(await link.call(lambda: link.redis.time()))
    cutoff = trim_cutoff(now_ms, retention_s)
    calls = [_xtrim(keys, lane, cutoff) for lane in lanes]
    removed = await link.call(lambda: link.each(calls))
    return Trimmed(cutoff, {lane: int(n) for lane, n in zip(lanes, removed, strict=True)})
