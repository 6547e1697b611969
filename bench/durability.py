"""What a failover costs under asynchronous replication, with and without ``replica_acks``.

A Sentinel group (one master, two replicas, three sentinels; AOF always) takes
trace-shaped jobs from a producer that is still submitting, in chunks, when the
master is SIGKILLed (once ``kill_after_results`` results exist). Two workers
serve throughout. Once the producer is done and the lanes are drained, the
workers get SIGTERM. Two replicas, so that after the promotion one is left to
acknowledge writes.

Counted per run:
- lost: ids whose submit the producer saw succeed that never got a result (the
  dead master took the job with it);
- doubled: ids with more than one result in the surviving result streams;
- unacknowledged: ids whose submit call raised (not promised, so not lost);
- results/s over the whole run, the price of waiting for replicas.

Loss without acknowledgements is a race, so a run reports it and asserts
nothing about it; every run must keep exactly one result per surviving id.

``python -m bench.durability --runs 3`` alternates ``replica_acks`` 0 and 1.
"""

from __future__ import annotations

import collections
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import redis

from bench.common import machine_line, table
from bench.failover import (
    LANES,
    LEASE_S,
    NAMESPACE,
    VOCAB,
    Topology,
    count_results,
    failover_jobs,
    start_worker,
    wait_for,
)
from fabric_worker.broker.connection import connect
from fabric_worker.broker.namespace import init_namespace
from fabric_worker.broker.transient import ride_out
from fabric_worker.wire.entries import decode_result
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import GROUP, Keys
from producers import FabricClient

CHUNK = 50
AHEAD = 400  # jobs the producer may be ahead of the results


@dataclass
class DurabilityReport:
    replica_acks: int
    num_jobs: int
    num_acknowledged: int = 0
    num_unacknowledged: int = 0
    num_lost: int = 0
    num_doubled: int = 0
    num_results: int = 0
    num_submitted_at_kill: int = 0
    worker_exits: list[int | None] = field(default_factory=list)
    wall_s: float = 0.0
    submit_errors: list[str] = field(default_factory=list)

    @property
    def results_per_s(self) -> float:
        return self.num_results / self.wall_s if self.wall_s else 0.0

    def violations(self) -> list[str]:
        problems = []
        if self.num_doubled:
            problems.append(f"{self.num_doubled} ids with more than one result")
        if any(code != 0 for code in self.worker_exits):
            problems.append(f"worker exits {self.worker_exits}")
        return problems


def run_durability(
    replica_acks: int,
    *,
    num_jobs: int = 2000,
    kill_after_results: int = 300,
    directory: Path | None = None,
    seed: int = 0,
) -> DurabilityReport:
    started = time.monotonic()
    root = Path(directory or tempfile.mkdtemp(prefix="fabric-durability-"))
    report = DurabilityReport(replica_acks, num_jobs)
    topo = Topology("sentinel", root / "redis", num_replicas=2)
    topo.servers.start()
    workers = []
    keys = Keys(NAMESPACE)
    acknowledged: set[str] = set()
    try:
        config = FleetConfig(
            lanes=LANES,
            vocab_size=VOCAB,
            lease_s=LEASE_S,
            max_seq_len=2048,
            replica_acks=replica_acks,
            replica_ack_timeout_ms=1000,
        )
        with connect(topo.url) as setup:
            init_namespace(setup, keys, config)
        jobs = failover_jobs(num_jobs, seed)
        workers = [start_worker(topo.url, root, f"d{i}", burst=False) for i in range(2)]

        def produce() -> None:
            # Paced by the workers (at most AHEAD jobs beyond the results), so
            # the producer is still submitting when the master dies.
            producer = FabricClient.from_url(topo.url, NAMESPACE)
            watch = connect(topo.url)
            for i in range(0, len(jobs), CHUNK):
                wait_for(
                    lambda n=i: (
                        ride_out(lambda: count_results(watch, keys), budget_s=30) >= n - AHEAD
                    ),
                    300,
                    "the workers to keep up",
                )
                chunk = jobs[i : i + CHUNK]
                try:
                    submitted = producer.submit(chunk)
                except Exception as exc:  # counted, not promised: not a loss
                    report.num_unacknowledged += len(chunk)
                    report.submit_errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                acknowledged.update(submitted.ids)
            producer.close()
            watch.close()

        producing = threading.Thread(target=produce, name="producer")
        producing.start()
        client = connect(topo.url)
        wait_for(lambda: count_results(client, keys) >= kill_after_results, 300, "results")
        client.close()
        topo.busiest_master().kill()
        report.num_submitted_at_kill = len(acknowledged)
        producing.join(600)
        with connect(topo.url) as check:

            def drained() -> bool:
                return ride_out(lambda: _drained(check), budget_s=30)

            def _drained(check: redis.Redis) -> bool:
                return all(
                    int(check.xlen(keys.jobs(lane))) == 0
                    and int(check.xpending(keys.jobs(lane), GROUP)["pending"]) == 0
                    for lane in LANES
                )

            wait_for(drained, 300, "the lanes to drain")
            report.wall_s = time.monotonic() - started
            # Each worker must still be up (None: it exited by itself) and stop cleanly.
            was_up = [process.poll() is None for process, _ in workers]
            for process, _ in workers:
                process.send_signal(signal.SIGTERM)
            exits = [process.wait(60) for process, _ in workers]
            report.worker_exits = [
                code if up else None for code, up in zip(exits, was_up, strict=True)
            ]
            seen: collections.Counter[str] = collections.Counter()
            for lane in LANES:
                for _, fields in check.xrange(keys.results(lane)):
                    seen[decode_result(fields).id] += 1
        report.num_acknowledged = len(acknowledged)
        report.num_results = sum(seen.values())
        report.num_lost = sum(1 for job_id in acknowledged if job_id not in seen)
        report.num_doubled = sum(1 for count in seen.values() if count > 1)
    finally:
        for process, _ in workers:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        topo.servers.close()
    return report


@click.command()
@click.option("--runs", type=int, default=3, show_default=True, help="Runs per setting.")
@click.option("--jobs", "num_jobs", type=int, default=2000, show_default=True)
def main(runs: int, num_jobs: int) -> None:
    """Alternate replica_acks 0 and 1; one row per run."""
    rows = []
    num_bad = 0
    for run in range(runs):
        for acks in (0, 1):
            r = run_durability(acks, num_jobs=num_jobs, seed=run)
            num_bad += bool(r.violations())
            rows.append(
                [
                    acks,
                    run + 1,
                    r.num_acknowledged,
                    r.num_unacknowledged,
                    r.num_lost,
                    r.num_doubled,
                    f"{r.results_per_s:.0f}",
                    r.worker_exits,
                    "; ".join(r.violations()) or "ok",
                ]
            )
            click.echo(f"replica_acks {acks} run {run + 1}: {rows[-1]}", err=True)
    click.echo(machine_line())
    headers = ["replica_acks", "run", "acked", "unacked", "lost", "doubled", "results/s"]
    click.echo(table([*headers, "worker exits", "verdict"], rows))
    sys.exit(1 if num_bad else 0)


if __name__ == "__main__":
    main()
