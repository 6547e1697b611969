"""Golden bytes with fixed inputs: the wire format, the key names and the
Prometheus exposition, exactly, with nothing masked.

Unlike ``test_public_surface.py`` these import the modules that produce them;
when the modules move, only the imports here change.
"""

from __future__ import annotations

from array import array

from prometheus_client import CollectorRegistry, generate_latest

import producers
from fabric_worker.telemetry.prometheus import MetricsSnapshot, WorkerCollector
from fabric_worker.wire.entries import JobEntry, ResultEntry, encode_job, encode_result
from fabric_worker.wire.keys import Keys
from tests.golden.test_public_surface import check


def test_job_and_result_entry_bytes() -> None:
    job = JobEntry(
        id="job-1",
        tokens=array("I", [0, 1, 255, 65536, 4294967295]),
        max_new_tokens=16,
        prefix_class="sys",
        end_id=2,
        submitted_at=1700000000.125,
    )
    result = ResultEntry(
        id="job-1",
        tokens=[7, 8],
        finish_reason="stop",
        deliveries=2,
        worker="w-1",
        submitted_at=1700000000.125,
        started_at=1700000001.5,
        finished_at=1700000002.75,
        error=None,
    )
    lines = [f"job {k}: {v!r}" for k, v in encode_job(job).items()]
    lines += [f"result {k}: {v!r}" for k, v in encode_result(result).items()]
    check("entries/fixed.txt", "\n".join(lines) + "\n")


def test_key_names() -> None:
    keys = Keys("ns-1")
    names = [
        keys.config,
        keys.workers,
        keys.worker("w-1"),
        keys.jobs(64),
        keys.results(64),
        keys.dlq(64),
        keys.backlog(64),
        keys.job(64, "job-1"),
    ]
    check("key-names.txt", "\n".join(names) + "\n")


def test_prometheus_exposition() -> None:
    snapshot = MetricsSnapshot(
        jobs={"ok": 5, "duplicate": 1, "dead_lettered": 2, "fenced": 3},
        tokens={"prompt": 100, "generated": 50, "padded": 7},
        engine_busy_s=1.5,
        busy_fraction=0.25,
        padding_waste=0.125,
        prefix_hit_ratio=0.5,
        in_flight_tokens=42,
        admission_open=True,
        reclaims=4,
        lease_lost=3,
        levels={str(n): n * 10 for n in range(1, 9)},
    )
    registry = CollectorRegistry()
    registry.register(WorkerCollector(lambda: snapshot))
    check("metrics.txt", generate_latest(registry).decode())


def test_producer_api_names() -> None:
    check("producers-api.txt", "\n".join(sorted(producers.__all__)) + "\n")
