"""Reading results in a consumer group of one's own.

Each reader group keeps its place: a second run continues where the first
stopped, and an entry read but not acked (the reader died) is read again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import redis
from redis.cluster import RedisCluster

from fabric_worker.broker.transient import is_transient, ride_out
from fabric_worker.wire.entries import EntryError, ResultEntry, decode_result
from fabric_worker.wire.keys import Keys

READ_COUNT = 1000


def ensure_result_groups(
    client: redis.Redis, keys: Keys, lanes: tuple[int, ...], group: str, *, from_start: bool
) -> None:
    """Create the reader group on every lane (from the first result).

    ``from_start`` recreates an existing group: rewinding it alone would keep
    its pending entries, which the reader reads first and then again when the
    rewound position reaches them, so each would be printed twice.
    """
    for lane in lanes:
        stream = keys.results(lane)
        if from_start:
            client.xgroup_destroy(stream, group)
        try:
            client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def read_results(
    client: redis.Redis,
    keys: Keys,
    lanes: tuple[int, ...],
    *,
    group: str,
    consumer: str = "reader",
    follow: bool = False,
    block_ms: int = 1000,
    outage_budget_s: float = 30.0,
    log: Callable[[str], None] | None = None,
) -> Iterator[ResultEntry | EntryError]:
    """Yield results (or an EntryError for an entry that is not a result).

    Each batch is acked after the caller has consumed it, so an interrupted
    reader sees its unacked batch again. Without ``follow`` it ends when every
    lane is drained. Transient Redis errors (a restart, a failover) are ridden
    out for ``outage_budget_s`` at a time; after one the reader starts again
    from its own pending entries, so a batch whose ack was lost comes again.
    """
    while True:
        try:
            yield from _read(client, keys, lanes, group, consumer, follow, block_ms)
            return
        except Exception as exc:
            if not is_transient(exc):
                raise
            # Wait for Redis to answer again (or raise past the budget).
            ride_out(client.ping, budget_s=outage_budget_s, log=log)


def _read(
    client: redis.Redis,
    keys: Keys,
    lanes: tuple[int, ...],
    group: str,
    consumer: str,
    follow: bool,
    block_ms: int,
) -> Iterator[ResultEntry | EntryError]:
    # First our own pending entries (id 0), then new ones (>).
    positions = {keys.results(lane): "0" for lane in lanes}

    def emit(stream: str, entries: list) -> Iterator[ResultEntry | EntryError]:  # type: ignore[type-arg]
        for _entry_id, fields in entries:
            if not fields:  # deleted while pending
                continue
            try:
                yield decode_result(fields)
            except EntryError as exc:
                yield exc
        if entries:
            client.xack(stream, group, *(entry_id for entry_id, _ in entries))

    while True:
        got_any = False
        for stream, position in list(positions.items()):
            reply = client.xreadgroup(group, consumer, {stream: position}, count=READ_COUNT)
            entries = reply[0][1] if reply else []
            if position == "0" and not entries:
                positions[stream] = position = ">"
                reply = client.xreadgroup(group, consumer, {stream: position}, count=READ_COUNT)
                entries = reply[0][1] if reply else []
            got_any = got_any or bool(entries)
            yield from emit(stream, entries)
        if got_any or "0" in positions.values():
            continue
        if not follow:
            return
        # Nothing anywhere: block until something arrives. One XREADGROUP may
        # name several streams only when they share a slot, so on a cluster
        # each lane gets its share of the wait in turn.
        if isinstance(client, RedisCluster):
            share = max(1, block_ms // len(positions))
            waits = [({stream: ">"}, share) for stream in positions]
        else:
            waits = [(dict.fromkeys(positions, ">"), block_ms)]
        for streams, block in waits:
            reply = client.xreadgroup(group, consumer, streams, count=READ_COUNT, block=block)
            for stream, entries in reply or []:
                yield from emit(stream.decode() if isinstance(stream, bytes) else stream, entries)
