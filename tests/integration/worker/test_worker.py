"""Worker processes on the simulated engine against a real Redis: the exactly-once
promise under SIGKILL and SIGSTOP, dead letters, and the fail-closed manifest."""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path

import pytest
import redis

from engines.sim.outputs import expected_output
from fabric_worker.broker.namespace import init_namespace
from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.wire.entries import decode_result
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

LANES = (64, 128, 256)
VOCAB = 32_000


def setup(
    server: RedisServer, keys: Keys, *, lease_s: float = 2.0, max_deliveries: int = 3
) -> redis.Redis:
    client = redis.Redis.from_url(server.url)
    config = FleetConfig(
        lanes=LANES,
        vocab_size=VOCAB,
        lease_s=lease_s,
        max_deliveries=max_deliveries,
        max_seq_len=512,
        backlog_cap_tokens=10**9,
    )
    init_namespace(client, keys, config)
    return client


def ragged_jobs(n: int, seed: int = 0, prefix: str = "j") -> list[Job]:
    rng = random.Random(seed)
    return [
        Job(
            tokens=[rng.randrange(1, VOCAB) for _ in range(rng.randint(1, 256))],
            max_new_tokens=rng.randint(1, 48),
            id=f"{prefix}{i}",
            prefix_class=f"c{i % 4}",
        )
        for i in range(n)
    ]


def assert_exactly_once(client: redis.Redis, keys: Keys, jobs: list[Job]) -> None:
    counts = result_counts(client, keys, LANES)
    assert sorted(counts) == sorted(job.id for job in jobs if job.id)
    assert set(counts.values()) == {1}
    assert num_pending(client, keys, LANES) == 0
    assert sum(client.xlen(keys.jobs(lane)) for lane in LANES) == 0
    assert sum(int(client.get(keys.backlog(lane)) or 0) for lane in LANES) == 0


def test_one_result_per_id_when_a_worker_is_killed(
    redis_server: RedisServer, keys: Keys, tmp_path: Path
) -> None:
    client = setup(redis_server, keys)
    jobs = ragged_jobs(2000)
    FabricClient(client, keys.namespace).submit(jobs)
    doomed = WorkerProcess(redis_server.url, keys.namespace, tmp_path, name="doomed")
    survivor = WorkerProcess(redis_server.url, keys.namespace, tmp_path, "--burst", name="survivor")
    try:
        doomed.wait_started()
        wait_until(lambda: num_results(client, keys, LANES) >= 400, 60, "400 results")
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait(10)
        assert num_pending(client, keys, LANES) > 0  # the killed worker held entries
        assert survivor.wait(120) == 0, survivor.log
    finally:
        doomed.stop()
        survivor.stop()
    assert_exactly_once(client, keys, jobs)
    # The results are the engine's, token for token.
    by_id = {job.id: job for job in jobs}
    for lane in LANES:
        for _, fields in client.xrange(keys.results(lane)):
            result = decode_result(fields)
            job = by_id[result.id]
            tokens, reason = expected_output(job.tokens, job.max_new_tokens, job.end_id)
            assert (list(result.tokens), result.finish_reason) == (tokens, reason.value)
    assert "reclaimed 0," not in survivor.log.splitlines()[-1]


def test_stopped_worker_loses_its_lease_and_writes_no_duplicate(
    redis_server: RedisServer, keys: Keys, tmp_path: Path
) -> None:
    client = setup(redis_server, keys, lease_s=1.0)
    jobs = ragged_jobs(600, seed=1)
    FabricClient(client, keys.namespace).submit(jobs)
    slow = WorkerProcess(redis_server.url, keys.namespace, tmp_path, name="slow")
    try:
        slow.wait_started()
        wait_until(lambda: num_results(client, keys, LANES) >= 50, 60, "50 results")
        os.kill(slow.process.pid, signal.SIGSTOP)
        held = num_pending(client, keys, LANES)
        assert held > 0
        other = WorkerProcess(redis_server.url, keys.namespace, tmp_path, "--burst", name="other")
        try:
            assert other.wait(120) == 0, other.log  # finished everything, the stalled entries too
        finally:
            other.stop()
        assert_exactly_once(client, keys, jobs)
        os.kill(slow.process.pid, signal.SIGCONT)
        # Resumed, it finds its leases lost, cancels, writes nothing, and carries on.
        wait_until(lambda: "lease lost" in slow.log, 30, "the resumed worker to notice")
        more = ragged_jobs(50, seed=2, prefix="after")
        FabricClient(client, keys.namespace).submit(more)
        wait_until(
            lambda: num_results(client, keys, LANES) == len(jobs) + len(more),
            60,
            "the resumed worker to serve new jobs",
        )
        assert slow.process.poll() is None
    finally:
        slow.stop()
    assert_exactly_once(client, keys, jobs + more)


def test_poison_and_malformed_entries_are_dead_lettered_and_the_rest_completes(
    redis_server: RedisServer, keys: Keys, tmp_path: Path
) -> None:
    client = setup(redis_server, keys, lease_s=1.0, max_deliveries=3)
    poison = 7
    jobs = [j for j in ragged_jobs(200, seed=3) if poison not in j.tokens]
    bad = Job(tokens=[1, poison, 2], max_new_tokens=4, id="poison")
    FabricClient(client, keys.namespace).submit([*jobs, bad])
    client.xadd(keys.jobs(64), {"h": b"{not json", "t": b"\x01\x00\x00"})
    client.xadd(
        keys.jobs(128),
        {
            "h": json.dumps({"v": 1, "id": "oov", "max_new_tokens": 2}),
            "t": (VOCAB + 5).to_bytes(4, "little"),
        },
    )
    worker = WorkerProcess(
        redis_server.url,
        keys.namespace,
        tmp_path,
        "--burst",
        "--fault",
        f"poison_token={poison}",
        name="w",
    )
    try:
        assert worker.wait(120) == 0, worker.log
    finally:
        worker.stop()
    counts = result_counts(client, keys, LANES)
    assert sorted(counts) == sorted(job.id for job in jobs if job.id)
    dead = {}
    for lane in LANES:
        for _, fields in client.xrange(keys.dlq(lane)):
            dead[fields[b"reason"].decode()] = fields
    reasons = sorted(dead)
    assert len(reasons) == 3, reasons
    poison_entry = next(f for r, f in dead.items() if r.startswith("engine failed it"))
    assert poison_entry[b"deliveries"] == b"3"
    assert b"poison token 7" in poison_entry[b"error"]
    assert client.get(keys.job(64, "poison")) == b"dead"
    assert any("not valid JSON" in r for r in reasons)
    assert any(f"token {VOCAB + 5} is outside" in r for r in reasons)
    assert num_pending(client, keys, LANES) == 0
    assert sum(int(client.get(keys.backlog(lane)) or 0) for lane in LANES) == 0


def manifest_with(tmp_path: Path, **changes: object) -> Path:
    data = json.loads((MANIFESTS / "sim-small.json").read_text())
    for name, value in changes.items():
        if value is None:
            del data[name]
        else:
            data[name] = value
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"dtype": None}, "dtype"),
        ({"colour": "red"}, "colour"),
        ({"max_batch_size": "64"}, "max_batch_size"),
        ({"dtype": "int4"}, "dtype"),
        ({"max_num_tokens": 10**6}, "max_num_tokens"),
        ({"device": "NVIDIA GeForce 256"}, "device"),
        ({"model": "no-such-model"}, "model"),
        ({"backend": "tensorflow"}, "backend"),
    ],
)
def test_bad_manifest_stops_the_worker_before_it_claims_anything(
    redis_server: RedisServer, keys: Keys, tmp_path: Path, changes: dict[str, object], field: str
) -> None:
    client = setup(redis_server, keys)
    FabricClient(client, keys.namespace).submit(ragged_jobs(5))
    worker = WorkerProcess(
        redis_server.url,
        keys.namespace,
        tmp_path,
        manifest=str(manifest_with(tmp_path, **changes)),
        name="refused",
    )
    try:
        assert worker.wait(60) == 2
    finally:
        worker.stop()
    lines = worker.log.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"field '{field}'" in lines[0]
    for lane in LANES:
        assert client.xinfo_consumers(keys.jobs(lane), "workers") == []


@pytest.mark.parametrize(
    ("backend", "device"), [("hf", "cpu"), ("trtllm", "NVIDIA H200"), ("vllm", "cpu")]
)
def test_a_fleet_vocabulary_larger_than_the_models_stops_the_worker(
    redis_server: RedisServer, keys: Keys, tmp_path: Path, backend: str, device: str
) -> None:
    """Jobs are checked against the fleet's vocab_size: a larger one than the
    model's would let token ids reach the engine that the model has no row for."""
    client = setup(redis_server, keys)  # the fleet's vocab_size is 32,000
    FabricClient(client, keys.namespace).submit(ragged_jobs(5))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps({"vocab_size": 1024, "max_position_embeddings": 4096})
    )
    manifest = manifest_with(tmp_path, backend=backend, model=str(model), device=device)
    worker = WorkerProcess(
        redis_server.url, keys.namespace, tmp_path, manifest=str(manifest), name="refused"
    )
    try:
        assert worker.wait(60) == 2
    finally:
        worker.stop()
    lines = worker.log.strip().splitlines()
    assert len(lines) == 1, lines
    assert "field 'model'" in lines[0]
    assert "vocab_size (32000)" in lines[0] and "vocab_size (1024)" in lines[0]
    for lane in LANES:
        assert client.xinfo_consumers(keys.jobs(lane), "workers") == []
