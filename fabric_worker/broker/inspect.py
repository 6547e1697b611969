"""Per-lane figures for operators: ``fabric inspect`` and ``fabric top``."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import redis

from fabric_worker.broker import text
from fabric_worker.wire.keys import GROUP, Keys


@dataclass(frozen=True, slots=True)
class ConsumerView:
    name: str
    pending: int
    idle_ms: int


@dataclass(frozen=True, slots=True)
class LaneView:
    """One lane as an operator sees it.

    ``queued`` counts entries not yet delivered to any worker (stream length
    minus pending: completed entries are deleted). ``lag`` is Redis's own group
    lag, which is None after deletions past the group's position.
    """

    lane: int
    queued: int
    in_flight: int
    backlog_tokens: int
    lag: int | None
    consumers: list[ConsumerView]
    dead: int
    results: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _field(info: dict[Any, Any], name: str) -> Any:
    return info.get(name, info.get(name.encode()))


def inspect_lanes(client: redis.Redis, keys: Keys, lanes: tuple[int, ...]) -> list[LaneView]:
    """Read every lane's figures in one pipelined round trip."""
    pipe = client.pipeline(transaction=False)
    for lane in lanes:
        pipe.xlen(keys.jobs(lane))
        pipe.xinfo_groups(keys.jobs(lane))
        pipe.xinfo_consumers(keys.jobs(lane), GROUP)
        pipe.get(keys.backlog(lane))
        pipe.xlen(keys.dlq(lane))
        pipe.xlen(keys.results(lane))
    replies = pipe.execute(raise_on_error=False)
    views = []
    for i, lane in enumerate(lanes):
        length, groups, consumers, backlog, dead, results = replies[6 * i : 6 * i + 6]
        group: dict[Any, Any] = {}
        if isinstance(groups, list):
            for g in groups:
                if text(_field(g, "name")) == GROUP:
                    group = g
        pending = int(_field(group, "pending") or 0)
        lag = _field(group, "lag")
        views.append(
            LaneView(
                lane=lane,
                queued=max(int(length or 0) - pending, 0),
                in_flight=pending,
                backlog_tokens=int(backlog or 0),
                lag=None if lag is None else int(lag),
                consumers=[
                    ConsumerView(
                        name=text(_field(c, "name")),
                        pending=int(_field(c, "pending")),
                        idle_ms=int(_field(c, "idle")),
                    )
                    for c in (consumers if isinstance(consumers, list) else [])
                ],
                dead=int(dead or 0) if not isinstance(dead, Exception) else 0,
                results=int(results or 0) if not isinstance(results, Exception) else 0,
            )
        )
    return views


def format_table(views: list[LaneView]) -> str:
    """A fixed-width table, one row per lane, plus a totals row."""
    header = (
        "lane",
        "queued",
        "in_flight",
        "backlog_tokens",
        "lag",
        "consumers",
        "dead",
        "results",
    )
    rows = [header]
    for v in views:
        consumers = ", ".join(
            f"{c.name} ({c.pending}, idle {c.idle_ms / 1000:.1f}s)" for c in v.consumers
        )
        rows.append(
            (
                str(v.lane),
                str(v.queued),
                str(v.in_flight),
                str(v.backlog_tokens),
                "-" if v.lag is None else str(v.lag),
                consumers or "-",
                str(v.dead),
                str(v.results),
            )
        )
    rows.append(
        (
            "total",
            str(sum(v.queued for v in views)),
            str(sum(v.in_flight for v in views)),
            str(sum(v.backlog_tokens for v in views)),
            "",
            str(sum(len(v.consumers) for v in views)),
            str(sum(v.dead for v in views)),
            str(sum(v.results for v in views)),
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for r in rows:
        cells = [r[i].rjust(widths[i]) if i != 5 else r[i].ljust(widths[i]) for i in range(len(r))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
