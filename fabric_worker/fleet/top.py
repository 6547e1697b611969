"""``fabric top``: lanes and workers at a glance, from Redis alone."""

from __future__ import annotations

import time

from rich.console import Group
from rich.table import Table
from rich.text import Text

from fabric_worker.broker.client import SyncRedis
from fabric_worker.broker.heartbeat import read_all
from fabric_worker.broker.inspect import inspect_lanes
from fabric_worker.broker.memory import memory
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import Keys


def render(client: SyncRedis, keys: Keys, config: FleetConfig) -> Group:
    """One screen: Redis memory, a lane table and a worker table."""
    usage = memory(client)
    header = Text(f"Redis memory: {usage.describe() if usage else 'unknown (INFO denied)'}")
    lanes = Table(title=f"lanes of {keys.namespace!r}", title_justify="left")
    for name in ("lane", "queued", "in flight", "backlog tokens", "lag", "dead letters", "results"):
        lanes.add_column(name, justify="right")
    for v in inspect_lanes(client, keys, config.lanes):
        lanes.add_row(
            str(v.lane),
            str(v.queued),
            str(v.in_flight),
            f"{v.backlog_tokens:,}",
            "-" if v.lag is None else str(v.lag),
            str(v.dead),
            str(v.results),
        )
    workers = Table(title="workers", title_justify="left")
    for name in ("worker", "status", "busy", "tokens/s", "in-flight tokens", "last heartbeat"):
        workers.add_column(name, justify="left" if name in ("worker", "status") else "right")
    now = time.time()
    statuses = read_all(client, keys)
    for s in sorted(statuses, key=lambda s: s.consumer):
        state = s.state if s.is_fresh(now) else f"{s.state} (silent)"
        workers.add_row(
            s.consumer,
            state,
            f"{s.busy_fraction:.2f}",
            f"{s.tokens_per_s:,.0f}",
            f"{s.in_flight_tokens:,}",
            f"{now - s.heartbeat_at:.1f} s ago",
        )
    if not statuses:
        workers.add_row("(none)", "", "", "", "", "")
    return Group(header, lanes, workers)
