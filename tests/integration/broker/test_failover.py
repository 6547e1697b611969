"""Redis failover under load: Cluster (masters with replicas), Sentinel, and a
slot migration. Workers stay up; every job gets exactly one result.

Each test starts its own servers on free loopback ports (bench/failover.py
holds the scenario that ``make chaos-failover`` repeats).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import BinaryIO

import orjson
import pytest
from redis.crc import key_slot

from bench.failover import (
    LANES,
    MANIFEST,
    NAMESPACE,
    failover_jobs,
    run_failover,
)
from fabric_worker.broker.connection import connect
from fabric_worker.dev.replicated import RedisClusterServers
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import Keys
from producers import FabricClient, Job
from tests.integration.harness import (
    MANIFESTS,
    WorkerProcess,
    num_pending,
    num_results,
    result_counts,
    wait_until,
)

pytestmark = pytest.mark.integration


def fabric(url: str, *args: str, **popen: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FABRIC_REDIS_URL": url, "FABRIC_NAMESPACE": NAMESPACE}
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "fabric_worker", *args], env=env, **popen
    )


@pytest.mark.timeout(240)
def test_cluster_master_killed_workers_stay_up_exactly_once(tmp_path: Path) -> None:
    """3 masters with a replica each (node timeout 2 s, AOF always); the master
    holding the most keys is SIGKILLed once 400 results exist."""
    report = run_failover("cluster", num_jobs=1500, kill_after_results=400, directory=tmp_path)
    assert report.violations() == [], report.line() + "\n" + "\n".join(report.worker_logs)
    assert report.num_results_at_kill < report.num_jobs  # the kill landed mid-run


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Watchers:
    """The operator's tools, started against the Sentinel URL before the kill:
    a results follower, ``top`` and the metrics autoscaler; ``health`` is
    probed right after the kill, while the sentinels are still promoting."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.files: list[BinaryIO] = []
        self.health: subprocess.CompletedProcess[bytes] | None = None
        self.metrics_port = _free_port()

    def _file(self, name: str) -> BinaryIO:
        self.files.append((self.directory / name).open("wb"))
        return self.files[-1]

    def start(self, url: str) -> None:
        self.processes["results"] = fabric(
            url,
            "results",
            "--follow",
            "--group",
            "watch",
            stdout=self._file("follow.jsonl"),
            stderr=self._file("follow.err"),
        )
        self.processes["top"] = fabric(
            url,
            "top",
            "--interval-s",
            "0.2",
            stdout=subprocess.DEVNULL,
            stderr=self._file("top.err"),
        )
        self.processes["autoscale"] = fabric(
            url,
            "autoscale",
            "--actuator",
            "metrics",
            "--manifest",
            str(MANIFESTS / MANIFEST),
            "--min",
            "0",
            "--max",
            "4",
            "--interval-s",
            "0.2",
            "--cooldown-s",
            "0",
            "--metrics-port",
            str(self.metrics_port),
            stdout=subprocess.DEVNULL,
            stderr=self._file("autoscale.err"),
        )
        # Up before the kill: the follower's group exists, the autoscaler answers.
        with connect(url) as client:
            stream = Keys(NAMESPACE).results(LANES[0])
            wait_until(
                lambda: any(g["name"] == b"watch" for g in client.xinfo_groups(stream)),
                60,
                "the results follower to join",
            )
        wait_until(lambda: self.desired() is not None, 60, "the autoscaler to serve /desired")

    def probe_health(self, url: str) -> None:
        env = {**os.environ, "FABRIC_REDIS_URL": url, "FABRIC_NAMESPACE": NAMESPACE}
        self.health = subprocess.run(
            [
                *(sys.executable, "-m", "fabric_worker", "health"),
                *("--consumer", "w0", "--outage-budget-s", "30"),
            ],
            env=env,
            capture_output=True,
            timeout=60,
        )

    def followed_ids(self) -> list[str]:
        text = (self.directory / "follow.jsonl").read_bytes()
        return [orjson.loads(line)["id"] for line in text.splitlines()]

    def desired(self) -> int | None:
        url = f"http://127.0.0.1:{self.metrics_port}/desired"
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                return int(orjson.loads(reply.read())["desired_workers"])
        except OSError:
            return None

    def stop(self) -> dict[str, int | None]:
        """SIGTERM each; returns which had exited by themselves before that."""
        exited = {name: p.poll() for name, p in self.processes.items()}
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        for file in self.files:
            file.close()
        return exited


@pytest.mark.timeout(240)
def test_sentinel_master_killed_workers_and_tools_ride_it_out(tmp_path: Path) -> None:
    """1 master, 1 replica, 3 sentinels: workers, the results follower, top,
    health and the autoscaler all go on through the promotion."""
    watchers = _Watchers(tmp_path)
    jobs = {job.id for job in failover_jobs(1500)}
    desired: list[int | None] = []

    def check_watchers(url: str) -> None:
        # The follower reads at least once: an ack lost with the old master
        # brings its batch again, so ids may repeat, but none is missing.
        wait_until(lambda: set(watchers.followed_ids()) >= jobs, 60, "the follower to catch up")
        wait_until(lambda: watchers.desired() == 0, 30, "the autoscaler to see the drain")
        desired.append(watchers.desired())

    try:
        report = run_failover(
            "sentinel",
            num_jobs=1500,
            kill_after_results=400,
            directory=tmp_path / "run",
            before_kill=watchers.start,
            after_kill=watchers.probe_health,
            after_workers=check_watchers,
        )
        assert report.violations() == [], report.line() + "\n" + "\n".join(report.worker_logs)
    finally:
        exited = watchers.stop()
    assert desired == [0]  # the autoscaler still answered after the failover
    assert exited == {"results": None, "top": None, "autoscale": None}, exited
    assert watchers.health is not None
    assert b"cannot reach Redis" not in watchers.health.stderr, watchers.health.stderr
    assert watchers.health.returncode in (0, 1), watchers.health.stderr
    assert (tmp_path / "follow.err").read_bytes().count(b"retrying") >= 1


@pytest.mark.timeout(240)
def test_slot_migration_under_load_exactly_once(tmp_path: Path) -> None:
    """``redis-cli --cluster reshard`` moves a lane's slot to another master while
    two workers serve it: ASK during the move, MOVED after, TRYAGAIN for scripts
    whose keys are split mid-move. Workers stay up; exactly once."""
    servers = RedisClusterServers(tmp_path / "cluster", num_masters=3)
    servers.start()
    workers: list[WorkerProcess] = []
    try:
        url = servers.url
        keys = Keys(NAMESPACE)
        from fabric_worker.broker.namespace import init_namespace

        with connect(url) as setup:
            config = FleetConfig(lanes=LANES, vocab_size=32_000, lease_s=5.0, max_seq_len=2048)
            init_namespace(setup, keys, config)
        # Lane 128's slot (1943) is near the start of the first master's range:
        # resharding that range's head moves it after few other (empty) slots.
        lane = 128
        slot = key_slot(keys.jobs(lane).encode())
        source = servers.master_of(slot)
        target = next(n for n in servers.nodes if n is not source)
        num_slots = sum(
            min(last, slot) - first + 1
            for first, last, node in servers.slot_ranges()
            if node is source and first <= slot
        )
        # Trace-shaped outputs, prompts sized for lane 128 only: every job moves.
        jobs = [
            Job(
                tokens=job.tokens[:65] + [7] * (i % 64),
                max_new_tokens=job.max_new_tokens,
                id=job.id,
            )
            for i, job in enumerate(failover_jobs(1200))
            if len(job.tokens) >= 65
        ]
        producer = FabricClient.from_url(url, NAMESPACE)
        producer.submit(jobs)
        producer.close()
        workers = [
            WorkerProcess(url, NAMESPACE, tmp_path, "--burst", name=f"m{i}") for i in range(2)
        ]
        client = connect(url)
        wait_until(lambda: num_results(client, keys, LANES) >= 200, 120, "200 results")
        reshard = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "reshard",
                f"127.0.0.1:{source.port}",
                "--cluster-from",
                servers.node_id(source),
                "--cluster-to",
                servers.node_id(target),
                "--cluster-slots",
                str(num_slots),
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=120,
        )
        assert reshard.returncode == 0, reshard.stdout[-2000:] + reshard.stderr[-2000:]
        moved_mid_run = num_results(client, keys, LANES) < len(jobs)
        assert servers.master_of(slot) is target
        exits = [w.wait(180) for w in workers]
        assert exits == [0, 0], "\n".join(w.log[-3000:] for w in workers)
        counts = result_counts(client, keys, LANES)
        assert sorted(counts) == sorted(job.id for job in jobs)
        assert set(counts.values()) == {1}
        assert num_pending(client, keys, LANES) == 0
        assert moved_mid_run  # the slot moved while there was work left in it
    finally:
        for worker in workers:
            worker.stop()
        servers.close()


def test_cli_commands_reach_the_master_through_sentinel(tmp_path: Path) -> None:
    """``init``, ``submit`` and ``inspect`` with a ``redis+sentinel://`` URL."""
    from fabric_worker.dev.replicated import RedisSentinelServers

    with RedisSentinelServers(tmp_path / "s", num_replicas=0) as servers:
        env = {**os.environ, "FABRIC_REDIS_URL": servers.url, "FABRIC_NAMESPACE": "s1"}

        def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                [sys.executable, "-m", "fabric_worker", *args],
                env=env,
                input=stdin,
                capture_output=True,
                timeout=60,
            )

        assert run("init", "--lanes", "64,128").returncode == 0
        submitted = run(
            "submit", "-", stdin=b'{"tokens": [1, 2, 3], "max_new_tokens": 4, "id": "a"}\n'
        )
        assert submitted.stdout == b"submitted 1, duplicates 0\n", submitted.stderr
        shown = orjson.loads(run("inspect", "--json").stdout)
        assert sum(lane["queued"] for lane in shown["lanes"]) == 1
        with connect(servers.url) as client:
            assert client.xlen(Keys("s1").jobs(64)) == 1
