"""A full Redis is backpressure: a worker stops claiming, keeps its finished
results and writes each once when memory comes back; past its outage budget it
exits 4 and its work waits. A Redis that may evict is refused at start. A
worker trims results past the retention, and a full Redis does not stop it."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.wire.entries import ResultEntry, encode_result
from fabric_worker.wire.keys import Keys
from producers import FabricClient
from tests.integration.harness import WorkerProcess, num_results, run_burst_worker, wait_until
from tests.integration.worker import test_faults
from tests.integration.worker.test_faults import SetupFleet
from tests.integration.worker.test_worker import LANES, assert_exactly_once, ragged_jobs

pytestmark = pytest.mark.integration

setup_fleet = test_faults.setup_fleet  # the fixture, shared


@pytest.mark.timeout(60)
def test_worker_refuses_a_redis_that_may_evict(
    own_redis_server: RedisServer, keys: Keys, tmp_path: Path, setup_fleet: SetupFleet
) -> None:
    client = setup_fleet(own_redis_server, keys)
    client.config_set("maxmemory-policy", "allkeys-lru")
    worker = WorkerProcess(own_redis_server.url, keys.namespace, tmp_path, name="evict")
    try:
        code = worker.wait(30)
    finally:
        worker.stop()
    assert code == 2, worker.log[-3000:]
    assert "maxmemory-policy is allkeys-lru" in worker.log


@pytest.mark.timeout(120)
def test_worker_waits_out_a_full_redis_and_writes_every_result_once(
    own_redis_server: RedisServer, keys: Keys, tmp_path: Path, setup_fleet: SetupFleet
) -> None:
    client = setup_fleet(own_redis_server, keys, lease_s=20.0)
    jobs = ragged_jobs(2000, seed=21)
    FabricClient(client, keys.namespace).submit(jobs)
    worker = WorkerProcess(own_redis_server.url, keys.namespace, tmp_path, name="full")
    try:
        worker.wait_started()
        wait_until(lambda: num_results(client, keys, LANES) >= 200, 60, "200 results")
        client.config_set("maxmemory", "1")  # below what Redis already holds
        wait_until(lambda: "OutOfMemoryError" in worker.log, 30, "the worker to meet OOM")
        written = num_results(client, keys, LANES)
        assert written < len(jobs)
        assert worker.process.poll() is None, worker.log[-3000:]
        client.config_set("maxmemory", "0")
        wait_until(lambda: num_results(client, keys, LANES) == len(jobs), 90, "every result")
        worker.process.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, worker.log[-3000:]
    finally:
        worker.stop()
    assert_exactly_once(client, keys, jobs)


@pytest.mark.timeout(120)
def test_worker_exits_4_when_redis_stays_full_past_the_budget(
    own_redis_server: RedisServer, keys: Keys, tmp_path: Path, setup_fleet: SetupFleet
) -> None:
    client = setup_fleet(own_redis_server, keys, lease_s=1.0)
    jobs = ragged_jobs(2000, seed=22)
    FabricClient(client, keys.namespace).submit(jobs)
    worker = WorkerProcess(
        own_redis_server.url, keys.namespace, tmp_path, "--outage-budget-s", "2", name="stuck"
    )
    try:
        worker.wait_started()
        wait_until(lambda: num_results(client, keys, LANES) >= 200, 60, "200 results")
        client.config_set("maxmemory", "1")
        code = worker.wait(60)
    finally:
        worker.stop()
    assert code == 4, worker.log[-3000:]
    assert "Redis out of memory for 2 s" in worker.log
    client.config_set("maxmemory", "0")
    run_burst_worker(own_redis_server.url, keys.namespace, tmp_path)
    assert_exactly_once(client, keys, jobs)


@pytest.mark.timeout(120)
def test_a_worker_started_on_a_full_redis_trims_old_results_then_serves(
    own_redis_server: RedisServer, keys: Keys, tmp_path: Path, setup_fleet: SetupFleet
) -> None:
    client = setup_fleet(own_redis_server, keys, retention_s=30)
    jobs = ragged_jobs(200, seed=23)
    FabricClient(client, keys.namespace).submit(jobs)
    seconds, micros = client.time()
    old_ms = seconds * 1000 + micros // 1000 - 60_000  # twice the retention ago
    old = encode_result(ResultEntry("old", [1], "stop", 1, "w", 0.0, 0.0, 0.0))
    for start in range(0, 20_000, 1000):
        pipe = client.pipeline(transaction=False)
        for seq in range(start, start + 1000):
            pipe.xadd(keys.results(LANES[0]), old, id=f"{old_ms}-{seq}")
        pipe.execute()
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", str(used - 2**20))  # full: no result could be written
    try:
        run_burst_worker(own_redis_server.url, keys.namespace, tmp_path)
    finally:
        client.config_set("maxmemory", "0")
    assert_exactly_once(client, keys, jobs)  # and not one of the old results is left
