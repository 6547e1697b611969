"""``make chaos``: exactly once while workers are SIGKILLed and Redis restarts.

Starts a private redis-server with AOF (appendfsync always), submits ``--jobs``
ragged jobs, and runs three ``fabric worker`` processes on the simulated engine
(sim-small manifest, wall clock: every iteration really takes its GPU time, so
a kill lands on work that is queued, running or being written). Every 1 to 2 s
a random worker is SIGKILLed and a replacement started; once, when three
quarters of the results are in, redis-server itself is SIGKILLed, left down for
longer than the lease, and started again on the same port from its AOF. The
kills go on while it is down (replacements start into the outage). Every entry
pending at the restart is then past its lease, so workers with room reclaim
each other's work while its holders still run it or hold it finished but
unwritten: the complete script may have duplicates to suppress. (Late in the
run, when read-ahead queues are no longer full, is when workers have room to
reclaim.) When every job has a result, the surviving workers get SIGTERM and
the driver checks: each submitted id has exactly one result, no entry is
pending, the job and dead-letter streams are empty, the backlog counters are
zero, every SIGTERMed worker exited 0 and none exited of its own accord.

Duplicates suppressed and reclaims are the workers' own counters: each worker
prints its cumulative counts every ``LOG_EVERY_S`` and once more when it exits.
A SIGKILLed worker prints nothing at exit, so its last progress line is what is
counted; at most ``LOG_EVERY_S`` of its activity is missed, which makes those
two figures lower bounds. Nothing else in the report depends on logs.
"""

from __future__ import annotations

import collections
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import click
import redis

from fabric_worker.broker.namespace import init_namespace
from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.wire.entries import decode_result
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import GROUP, Keys
from producers import FabricClient, Job

LANES = (64, 128, 256)
VOCAB = 32_000
LEASE_S = 2.0
REDIS_DOWN_S = LEASE_S + 1.0  # long enough that every lease runs out across the restart
# Chaos may hand one job to several workers that die before finishing it; the
# dead-letter limit is set high so that only a real fault can dead-letter a job.
MAX_DELIVERIES = 100
LOG_EVERY_S = 0.5
MAX_NEW_TOKENS = 128  # long enough that a 5,000-job run outlives a few dozen kills
MANIFEST = "sim-small.json"

_PROGRESS = re.compile(r"\bdup (\d+) dead \d+ reclaimed (\d+)")
_SUMMARY = re.compile(r"duplicates (\d+), dead-lettered \d+, retried \d+, reclaimed (\d+)")


def chaos_config() -> FleetConfig:
    return FleetConfig(
        lanes=LANES,
        vocab_size=VOCAB,
        lease_s=LEASE_S,
        max_deliveries=MAX_DELIVERIES,
        max_seq_len=512,
        backlog_cap_tokens=10**10,
    )


def chaos_jobs(num_jobs: int, seed: int = 0) -> Iterator[Job]:
    """Ragged jobs over the three lanes: prompts of 1 to 256 tokens, 1 to 128 new tokens."""
    rng = random.Random(seed)
    for i in range(num_jobs):
        yield Job(
            tokens=[rng.randrange(1, VOCAB) for _ in range(rng.randint(1, LANES[-1]))],
            max_new_tokens=rng.randint(1, MAX_NEW_TOKENS),
            id=f"c{i}",
            prefix_class=f"k{i % 4}",
        )


class Worker:
    """One ``fabric worker`` process whose output goes to a log file."""

    def __init__(self, url: str, namespace: str, log_dir: Path, name: str) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        manifest = resources.files("engines").joinpath("manifests", MANIFEST)
        env = {**os.environ, "FABRIC_REDIS_URL": url, "FABRIC_NAMESPACE": namespace}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fabric_worker",
                    "worker",
                    "--manifest",
                    str(manifest),
                    "--consumer",
                    name,
                    "--log-every-s",
                    str(LOG_EVERY_S),
                    "--sim-clock",
                    "wall",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def is_alive(self) -> bool:
        return self.process.poll() is None

    @property
    def is_up(self) -> bool:
        """Its engine has started: it handles SIGTERM by draining."""
        return "engine capacity" in self.log_path.read_text(errors="replace")

    def counters(self) -> tuple[int, int]:
        """(duplicates, reclaimed) as of the last line this worker printed."""
        text = self.log_path.read_text(errors="replace")
        found = [(m.start(), m) for m in _PROGRESS.finditer(text)]
        found += [(m.start(), m) for m in _SUMMARY.finditer(text)]
        if not found:
            return 0, 0
        last = max(found, key=lambda pair: pair[0])[1]
        return int(last.group(1)), int(last.group(2))


@dataclass(slots=True)
class ChaosReport:
    """What a chaos run did and what it found; ``violations`` empty means exactly once held."""

    num_jobs: int
    num_results: int = 0
    num_missing: int = 0
    num_doubled: int = 0  # ids with more than one result
    num_unknown: int = 0  # results for ids nobody submitted
    num_pending: int = 0
    num_queued: int = 0  # entries left in the job streams
    num_dead: int = 0
    backlog_tokens: int = 0
    num_duplicates_suppressed: int = 0
    num_reclaimed: int = 0
    num_redelivered: int = 0  # jobs whose result came from a second or later delivery
    max_deliveries: int = 0
    num_kills: int = 0
    num_workers_started: int = 0
    num_redis_restarts: int = 0
    redis_down_s: float = 0.0
    submit_s: float = 0.0
    elapsed_s: float = 0.0  # from the first worker's start to the last one's exit
    exit_codes: list[int | None] = field(default_factory=list)  # of the workers SIGTERMed
    self_exits: list[str] = field(default_factory=list)  # workers that died unkilled
    log_dir: str = ""

    def violations(self) -> list[str]:
        checks = [
            (self.num_results == self.num_jobs, f"{self.num_results} results"),
            (self.num_missing == 0, f"{self.num_missing} ids without a result"),
            (self.num_doubled == 0, f"{self.num_doubled} ids with more than one result"),
            (self.num_unknown == 0, f"{self.num_unknown} results for unknown ids"),
            (self.num_pending == 0, f"{self.num_pending} entries pending"),
            (self.num_queued == 0, f"{self.num_queued} entries left in the job streams"),
            (self.num_dead == 0, f"{self.num_dead} dead letters"),
            (self.backlog_tokens == 0, f"backlog counters at {self.backlog_tokens} tokens"),
            (
                all(code == 0 for code in self.exit_codes),
                f"SIGTERMed workers exited with {self.exit_codes}",
            ),
            (not self.self_exits, f"workers exited unkilled: {self.self_exits}"),
        ]
        return [f"{self.num_jobs} jobs: {why}" for ok, why in checks if not ok]

    def lines(self) -> list[str]:
        verdict = "OK" if not self.violations() else "; ".join(self.violations())
        return [
            f"jobs submitted          {self.num_jobs} "
            f"(in {self.submit_s:.1f} s, before any worker started)",
            f"results                 {self.num_results} "
            f"(missing {self.num_missing}, doubled {self.num_doubled})",
            f"duplicates suppressed   {self.num_duplicates_suppressed} "
            "(complete script found the job already done; from worker lines, a lower bound)",
            f"reclaims                {self.num_reclaimed} "
            "(entries taken over by XAUTOCLAIM; from worker lines, a lower bound)",
            f"redelivered jobs        {self.num_redelivered} "
            f"(result from a later delivery; max deliveries {self.max_deliveries})",
            f"kills                   {self.num_kills} SIGKILL "
            f"({self.num_workers_started} worker processes in all)",
            f"redis restarts          {self.num_redis_restarts} "
            f"(SIGKILL, down {self.redis_down_s:.2f} s, AOF reload)",
            f"unkilled worker exits   {len(self.self_exits)}",
            f"pending entries         {self.num_pending}",
            f"job stream entries      {self.num_queued}",
            f"dead letters            {self.num_dead}",
            f"backlog tokens          {self.backlog_tokens}",
            f"elapsed                 {self.elapsed_s:.1f} s (first worker start to last exit)",
            f"exactly once            {verdict}",
        ]


def _result_counts(client: redis.Redis, keys: Keys) -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()
    for lane in LANES:
        start = "-"
        while True:
            entries = client.xrange(keys.results(lane), min=start, count=5000)
            for _, fields in entries:
                seen[decode_result(fields).id] += 1
            if len(entries) < 5000:
                break
            start = "(" + entries[-1][0].decode()
    return seen


def _deliveries(client: redis.Redis, keys: Keys) -> list[int]:
    found = []
    for lane in LANES:
        start = "-"
        while True:
            entries = client.xrange(keys.results(lane), min=start, count=5000)
            found += [decode_result(fields).deliveries for _, fields in entries]
            if len(entries) < 5000:
                break
            start = "(" + entries[-1][0].decode()
    return found


def _num_results(client: redis.Redis, keys: Keys) -> int | None:
    try:
        return sum(int(client.xlen(keys.results(lane))) for lane in LANES)
    except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
        return None  # Redis is restarting


def _num_pending(client: redis.Redis, keys: Keys) -> int:
    return sum(int(client.xpending(keys.jobs(lane), GROUP)["pending"]) for lane in LANES)


def run_chaos(
    num_jobs: int,
    *,
    num_workers: int = 3,
    seed: int = 0,
    log_dir: Path | None = None,
    kill_every_s: tuple[float, float] = (1.0, 2.0),
    redis_down_s: float = REDIS_DOWN_S,
    timeout_s: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> ChaosReport:
    """Run the chaos scenario end to end and return what it found."""
    say = progress or (lambda _line: None)
    rng = random.Random(seed)
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="fabric-chaos-"))
    timeout_s = timeout_s if timeout_s is not None else max(300.0, num_jobs / 20)
    report = ChaosReport(num_jobs=num_jobs, log_dir=str(log_dir))
    keys = Keys("chaos")
    server = RedisServer(log_dir / "redis", appendonly=True)
    (log_dir / "redis").mkdir(parents=True, exist_ok=True)
    server.start()
    client = redis.Redis.from_url(server.url, socket_timeout=30)
    workers: list[Worker] = []
    finished: list[Worker] = []
    try:
        init_namespace(client, keys, chaos_config())
        started = time.monotonic()
        submitted = FabricClient(client, keys.namespace).submit(chaos_jobs(num_jobs, seed))
        report.submit_s = time.monotonic() - started
        say(f"submitted {submitted.num_submitted} jobs in {report.submit_s:.1f} s")
        started = time.monotonic()

        def start_worker() -> Worker:
            worker = Worker(server.url, keys.namespace, log_dir, f"w{report.num_workers_started}")
            report.num_workers_started += 1
            return worker

        workers = [start_worker() for _ in range(num_workers)]
        deadline = started + timeout_s
        next_kill = started + rng.uniform(*kill_every_s)
        next_say = started + 5.0
        down_at: float | None = None  # Redis is down since then
        while time.monotonic() < deadline:
            done = _num_results(client, keys) if down_at is None else None
            if done is not None and done >= num_jobs:
                break
            now = time.monotonic()
            for worker in [w for w in workers if not w.is_alive]:
                report.self_exits.append(f"{worker.name} ({worker.process.returncode})")
                workers.remove(worker)
                finished.append(worker)
                workers.append(start_worker())
            if now >= next_kill:
                victim = rng.choice(workers)
                victim.process.send_signal(signal.SIGKILL)
                victim.process.wait(30)
                workers.remove(victim)
                finished.append(victim)
                report.num_kills += 1
                workers.append(start_worker())
                next_kill = now + rng.uniform(*kill_every_s)
            if not report.num_redis_restarts and done is not None and done >= num_jobs * 3 // 4:
                say(f"redis down after {done} results")
                server.kill()
                down_at = now
                report.num_redis_restarts += 1
            elif down_at is not None and now - down_at >= redis_down_s:
                server.start(timeout_s=120)
                report.redis_down_s = time.monotonic() - down_at
                down_at = None
                say(f"redis up again after {report.redis_down_s:.2f} s")
            if now >= next_say:
                so_far = "Redis down" if done is None else f"{done} of {num_jobs} results"
                say(f"{so_far}, {report.num_kills} kills")
                next_say = now + 5.0
            time.sleep(0.05)  # a poll interval: the driver paces faults, it waits on nothing
        if down_at is not None:  # timed out during the outage
            server.start(timeout_s=120)
        # A replacement may still be importing, too early to have any handler:
        # stop only workers that are up (or gone), so that each gets its drain.
        up_by = time.monotonic() + 60
        while time.monotonic() < up_by and not all(w.is_up or not w.is_alive for w in workers):
            time.sleep(0.05)
        for worker in workers:
            worker.process.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                report.exit_codes.append(worker.process.wait(60))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                report.exit_codes.append(None)
        report.elapsed_s = time.monotonic() - started
        _settle(client)
        _check(client, keys, submitted.ids, report)
        for worker in [*finished, *workers]:
            duplicates, reclaimed = worker.counters()
            report.num_duplicates_suppressed += duplicates
            report.num_reclaimed += reclaimed
        return report
    finally:
        for worker in workers:
            if worker.is_alive:
                worker.process.kill()
                worker.process.wait(30)
        client.close()
        server.stop()


def _settle(client: redis.Redis, timeout_s: float = 10.0) -> None:
    """Every worker has exited; wait until the server answers (it may be loading)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.ping()
            return
        except (redis.ConnectionError, redis.BusyLoadingError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _check(client: redis.Redis, keys: Keys, ids: list[str], report: ChaosReport) -> None:
    counts = _result_counts(client, keys)
    submitted = set(ids)
    report.num_results = sum(counts.values())
    report.num_missing = sum(1 for job_id in submitted if counts[job_id] == 0)
    report.num_doubled = sum(1 for n in counts.values() if n > 1)
    report.num_unknown = sum(1 for job_id in counts if job_id not in submitted)
    report.num_pending = _num_pending(client, keys)
    report.num_queued = sum(int(client.xlen(keys.jobs(lane))) for lane in LANES)
    report.num_dead = sum(int(client.xlen(keys.dlq(lane))) for lane in LANES)
    report.backlog_tokens = sum(int(client.get(keys.backlog(lane)) or 0) for lane in LANES)
    deliveries = _deliveries(client, keys)
    report.num_redelivered = sum(1 for n in deliveries if n > 1)
    report.max_deliveries = max(deliveries, default=0)


@click.command()
@click.option("--jobs", "num_jobs", type=click.IntRange(1), default=100_000, show_default=True)
@click.option("--workers", "num_workers", type=click.IntRange(1), default=3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def main(num_jobs: int, num_workers: int, seed: int, log_dir: Path | None) -> None:
    """Kill workers at random and restart Redis once; check exactly-once at the end."""
    click.echo(
        f"chaos: {num_jobs} jobs, {num_workers} workers on {MANIFEST} (sim engine, wall clock), "
        f"lease {LEASE_S:g} s; SIGKILL a random worker every 1 to 2 s and start a replacement; "
        f"SIGKILL redis-server once, restart it {REDIS_DOWN_S:g} s later (AOF, appendfsync always)"
    )
    report = run_chaos(
        num_jobs,
        num_workers=num_workers,
        seed=seed,
        log_dir=log_dir,
        progress=lambda line: click.echo(f"  {line}", err=True),
    )
    for line in report.lines():
        click.echo(line)
    click.echo(f"logs in {report.log_dir}")
    if report.violations():
        sys.exit(1)


if __name__ == "__main__":
    main()
