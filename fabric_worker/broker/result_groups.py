"""Reader groups on the results streams, against the retention: who misses results.

Results are trimmed once they are older than the retention, read or not, so a
reader group that falls that far behind loses results for good. ``fabric
inspect`` names such a group instead of leaving it to find out:

- *missed*: results were trimmed that it never read. Results leave their
  stream only by trimming, oldest first, so the number gone is XINFO STREAM's
  ``entries-added`` less its ``length`` (Redis 7.0+; its
  ``max-deleted-entry-id`` is not moved by XTRIM on 7.0), and the group missed
  some when it has read fewer than that (XINFO GROUPS ``entries-read``). Where
  Redis does not know ``entries-read`` (a group that never read), when its
  position is before the first entry left;
- *behind*: its oldest unread result is already older than the retention, so
  the next trim removes it unread.

Both are judged by the server's clock (TIME), as trimming is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import redis

from fabric_worker.broker import text
from fabric_worker.broker.trim import server_time_ms
from fabric_worker.core.retention import StreamId, trim_cutoff
from fabric_worker.wire.keys import Keys


@dataclass(frozen=True, slots=True)
class ReaderGroup:
    lane: int
    name: str
    last_delivered_id: str
    pending: int
    lag: int | None  # Redis's own; None after trimming past the group's position
    has_missed: bool
    is_behind: bool

    @property
    def is_lagging(self) -> bool:
        """Lags past the retention: it has lost results, or is about to."""
        return self.has_missed or self.is_behind

    def describe(self) -> str:
        what = (
            "results were trimmed before it read them"
            if self.has_missed
            else "its oldest unread result is past the retention and goes at the next trim"
        )
        return (
            f"results group {self.name!r} of lane {self.lane} lags past the retention: "
            f"{what} (position {self.last_delivered_id})"
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "is_lagging": self.is_lagging}


def _field(info: dict[Any, Any], name: str) -> Any:
    return info.get(name, info.get(name.encode()))


def reader_groups(
    client: Any, keys: Keys, lanes: Sequence[int], retention_s: int
) -> list[ReaderGroup]:
    """Every reader group of every lane's results, in two pipelined round trips
    (and TIME). A lane without a results stream has none."""
    cutoff = trim_cutoff(server_time_ms(client.time()), retention_s)
    pipe = client.pipeline(transaction=False)
    for lane in lanes:
        pipe.xinfo_groups(keys.results(lane))
        pipe.xinfo_stream(keys.results(lane))
    replies = pipe.execute(raise_on_error=False)
    found: list[tuple[int, dict[Any, Any], dict[Any, Any]]] = []
    for i, lane in enumerate(lanes):
        groups, stream = replies[2 * i], replies[2 * i + 1]
        if isinstance(groups, redis.ResponseError) or isinstance(stream, redis.ResponseError):
            continue  # no such stream yet: no results, no readers
        found += [(lane, group, stream) for group in groups]
    pipe = client.pipeline(transaction=False)
    for lane, group, _ in found:
        pipe.xrange(
            keys.results(lane), f"({text(_field(group, 'last-delivered-id'))}", "+", count=1
        )
    first_unread = pipe.execute() if found else []
    out = []
    for (lane, group, stream), unread in zip(found, first_unread, strict=True):
        position = StreamId.parse(text(_field(group, "last-delivered-id")))
        lag = _field(group, "lag")
        out.append(
            ReaderGroup(
                lane=lane,
                name=text(_field(group, "name")),
                last_delivered_id=str(position),
                pending=int(_field(group, "pending") or 0),
                lag=None if lag is None else int(lag),
                has_missed=_has_missed(stream, group, position),
                is_behind=bool(unread) and StreamId.parse(unread[0][0]) < cutoff,
            )
        )
    return out


def _has_missed(stream: dict[Any, Any], group: dict[Any, Any], position: StreamId) -> bool:
    num_trimmed = int(_field(stream, "entries-added") or 0) - int(_field(stream, "length") or 0)
    if num_trimmed <= 0:
        return False
    entries_read = _field(group, "entries-read")
    if entries_read is not None:
        return int(entries_read) < num_trimmed
    first = _field(stream, "recorded-first-entry-id")
    return first is not None and position < StreamId.parse(text(first))
