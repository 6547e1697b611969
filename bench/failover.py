"""``make chaos-failover``: workers ride out a Redis failover, exactly once.

One scenario, on either topology:

- ``cluster``: a Redis Cluster of three masters, each with one replica (node
  timeout 2 s, AOF ``appendfsync always``);
- ``sentinel``: one master, one replica and three sentinels (down after 1 s).

Trace-shaped jobs (prompt and output lengths from the production trace sample,
capped to the lanes) are submitted, two ``fabric worker --burst`` processes on
the simulated engine (wall clock) serve them, and once ``kill_after_results``
results exist (a count, not a time) the master holding the most keys is
SIGKILLed. Its replica is promoted; the workers must ride the failover out
within their outage budget. The driver then checks: every worker exited 0 (a
worker that exits during a failover loses the capacity and holds its leases
until they expire), every submitted id has exactly one result, nothing is
pending. Replication is asynchronous, so the dead master may take its last
writes with it: a completion lost that way runs again (the job-state key it
wrote is gone with it) and the result stream of the promoted replica still
holds one result per id, which is what is checked.

``python -m bench.failover --topology cluster --runs 10`` repeats the run and
prints one line per run (worker exits, missing, doubled).
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import click
import redis

from bench.trace import load_trace
from fabric_worker.broker.connection import connect
from fabric_worker.broker.namespace import init_namespace
from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.dev.replicated import RedisClusterServers, RedisSentinelServers
from fabric_worker.wire.entries import decode_result
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import GROUP, Keys
from producers import FabricClient, Job

LANES = (64, 128, 256, 512, 1024)
VOCAB = 32_000
LEASE_S = 5.0
OUTAGE_BUDGET_S = 30.0  # the worker's default: a failover takes 2 to 5 s here
MANIFEST = "sim-small.json"
NAMESPACE = "failover"


def failover_jobs(num_jobs: int, seed: int = 0) -> list[Job]:
    """Jobs shaped like the trace's rows: its prompt and output lengths, capped
    to the largest lane and to 200 new tokens (so a run takes seconds)."""
    rng = random.Random(seed)
    rows = load_trace(num_jobs)
    return [
        Job(
            tokens=[rng.randrange(1, VOCAB) for _ in range(min(row.prompt_tokens, LANES[-1]))],
            max_new_tokens=min(row.output_tokens, 200),
            id=f"f{i}",
        )
        for i, row in enumerate(rows)
    ]


@dataclass
class FailoverReport:
    topology: str
    num_jobs: int
    num_results_at_kill: int = 0
    killed_port: int = 0
    worker_exits: list[int | None] = field(default_factory=list)
    num_missing: int = 0
    num_doubled: int = 0
    num_pending: int = 0
    wall_s: float = 0.0
    worker_logs: list[str] = field(default_factory=list)

    def violations(self) -> list[str]:
        problems = []
        if any(code != 0 for code in self.worker_exits):
            problems.append(f"worker exits {self.worker_exits}")
        if self.num_missing:
            problems.append(f"{self.num_missing} ids without a result")
        if self.num_doubled:
            problems.append(f"{self.num_doubled} ids with more than one result")
        if self.num_pending:
            problems.append(f"{self.num_pending} entries still pending")
        return problems

    def line(self) -> str:
        return (
            f"{self.topology}: {self.num_jobs} jobs, master :{self.killed_port} killed at "
            f"{self.num_results_at_kill} results; worker exits {self.worker_exits}, "
            f"missing {self.num_missing}, doubled {self.num_doubled}, "
            f"pending {self.num_pending}, {self.wall_s:.1f} s"
        )


class Topology:
    """What the scenario needs of a replicated Redis: a URL, its data nodes and
    which of them is the busiest master now."""

    def __init__(self, kind: str, directory: Path, num_replicas: int = 1) -> None:
        self.kind = kind
        self.servers: RedisClusterServers | RedisSentinelServers
        if kind == "cluster":
            self.servers = RedisClusterServers(
                directory, num_replicas=num_replicas, node_timeout_ms=2000, appendonly=True
            )
        elif kind == "sentinel":
            self.servers = RedisSentinelServers(
                directory, num_replicas=num_replicas, down_after_ms=1000, appendonly=True
            )
        else:
            raise ValueError(f"topology must be cluster or sentinel, not {kind!r}")

    @property
    def url(self) -> str:
        return self.servers.url

    def busiest_master(self) -> RedisServer:
        return self.servers.busiest_master()


def start_worker(
    url: str, log_dir: Path, name: str, *, burst: bool = True
) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = log_dir / f"{name}.log"
    manifest = resources.files("engines").joinpath("manifests", MANIFEST)
    env = {**os.environ, "FABRIC_REDIS_URL": url, "FABRIC_NAMESPACE": NAMESPACE}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fabric_worker",
                "worker",
                "--manifest",
                str(manifest),
                "--consumer",
                name,
                *(["--burst"] if burst else []),
                "--log-every-s",
                "1",
                "--outage-budget-s",
                str(OUTAGE_BUDGET_S),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return process, log_path


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def count_results(client: redis.Redis, keys: Keys) -> int:
    return sum(int(client.xlen(keys.results(lane))) for lane in LANES)


def run_failover(
    topology: str,
    *,
    num_jobs: int = 3000,
    kill_after_results: int = 800,
    num_workers: int = 2,
    directory: Path | None = None,
    seed: int = 0,
    before_kill: Callable[[str], None] | None = None,
    after_kill: Callable[[str], None] | None = None,
    after_workers: Callable[[str], None] | None = None,
) -> FailoverReport:
    """One failover run; see the module docstring. ``before_kill``,
    ``after_kill`` and ``after_workers`` (once every worker has exited, while
    the servers still run) are called with the URL: a test starts and checks
    its own readers and probes there."""
    started = time.monotonic()
    root = Path(directory or tempfile.mkdtemp(prefix="fabric-failover-"))
    report = FailoverReport(topology, num_jobs)
    topo = Topology(topology, root / "redis")
    topo.servers.start()
    workers: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        keys = Keys(NAMESPACE)
        config = FleetConfig(lanes=LANES, vocab_size=VOCAB, lease_s=LEASE_S, max_seq_len=2048)
        with connect(topo.url) as setup:
            init_namespace(setup, keys, config)
        jobs = failover_jobs(num_jobs, seed)
        producer = FabricClient.from_url(topo.url, NAMESPACE)
        producer.submit(jobs)
        producer.close()
        workers = [start_worker(topo.url, root, f"w{i}") for i in range(num_workers)]
        client = connect(topo.url)
        wait_for(
            lambda: count_results(client, keys) >= kill_after_results,
            300,
            f"{kill_after_results} results",
        )
        report.num_results_at_kill = count_results(client, keys)
        client.close()
        victim = topo.busiest_master()
        report.killed_port = victim.port
        if before_kill is not None:
            before_kill(topo.url)
        victim.kill()
        if after_kill is not None:
            after_kill(topo.url)
        for process, _ in workers:
            try:
                report.worker_exits.append(process.wait(600))
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                report.worker_exits.append(None)
        report.worker_logs = [path.read_text(errors="replace")[-4000:] for _, path in workers]
        if after_workers is not None:
            after_workers(topo.url)
        with connect(topo.url) as check:
            seen: collections.Counter[str] = collections.Counter()
            for lane in LANES:
                for _, fields in check.xrange(keys.results(lane)):
                    seen[decode_result(fields).id] += 1
                report.num_pending += int(check.xpending(keys.jobs(lane), GROUP)["pending"])
        report.num_missing = sum(1 for job in jobs if job.id not in seen)
        report.num_doubled = sum(1 for count in seen.values() if count > 1)
    finally:
        for process, _ in workers:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        topo.servers.close()
    report.wall_s = time.monotonic() - started
    return report


@click.command()
@click.option("--topology", type=click.Choice(["cluster", "sentinel"]), default="cluster")
@click.option("--runs", type=int, default=10, show_default=True)
@click.option("--jobs", "num_jobs", type=int, default=3000, show_default=True)
@click.option("--kill-after-results", type=int, default=800, show_default=True)
def main(topology: str, runs: int, num_jobs: int, kill_after_results: int) -> None:
    """Repeat the failover run and report each; exit 1 if any run broke a guarantee."""
    num_bad = 0
    for run in range(1, runs + 1):
        report = run_failover(
            topology, num_jobs=num_jobs, kill_after_results=kill_after_results, seed=run
        )
        problems = report.violations()
        num_bad += bool(problems)
        verdict = "ok" if not problems else "FAILED: " + "; ".join(problems)
        click.echo(f"run {run}/{runs}: {report.line()}: {verdict}", err=False)
        if problems:
            for log in report.worker_logs:
                click.echo(log, err=True)
    click.echo(f"{runs - num_bad} of {runs} runs: no worker exit, exactly one result per id")
    sys.exit(1 if num_bad else 0)


if __name__ == "__main__":
    main()
