"""Helpers for tests that run real worker processes against a real Redis."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from fabric_worker.wire.entries import decode_result
from fabric_worker.wire.keys import Keys

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "engines" / "manifests"


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll a condition on the real system until it holds (or fail the test)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


class WorkerProcess:
    """A `fabric worker` subprocess whose stderr goes to a file we can read."""

    def __init__(
        self,
        url: str,
        namespace: str,
        log_dir: Path,
        *args: str,
        manifest: str = "sim-small.json",
        name: str = "w",
    ) -> None:
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        env = {**os.environ, "FABRIC_REDIS_URL": url, "FABRIC_NAMESPACE": namespace}
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fabric_worker",
                "worker",
                "--manifest",
                str(MANIFESTS / manifest) if "/" not in manifest else manifest,
                "--consumer",
                name,
                "--log-every-s",
                "1",
                *args,
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.name = name

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_started(self, timeout_s: float = 30.0) -> None:
        wait_until(
            lambda: "engine capacity" in self.log or self.process.poll() is not None,
            timeout_s,
            f"worker {self.name} to start",
        )
        if self.process.poll() is not None:
            raise AssertionError(f"worker {self.name} exited early:\n{self.log}")

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(
                f"worker {self.name} still running after {timeout_s} s:\n{self.log[-3000:]}"
            ) from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()


def result_counts(
    client: redis.Redis, keys: Keys, lanes: tuple[int, ...]
) -> collections.Counter[str]:
    """How many results each job id has, across every lane."""
    seen: collections.Counter[str] = collections.Counter()
    for lane in lanes:
        for _, fields in client.xrange(keys.results(lane)):
            seen[decode_result(fields).id] += 1
    return seen


def num_results(client: redis.Redis, keys: Keys, lanes: tuple[int, ...]) -> int:
    return sum(client.xlen(keys.results(lane)) for lane in lanes)


def num_pending(client: redis.Redis, keys: Keys, lanes: tuple[int, ...]) -> int:
    return sum(client.xpending(keys.jobs(lane), "workers")["pending"] for lane in lanes)


def result_named_by_state(client: redis.Redis, keys: Keys, lane: int, job_id: str) -> str | None:
    """The job id of the result entry a finished job's state names ("done <entry
    id>"), or None when the state is not of that form or names no entry."""
    state = client.get(keys.job(lane, job_id))
    if state is None or not state.startswith(b"done "):
        return None
    entry_id = state.split(b" ", 1)[1]
    found = client.xrange(keys.results(lane), entry_id, entry_id)
    return decode_result(found[0][1]).id if found else None


def run_burst_worker(url: str, namespace: str, tmp_path: Path, name: str = "r") -> None:
    """Run a ``--burst`` worker until the backlog is empty; it must exit 0."""
    worker = WorkerProcess(url, namespace, tmp_path, "--burst", name=name)
    try:
        assert worker.wait(120) == 0, worker.log[-3000:]
    finally:
        worker.stop()
