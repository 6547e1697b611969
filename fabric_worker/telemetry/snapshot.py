"""What a worker tells the fleet: its heartbeat status and its metrics, both
made from a plain :class:`WorkerSnapshot` the worker hands over. Rates (busy
fraction, tokens/s) are over the last heartbeat interval."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from engines.contract import EngineStats
from fabric_worker.core.counts import Counts
from fabric_worker.telemetry.prometheus import MetricsSnapshot
from fabric_worker.telemetry.rates import RateWindow
from fabric_worker.telemetry.status import WorkerStatus


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    """One worker's figures at one moment."""

    consumer: str
    state: str  # WorkerState value
    counts: Counts
    engine: EngineStats
    in_flight_tokens: int = 0
    queued_tokens: int = 0
    is_admission_open: bool = True
    kv_cache_tokens: int = 0
    max_num_tokens: int = 0
    levels: Mapping[str, int] = field(default_factory=dict)  # "<n>_<name>" -> depth
    replica_shortfalls: int = 0  # completion batches short of replica_acks


class Telemetry:
    """Heartbeat statuses and metrics snapshots of one worker."""

    def __init__(self) -> None:
        self._window = RateWindow(min_window_s=0.5)  # shorter says nothing: keep the last

    def status(self, snap: WorkerSnapshot) -> WorkerStatus:
        """The heartbeat: call once per heartbeat interval (it advances the rates)."""
        rates = self._window.advance(snap.engine, snap.counts.completed)
        c = snap.counts
        return WorkerStatus(
            consumer=snap.consumer,
            state=snap.state,
            heartbeat_at=time.time(),
            busy_fraction=round(min(1.0, rates.busy_fraction), 4),
            tokens_per_s=round(rates.tokens_per_s, 1),
            generated_per_s=round(rates.generated_per_s, 1),
            jobs_per_s=round(rates.jobs_per_s, 2),
            in_flight_tokens=snap.in_flight_tokens,
            queued_tokens=snap.queued_tokens,
            completed=c.completed,
            duplicates=c.duplicates,
            dead_lettered=c.dead_lettered,
            reclaimed=c.reclaimed,
            lease_lost=c.lease_lost,
            kv_cache_tokens=snap.kv_cache_tokens,
            max_num_tokens=snap.max_num_tokens,
            gpu=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            pid=os.getpid(),
        )

    def metrics(self, snap: WorkerSnapshot) -> MetricsSnapshot:
        """For a Prometheus scrape (from the metrics server's thread: reads only)."""
        rates = self._window.rates
        c, stats = snap.counts, snap.engine
        return MetricsSnapshot(
            jobs={
                "ok": c.completed,
                "duplicate": c.duplicates,
                "dead_lettered": c.dead_lettered,
                "fenced": c.lease_lost,  # the public label of a lost lease
            },
            tokens={
                "prompt": stats.prompt_tokens,
                "generated": stats.generated_tokens,
                "padded": stats.padded_tokens,
            },
            engine_busy_s=stats.busy_s,
            busy_fraction=min(1.0, rates.busy_fraction),
            padding_waste=rates.padding_waste,
            prefix_hit_ratio=rates.prefix_hit_ratio,
            in_flight_tokens=snap.in_flight_tokens,
            admission_open=snap.is_admission_open,
            reclaims=c.reclaimed,
            lease_lost=c.lease_lost,
            replica_shortfalls=snap.replica_shortfalls,
            levels={name.split("_", 1)[0]: depth for name, depth in snap.levels.items()},
        )
