"""Heartbeat status and metrics made from a plain snapshot, no worker needed."""

from __future__ import annotations

from engines.contract import EngineStats
from fabric_worker.core.counts import Counts
from fabric_worker.telemetry.snapshot import Telemetry, WorkerSnapshot


def snapshot(**kw: object) -> WorkerSnapshot:
    fields: dict[str, object] = {
        "consumer": "w1",
        "state": "running",
        "counts": Counts(completed=5, duplicates=1, dead_lettered=2, reclaimed=4, lease_lost=3),
        "engine": EngineStats(busy_s=1.5, prompt_tokens=10, generated_tokens=20),
        "in_flight_tokens": 42,
        "queued_tokens": 7,
        "is_admission_open": False,
        "kv_cache_tokens": 1000,
        "max_num_tokens": 100,
        "levels": {"1_submit_fullest_lane_tokens": 9, "6_in_flight_tokens": 42},
    }
    return WorkerSnapshot(**(fields | kw))  # type: ignore[arg-type]


def test_status_carries_the_counts_and_limits() -> None:
    status = Telemetry().status(snapshot())
    assert (status.consumer, status.state) == ("w1", "running")
    assert (status.completed, status.duplicates, status.dead_lettered) == (5, 1, 2)
    assert (status.reclaimed, status.lease_lost) == (4, 3)
    assert (status.in_flight_tokens, status.queued_tokens) == (42, 7)
    assert (status.kv_cache_tokens, status.max_num_tokens) == (1000, 100)
    assert 0.0 <= status.busy_fraction <= 1.0


def test_metrics_name_a_lost_lease_by_its_public_label() -> None:
    metrics = Telemetry().metrics(snapshot())
    assert metrics.jobs == {"ok": 5, "duplicate": 1, "dead_lettered": 2, "fenced": 3}
    assert (metrics.lease_lost, metrics.reclaims) == (3, 4)
    assert metrics.tokens == {"prompt": 10, "generated": 20, "padded": 0}
    assert (metrics.in_flight_tokens, metrics.admission_open) == (42, False)
    assert metrics.levels == {"1": 9, "6": 42}
