"""Real workers on vLLM: token-exact against vLLM's own generate, across a SIGKILL.

Real everything: a redis-server started by the session, `fabric init` and
`fabric submit` for ragged jobs of the trace's shape (capped to the tiny
model), `fabric worker` processes on vLLM's CPU build. The first worker is
killed with SIGKILL mid-run; a second, in burst mode, reclaims what it held
and finishes the rest. Every result is compared with ``LLM.generate`` on the
same jobs, run by vLLM alone in a process of its own (tests/vllm/reference.py).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.wire.entries import decode_result
from fabric_worker.wire.keys import Keys
from producers.workload import trace_lengths
from tests.integration.harness import (
    ROOT,
    WorkerProcess,
    num_pending,
    num_results,
    result_counts,
    wait_until,
)
from tests.vllm.conftest import VOCAB

pytestmark = pytest.mark.integration

NUM_JOBS = 320
LANES = (64, 128, 256, 512)
MAX_NEW = 48
LEASE_S = 2.0
KILL_AFTER = 60  # results written before the first worker is killed
START_S = 300  # a worker's engine start, 40 to 80 s here, with room for a slow machine


@dataclass
class Scenario:
    expected: dict[str, tuple[list[int], str]]
    jobs: dict[str, dict[str, Any]]
    results: dict[str, tuple[list[int], str]]
    counts: dict[str, int]
    num_pending: int
    num_results_at_kill: int
    killed_descendants: list[int]
    survivors: list[int]
    log: str


def trace_shaped_jobs() -> list[dict[str, Any]]:
    rng = random.Random(5)
    jobs = []
    for i, (prompt_len, output_len) in enumerate(trace_lengths(NUM_JOBS)):
        length = max(1, min(prompt_len, LANES[-1]))
        tokens = [rng.randrange(VOCAB) for _ in range(length)]
        jobs.append(
            {"tokens": tokens, "max_new_tokens": max(1, min(output_len, MAX_NEW)), "id": f"v{i}"}
        )
    return jobs


def fabric(*args: str, env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "fabric_worker", *args],
        check=True,
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=120,
    )


def fabric_results_of(client: redis.Redis, keys: Keys) -> dict[str, tuple[list[int], str]]:
    """Each job's result (a second result for one id is counted in ``counts``)."""
    results: dict[str, tuple[list[int], str]] = {}
    for lane in LANES:
        for _, fields in client.xrange(keys.results(lane)):
            result = decode_result(fields)
            results[result.id] = (list(result.tokens), result.finish_reason)
    return results


@pytest.fixture(scope="module")
def scenario(
    redis_server: RedisServer, manifest_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Scenario:
    tmp = tmp_path_factory.mktemp("workers")
    (tmp / "jobs.jsonl").write_text("".join(json.dumps(j) + "\n" for j in trace_shaped_jobs()))
    paths = [str(tmp / "jobs.jsonl"), str(tmp / "reference.jsonl")]
    subprocess.run(
        [sys.executable, "-m", "tests.vllm.reference", str(manifest_path), *paths],
        check=True,
        cwd=ROOT,
        capture_output=True,
        timeout=600,
    )
    reference = [json.loads(line) for line in (tmp / "reference.jsonl").read_text().splitlines()]
    jobs = {r["job"]["id"]: r["job"] for r in reference}
    expected = {r["job"]["id"]: (r["tokens"], r["finish_reason"]) for r in reference}
    (tmp / "submit.jsonl").write_text("".join(json.dumps(r["job"]) + "\n" for r in reference))

    keys = Keys("vllm-workers")
    env = {**os.environ, "FABRIC_REDIS_URL": redis_server.url, "FABRIC_NAMESPACE": keys.namespace}
    lanes = ",".join(map(str, LANES))
    fabric(
        "init",
        "--lanes",
        lanes,
        "--vocab-size",
        str(VOCAB),
        "--lease-s",
        str(LEASE_S),
        "--max-seq-len",
        str(LANES[-1] + MAX_NEW),
        env=env,
    )
    fabric("submit", str(tmp / "submit.jsonl"), env=env)

    client = redis.Redis.from_url(redis_server.url)
    doomed = WorkerProcess(
        redis_server.url, keys.namespace, tmp, manifest=str(manifest_path), name="doomed"
    )
    try:
        doomed.wait_started(START_S)
        wait_until(lambda: num_results(client, keys, LANES) >= KILL_AFTER, START_S, "first results")
        descendants = [p.pid for p in psutil.Process(doomed.process.pid).children(recursive=True)]
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait(30)
        at_kill = num_results(client, keys, LANES)

        def gone() -> bool:
            return not any(
                psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                for pid in descendants
            )

        wait_until(gone, 30, "the killed worker's child processes to exit")
        survivors = [pid for pid in descendants if psutil.pid_exists(pid)]
    finally:
        doomed.stop()
    survivor = WorkerProcess(
        redis_server.url,
        keys.namespace,
        tmp,
        "--burst",
        manifest=str(manifest_path),
        name="survivor",
    )
    try:
        assert survivor.wait(START_S + 300) == 0, survivor.log[-3000:]
    finally:
        survivor.stop()
    return Scenario(
        expected=expected,
        jobs=jobs,
        results=fabric_results_of(client, keys),
        counts=result_counts(client, keys, LANES),
        num_pending=num_pending(client, keys, LANES),
        num_results_at_kill=at_kill,
        killed_descendants=descendants,
        survivors=survivors,
        log=survivor.log,
    )


def test_every_result_equals_vllms_own_generate(scenario: Scenario) -> None:
    assert sorted(scenario.results) == sorted(scenario.expected)
    assert len(scenario.results) >= 300
    mismatched = [i for i, want in scenario.expected.items() if scenario.results[i] != want]
    assert not mismatched, [(i, scenario.expected[i], scenario.results[i]) for i in mismatched[:3]]


def test_a_job_with_end_id_stops_there_with_reason_stop(scenario: Scenario) -> None:
    stopped = [
        job_id
        for job_id, job in scenario.jobs.items()
        if job.get("end_id") is not None
        and len(scenario.results[job_id][0]) < job["max_new_tokens"]
    ]
    assert len(stopped) >= 30  # end ids really cut jobs short
    for job_id in stopped:
        tokens, reason = scenario.results[job_id]
        assert (tokens[-1], reason) == (scenario.jobs[job_id]["end_id"], "stop")
    for job_id, (tokens, reason) in scenario.results.items():
        if reason == "length":
            assert len(tokens) == scenario.jobs[job_id]["max_new_tokens"]


def test_after_a_sigkill_every_job_has_exactly_one_result(scenario: Scenario) -> None:
    assert 0 < scenario.num_results_at_kill < NUM_JOBS  # killed mid-run
    assert set(scenario.counts.values()) == {1}
    assert scenario.num_pending == 0
    assert "reclaimed 0," not in scenario.log.splitlines()[-1]  # the survivor took over leases


def test_no_engine_process_outlives_its_killed_worker(scenario: Scenario) -> None:
    """The engine core runs inside the worker (VLLM_ENABLE_V1_MULTIPROCESSING=0):
    a killed worker takes its engine with it; nothing it started lives on."""
    assert scenario.survivors == [], scenario.killed_descendants
