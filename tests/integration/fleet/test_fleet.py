"""The fleet with real processes: health probes, `fabric top` in a terminal, and the
local autoscaler spawning, replacing and retiring workers without losing a job."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from fabric_worker.broker.heartbeat import read_all
from fabric_worker.broker.namespace import init_namespace
from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import Keys
from producers import FabricClient, Job
from tests.integration.harness import (
    MANIFESTS,
    WorkerProcess,
    num_pending,
    result_counts,
    wait_until,
)

pytestmark = pytest.mark.integration

LANES = (64, 128, 256)


def setup(server: RedisServer, keys: Keys) -> redis.Redis:
    client = redis.Redis.from_url(server.url)
    init_namespace(
        client,
        keys,
        FleetConfig(
            lanes=LANES, vocab_size=32_000, lease_s=2.0, max_seq_len=512, backlog_cap_tokens=10**9
        ),
    )
    return client


def jobs(n: int, prefix: str = "f") -> list[Job]:
    return [
        Job(
            tokens=[(i + t) % 32_000 for t in range(1 + i % 250)],
            max_new_tokens=1 + i % 48,
            id=f"{prefix}{i}",
        )
        for i in range(n)
    ]


def fabric(server: RedisServer, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FABRIC_REDIS_URL": server.url, "FABRIC_NAMESPACE": namespace}
    return subprocess.run(
        [sys.executable, "-m", "fabric_worker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def running(client: redis.Redis, keys: Keys) -> dict[str, int]:
    now = time.time()
    return {
        s.consumer: s.pid
        for s in read_all(client, keys)
        if s.state == "running" and s.is_fresh(now)
    }


def test_health_follows_the_heartbeat(
    redis_server: RedisServer, keys: Keys, tmp_path: Path
) -> None:
    client = setup(redis_server, keys)
    assert fabric(redis_server, keys.namespace, "health", "--consumer", "h1").returncode == 1
    worker = WorkerProcess(redis_server.url, keys.namespace, tmp_path, name="h1")
    try:
        worker.wait_started()
        wait_until(lambda: "h1" in running(client, keys), 30, "a heartbeat")
        ok = fabric(redis_server, keys.namespace, "health", "--consumer", "h1")
        assert (ok.returncode, ok.stdout.startswith("healthy: 'h1' is running")) == (0, True)
        worker.process.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0
        gone = fabric(redis_server, keys.namespace, "health", "--consumer", "h1")
        assert gone.returncode == 1 and "'h1' is stopped" in gone.stderr, gone.stderr
    finally:
        worker.stop()
    killed = WorkerProcess(redis_server.url, keys.namespace, tmp_path, name="h2")
    try:
        killed.wait_started()
        wait_until(lambda: "h2" in running(client, keys), 30, "a heartbeat")
        killed.process.send_signal(signal.SIGKILL)
        killed.process.wait(10)
        # A killed worker says nothing: its heartbeat goes stale within the TTL.
        wait_until(
            lambda: (
                fabric(redis_server, keys.namespace, "health", "--consumer", "h2").returncode == 1
            ),
            30,
            "the probe to fail",
        )
    finally:
        killed.stop()


def read_pty(fd: int, until: list[str], timeout_s: float) -> str:
    """What a terminal shows, read until every string in ``until`` has appeared."""
    seen = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                break
        text = seen.decode(errors="replace")
        if all(s in text for s in until):
            return text
    raise AssertionError(f"terminal never showed {until}:\n{seen.decode(errors='replace')[-2000:]}")


def test_top_shows_lanes_and_workers_in_a_terminal(
    redis_server: RedisServer, keys: Keys, tmp_path: Path
) -> None:
    client = setup(redis_server, keys)
    FabricClient(client, keys.namespace).submit(jobs(300))
    worker = WorkerProcess(redis_server.url, keys.namespace, tmp_path, name="topw")
    env = {
        **os.environ,
        "FABRIC_REDIS_URL": redis_server.url,
        "FABRIC_NAMESPACE": keys.namespace,
        "COLUMNS": "120",
        "LINES": "40",
        "TERM": "xterm-256color",
    }
    main, child = pty.openpty()
    top = subprocess.Popen(
        [sys.executable, "-m", "fabric_worker", "top", "--interval-s", "0.5"],
        stdin=child,
        stdout=child,
        stderr=child,
        env=env,
        close_fds=True,
    )
    os.close(child)
    try:
        worker.wait_started()
        screen = read_pty(
            main,
            [f"lanes of '{keys.namespace}'", "backlog tokens", "workers", "topw", "running"],
            60,
        )
        assert "256" in screen and "last heartbeat" in screen
        top.send_signal(signal.SIGTERM)
        assert top.wait(10) == 0
    finally:
        top.kill()
        worker.stop()
        os.close(main)


def test_autoscaler_spawns_replaces_and_retires_workers_without_losing_a_job(
    redis_server: RedisServer, keys: Keys, tmp_path: Path
) -> None:
    client = setup(redis_server, keys)
    work = jobs(4000, prefix="a")
    FabricClient(client, keys.namespace).submit(work)
    env = {**os.environ, "FABRIC_REDIS_URL": redis_server.url, "FABRIC_NAMESPACE": keys.namespace}
    log = (tmp_path / "autoscale.log").open("wb")
    scaler = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fabric_worker",
            "autoscale",
            "--actuator",
            "local",
            "--manifest",
            str(MANIFESTS / "sim-small.json"),
            "--min",
            "0",
            "--max",
            "2",
            "--gpus",
            "0,1",
            "--target-drain-s",
            "1",
            "--cooldown-s",
            "3",
            "--interval-s",
            "0.5",
            "--log-dir",
            str(tmp_path),
            "--worker-arg=--log-every-s",
            "--worker-arg=1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # The backlog appears: workers are spawned up to the bound.
        wait_until(lambda: len(running(client, keys)) == 2, 60, "two workers")
        first = running(client, keys)
        assert {name.split("-")[1] for name in first} == {"0", "1"}  # one per GPU id
        # A killed worker is replaced.
        victim = sorted(first)[0]
        os.kill(first[victim], signal.SIGKILL)
        wait_until(lambda: len(set(running(client, keys)) - set(first)) == 1, 60, "a replacement")
        # The backlog drains; nothing lost, nothing doubled.
        wait_until(
            lambda: sum(result_counts(client, keys, LANES).values()) == len(work),
            180,
            "every result",
        )
        counts = result_counts(client, keys, LANES)
        assert set(counts.values()) == {1} and len(counts) == len(work)
        # After the cooldown the count falls to --min (0): the workers stop.
        wait_until(lambda: not running(client, keys), 60, "the workers to retire")
        assert num_pending(client, keys, LANES) == 0
    finally:
        scaler.send_signal(signal.SIGTERM)
        try:
            scaler.wait(60)
        finally:
            scaler.kill()
            log.close()
    text = (tmp_path / "autoscale.log").read_text()
    assert "-> 2 workers" in text and "-> 0 workers" in text, text
    assert "died (exit -9); replacing it" in text, text
