"""What a worker tells the fleet: heartbeats in Redis and Prometheus metrics.

Both are read off the running :class:`~fabric_worker.worker.Worker`; nothing is
counted twice. Rates (busy fraction, tokens/s) are over the last heartbeat
interval.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from engines.contract import EngineStats
from fabric_worker.telemetry.prometheus import MetricsSnapshot
from fabric_worker.telemetry.rates import delta, hit_rate, ratio
from fabric_worker.telemetry.status import WorkerStatus

if TYPE_CHECKING:
    from fabric_worker.worker.service import Worker


class Telemetry:
    """Heartbeat status and metrics snapshots of one worker."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._last_s = time.monotonic()
        self._last_stats = EngineStats()
        self._last_completed = 0
        self._rates = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # busy, tokens/s, gen/s, jobs/s, pad, hits

    def _update_rates(self) -> None:
        now = time.monotonic()
        wall = now - self._last_s
        if wall < 0.5:  # too short a window to say anything; keep the last rates
            return
        stats = self.worker.engine_stats
        d = delta(stats, self._last_stats)
        completed = self.worker.meter.completed
        self._rates = (
            min(1.0, ratio(d.busy_s, wall)),
            ratio(d.prompt_tokens + d.generated_tokens, wall),
            ratio(d.generated_tokens, wall),
            ratio(completed - self._last_completed, wall),
            ratio(d.padded_tokens, d.computed_tokens),
            hit_rate(d),
        )
        self._last_s, self._last_stats, self._last_completed = now, stats, completed

    def status(self) -> WorkerStatus:
        """The heartbeat: call once per heartbeat interval (it advances the rates)."""
        self._update_rates()
        w = self.worker
        busy, tokens_per_s, generated_per_s, jobs_per_s, _, _ = self._rates
        capacity = w.capacity
        return WorkerStatus(
            consumer=w.options.consumer,
            state=w.state.value,
            heartbeat_at=time.time(),
            busy_fraction=round(busy, 4),
            tokens_per_s=round(tokens_per_s, 1),
            generated_per_s=round(generated_per_s, 1),
            jobs_per_s=round(jobs_per_s, 2),
            in_flight_tokens=w.budget.in_flight_tokens if w.budget else 0,
            queued_tokens=w.queue.queued_tokens if w.queue else 0,
            completed=w.meter.completed,
            duplicates=w.meter.duplicates,
            dead_lettered=w.meter.dead_lettered,
            reclaimed=w.meter.reclaimed,
            lease_lost=w.meter.lease_lost,
            kv_cache_tokens=capacity.kv_cache_tokens if capacity else 0,
            max_num_tokens=capacity.max_num_tokens if capacity else 0,
            gpu=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            pid=os.getpid(),
        )

    def snapshot(self) -> MetricsSnapshot:
        """For a Prometheus scrape (from the metrics server's thread: reads only)."""
        w = self.worker
        stats = w.engine_stats
        busy, _, _, _, padding, hits = self._rates
        return MetricsSnapshot(
            jobs={
                "ok": w.meter.completed,
                "duplicate": w.meter.duplicates,
                "dead_lettered": w.meter.dead_lettered,
                "fenced": w.meter.lease_lost,
            },
            tokens={
                "prompt": stats.prompt_tokens,
                "generated": stats.generated_tokens,
                "padded": stats.padded_tokens,
            },
            engine_busy_s=stats.busy_s,
            busy_fraction=busy,
            padding_waste=padding,
            prefix_hit_ratio=hits,
            in_flight_tokens=w.budget.in_flight_tokens if w.budget else 0,
            admission_open=bool(w.budget and w.budget.is_open),
            reclaims=w.meter.reclaimed,
            lease_losses=w.meter.lease_lost,
            levels={name.split("_", 1)[0]: depth for name, depth in w.levels().items()},
        )
