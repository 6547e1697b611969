"""A three-master Redis Cluster: each lane in its own slot, every script in one slot;
submit, two workers (one killed), results and inspect, exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from fabric_worker.broker.connection import connect
from fabric_worker.dev.replicated import RedisClusterServers
from fabric_worker.wire.keys import Keys
from tests.integration.harness import WorkerProcess, num_pending, result_counts, wait_until

pytestmark = pytest.mark.integration

LANES = (64, 128, 256, 512)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers(tmp_path_factory.mktemp("cluster"))
    servers.start()
    yield servers
    servers.close()


def fabric(
    url: str, namespace: str, *args: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "FABRIC_REDIS_URL": url, "FABRIC_NAMESPACE": namespace}
    return subprocess.run(
        [sys.executable, "-m", "fabric_worker", *args],
        input=stdin,
        env=env,
        capture_output=True,
        timeout=120,
    )


def test_lanes_spread_over_slots(cluster: RedisClusterServers) -> None:
    client = connect(cluster.url)
    keys = Keys("slots")
    slots = {lane: client.keyslot(keys.jobs(lane)) for lane in LANES}
    for lane in LANES:  # every key of a lane in the lane's slot
        lane_keys = [keys.results(lane), keys.dlq(lane), keys.backlog(lane), keys.job(lane, "x")]
        assert {client.keyslot(k) for k in lane_keys} == {slots[lane]}
    assert len(set(slots.values())) == len(LANES)


def test_submit_two_workers_one_killed_exactly_once(
    cluster: RedisClusterServers, tmp_path: Path
) -> None:
    namespace = "cl1"
    url = cluster.url
    assert (
        fabric(
            url,
            namespace,
            "init",
            "--lanes",
            ",".join(map(str, LANES)),
            "--vocab-size",
            "32000",
            "--lease-s",
            "2",
            "--max-seq-len",
            "1024",
        ).returncode
        == 0
    )
    jobs = [
        {
            "tokens": [(i * 7 + t) % 32000 for t in range(1 + (i * 37) % 500)],
            "max_new_tokens": 1 + i % 40,
            "id": f"c{i}",
        }
        for i in range(800)
    ]
    submitted = fabric(
        url, namespace, "submit", "-", stdin=b"".join(orjson.dumps(j) + b"\n" for j in jobs)
    )
    assert submitted.stdout == b"submitted 800, duplicates 0\n", submitted.stderr
    client = connect(url)
    keys = Keys(namespace)
    doomed = WorkerProcess(url, namespace, tmp_path, name="doomed")
    survivor = WorkerProcess(url, namespace, tmp_path, "--burst", name="survivor")
    try:
        doomed.wait_started()
        wait_until(
            lambda: sum(client.xlen(keys.results(lane)) for lane in LANES) >= 150, 90, "150 results"
        )
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait(10)
        assert survivor.wait(180) == 0, survivor.log
    finally:
        doomed.stop()
        survivor.stop()
    # Its housekeeping trimmed every lane at start, on whichever node holds it.
    assert "trimming results failed" not in survivor.log
    counts = result_counts(client, keys, LANES)
    assert sorted(counts) == sorted(j["id"] for j in jobs)
    assert set(counts.values()) == {1}
    assert num_pending(client, keys, LANES) == 0
    read = fabric(url, namespace, "results")
    assert read.returncode == 0, read.stderr
    assert sorted(orjson.loads(line)["id"] for line in read.stdout.splitlines()) == sorted(counts)
    shown = orjson.loads(fabric(url, namespace, "inspect", "--json").stdout)
    assert sum(lane["results"] for lane in shown["lanes"]) == 800
    assert sum(lane["backlog_tokens"] for lane in shown["lanes"]) == 0


def test_autoscaler_reads_backlog_and_heartbeats_from_a_cluster(
    cluster: RedisClusterServers,
) -> None:
    """The metrics actuator against a cluster: backlog in tokens from every lane's slot
    turns into a desired worker count served for KEDA."""
    import json
    import socket
    import urllib.request

    namespace = "cl2"
    url = cluster.url
    assert fabric(url, namespace, "init", "--lanes", ",".join(map(str, LANES))).returncode == 0
    jobs = [{"tokens": [1] * (1 + i % 500), "max_new_tokens": 100} for i in range(400)]
    assert (
        fabric(
            url, namespace, "submit", "-", stdin=b"".join(orjson.dumps(j) + b"\n" for j in jobs)
        ).returncode
        == 0
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "FABRIC_REDIS_URL": url, "FABRIC_NAMESPACE": namespace}
    scaler = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fabric_worker",
            "autoscale",
            "--actuator",
            "metrics",
            "--manifest",
            str(Path(__file__).resolve().parents[3] / "engines/manifests/sim-small.json"),
            "--min",
            "0",
            "--max",
            "5",
            "--target-drain-s",
            "1",
            "--metrics-port",
            str(port),
            "--interval-s",
            "0.2",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def desired() -> int | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/desired", timeout=1) as reply:
                return int(json.loads(reply.read())["desired_workers"])
        except OSError:
            return None

    client = connect(url)
    backlog = sum(int(client.get(Keys(namespace).backlog(lane)) or 0) for lane in LANES)
    client.close()
    # The manifest's guess (one 2048-token step per 50 ms: 40,960 tokens/s per worker,
    # no heartbeats yet) and a 1 s drain target.
    expected = min(5, -(-backlog // 40_960))
    assert expected >= 2
    try:
        wait_until(lambda: desired() == expected, 30, f"{expected} desired workers")
    finally:
        scaler.terminate()
        scaler.wait(30)


def test_a_batch_spans_slots_and_its_counts_sum_over_them(
    cluster: RedisClusterServers, tmp_path: Path
) -> None:
    namespace = "clb"
    url = cluster.url
    init = fabric(
        url, namespace, "init", "--lanes", ",".join(map(str, LANES)), "--max-seq-len", "1024"
    )
    assert init.returncode == 0, init.stderr
    client = connect(url)
    keys = Keys(namespace)
    for lane in LANES:  # a batch's record and index live in their lane's slot
        assert client.keyslot(keys.batch(lane, "b")) == client.keyslot(keys.jobs(lane))
        assert client.keyslot(keys.batches(lane)) == client.keyslot(keys.jobs(lane))
    jobs = b"".join(
        orjson.dumps({"tokens": [1] * (lane - 1), "max_new_tokens": 4, "id": f"j{lane}"}) + b"\n"
        for lane in LANES
    )
    assert fabric(url, namespace, "submit", "-", "--batch", "spread", stdin=jobs).returncode == 0
    held = b"".join(
        orjson.dumps({"tokens": [2] * (lane - 1), "max_new_tokens": 4, "id": f"k{lane}"}) + b"\n"
        for lane in LANES[:2]
    )
    worker = WorkerProcess(url, namespace, tmp_path, "--burst", name="cb")
    try:
        assert worker.wait(120) == 0, worker.log[-3000:]
    finally:
        worker.stop()
    # Queued after the worker left: cancelled with no worker running.
    assert fabric(url, namespace, "submit", "-", "--batch", "halt", stdin=held).returncode == 0
    cancelled = fabric(url, namespace, "batch", "cancel", "halt")
    assert b"cancelled 2 job(s)" in cancelled.stdout, cancelled.stderr
    waited = fabric(url, namespace, "batch", "wait", "spread", "--timeout", "30")
    assert waited.returncode == 0, waited.stderr
    assert b"total 4, done 4, dead 0, cancelled 0, left 0" in waited.stdout
    status = orjson.loads(fabric(url, namespace, "batch", "status", "halt", "--json").stdout)
    assert (status["total"], status["cancelled"], status["is_cancelled"]) == (2, 2, True)
    results = fabric(url, namespace, "batch", "results", "spread").stdout.splitlines()
    assert sorted(orjson.loads(x)["lane"] for x in results) == list(LANES)
    listed = fabric(url, namespace, "batch", "list", "--json").stdout.splitlines()
    assert [orjson.loads(x)["batch"] for x in listed] == ["spread", "halt"]
    assert fabric(url, namespace, "batch", "delete", "spread").returncode == 0
    client.close()


def test_trim_and_lagging_readers_on_a_cluster(cluster: RedisClusterServers) -> None:
    """Lanes on different nodes: one clock (TIME of one node) for the cutoff,
    each lane's stream trimmed on its own node, reader groups read from each."""
    namespace = "cl-trim"
    lanes = ",".join(map(str, LANES))
    init = fabric(cluster.url, namespace, "init", "--lanes", lanes, "--retention-s", "60")
    assert init.returncode == 0, init.stderr
    client = connect(cluster.url)
    keys = Keys(namespace)
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    for lane in LANES:
        client.xgroup_create(keys.results(lane), "readers", id="0", mkstream=True)
        for seq, age_s in enumerate((3600, 1)):
            fields = {"h": b"{}", "t": b""}
            client.xadd(keys.results(lane), fields, id=f"{now_ms - age_s * 1000}-{seq}")
    behind = orjson.loads(fabric(cluster.url, namespace, "inspect", "--json").stdout)
    assert {(g["lane"], g["is_behind"]) for g in behind["result_groups"]} == {
        (lane, True) for lane in LANES
    }
    trimmed = orjson.loads(fabric(cluster.url, namespace, "trim", "--json").stdout)
    assert trimmed["removed"] == {str(lane): 1 for lane in LANES}
    assert [client.xlen(keys.results(lane)) for lane in LANES] == [1] * len(LANES)
    missed = orjson.loads(fabric(cluster.url, namespace, "inspect", "--json").stdout)
    assert all(g["has_missed"] for g in missed["result_groups"])
