"""`fabric batch` as a user runs it: real processes, a real Redis, a real worker."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis

from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.wire.entries import decode_result
from fabric_worker.wire.keys import GROUP, Keys
from tests.integration.cli.test_cli import fabric, jsonl
from tests.integration.harness import WorkerProcess, run_burst_worker, wait_until

pytestmark = pytest.mark.integration


def test_a_batch_from_submit_to_delete(
    redis_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    # max_new_tokens 9000 passes the fleet config but not the engine (8192 per
    # sequence): the worker dead-letters that job, with its reason.
    init = fabric(redis_server, namespace, "init", "--lanes", "64,128", "--max-seq-len", "9100")
    assert init.returncode == 0, init.stderr
    data = jsonl(
        {"tokens": [1, 2], "max_new_tokens": 3, "id": "a"},
        {"tokens": [1] * 100, "max_new_tokens": 3, "id": "b"},
        {"tokens": [1, 2], "max_new_tokens": 9000, "id": "too-long"},
    )
    submitted = fabric(redis_server, namespace, "submit", "-", "--batch", stdin=data)
    assert submitted.returncode == 0, submitted.stderr
    line = submitted.stdout.decode().strip()
    assert line.startswith("submitted 3, duplicates 0 in batch batch-"), line
    name = line.rsplit(" ", 1)[1]
    # Submitted again under another name: duplicates, still in the first batch.
    again = fabric(redis_server, namespace, "submit", "-", "--batch", "other", stdin=data)
    assert again.stdout == b"submitted 0, duplicates 3 in batch other\n"

    status = fabric(redis_server, namespace, "batch", "status", name, "--json")
    doc = orjson.loads(status.stdout)
    assert (doc["total"], doc["done"], doc["left"], doc["finished"]) == (3, 0, 3, None)
    refused = fabric(redis_server, namespace, "batch", "delete", name)
    assert refused.returncode == 2
    assert b"3 job(s) still queued or running" in refused.stderr

    run_burst_worker(redis_server.url, namespace, tmp_path)
    waited = fabric(redis_server, namespace, "batch", "wait", name, "--timeout", "30")
    assert waited.returncode == 0, waited.stderr
    assert b"total 3, done 2, dead 1, cancelled 0, left 0" in waited.stdout

    results = fabric(redis_server, namespace, "batch", "results", name)
    docs = [orjson.loads(x) for x in results.stdout.splitlines()]
    assert sorted(d["id"] for d in docs) == ["a", "b", "too-long"]  # each once
    by_id = {d["id"]: d for d in docs}
    assert by_id["a"]["state"] == "done" and by_id["a"]["batch"] == name
    assert len(by_id["b"]["tokens"]) == 3
    assert by_id["too-long"]["state"] == "dead"
    assert "this engine holds at most 8192 per sequence" in by_id["too-long"]["reason"]

    listed = fabric(redis_server, namespace, "batch", "list", "--json")
    assert [orjson.loads(x)["batch"] for x in listed.stdout.splitlines()] == [name]
    deleted = fabric(redis_server, namespace, "batch", "delete", name)
    assert (deleted.returncode, deleted.stdout) == (0, f"deleted batch {name}\n".encode())
    gone = fabric(redis_server, namespace, "batch", "status", name)
    assert gone.returncode == 2 and b"is not known" in gone.stderr
    assert fabric(redis_server, namespace, "batch", "list").stdout == b""


def test_wait_times_out_with_its_own_exit_status_and_the_counts(
    redis_server: RedisServer, namespace: str
) -> None:
    assert fabric(redis_server, namespace, "init").returncode == 0
    data = jsonl({"tokens": [1, 2], "max_new_tokens": 3, "id": "q"})
    assert (
        fabric(redis_server, namespace, "submit", "-", "--batch", "slow", stdin=data).returncode
        == 0
    )
    waited = fabric(redis_server, namespace, "batch", "wait", "slow", "--timeout", "0.3")
    assert waited.returncode == 7, waited.stderr
    assert b"total 1, done 0, dead 0, cancelled 0, left 1" in waited.stdout
    # Not a terminal: plain count lines, no bar.
    assert b"0/1 finished" in waited.stderr
    assert b"batch 'slow' not finished after 0.3 s" in waited.stderr
    bad = fabric(redis_server, namespace, "submit", "-", "--batch", "no spaces", stdin=data)
    assert bad.returncode == 2 and b"--batch" in bad.stderr


def test_cancel_aborts_running_jobs_and_gives_each_a_cancelled_result(
    redis_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    # Jobs of 8,000 output tokens keep the simulated GPU busy for many
    # seconds; a 1 s lease makes the worker renew (and so notice) quickly.
    init = fabric(redis_server, namespace, "init", "--lanes", "64", "--lease-s", "1")
    assert init.returncode == 0, init.stderr
    data = jsonl(*({"tokens": [1, 2, i], "max_new_tokens": 8000, "id": f"c{i}"} for i in range(2)))
    assert (
        fabric(redis_server, namespace, "submit", "-", "--batch", "stop-me", stdin=data).returncode
        == 0
    )
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys(namespace)
    worker = WorkerProcess(redis_server.url, namespace, tmp_path, name="busy")
    try:
        worker.wait_started()
        wait_until(
            lambda: client.xpending(keys.jobs(64), GROUP)["pending"] == 2, 30, "both jobs running"
        )
        cancelled = fabric(redis_server, namespace, "batch", "cancel", "stop-me")
        assert cancelled.returncode == 0, cancelled.stderr
        assert b"cancelled 2 job(s)" in cancelled.stdout
        assert b"total 2, done 0, dead 0, cancelled 2, left 0" in cancelled.stdout
        wait_until(lambda: "lease lost on 2 entries" in worker.log, 30, "the worker to abort them")
        late = fabric(
            redis_server,
            namespace,
            "submit",
            "-",
            "--batch",
            "stop-me",
            stdin=jsonl({"tokens": [1, 2], "max_new_tokens": 3, "id": "late"}),
        )
        assert late.returncode == 2 and b"batch stop-me was cancelled" in late.stderr
        # The worker goes on serving other work, and wrote nothing for the cancelled jobs.
        other = jsonl({"tokens": [1, 2], "max_new_tokens": 3, "id": "after"})
        assert fabric(redis_server, namespace, "submit", "-", stdin=other).returncode == 0
        wait_until(lambda: client.xlen(keys.results(64)) == 3, 30, "the next job's result")
        assert worker.process.poll() is None
    finally:
        worker.stop()
        client.close()
    results = [
        decode_result(f) for _, f in redis.Redis.from_url(redis_server.url).xrange(keys.results(64))
    ]
    assert sorted((r.id, r.finish_reason) for r in results) == [
        ("after", "length"),
        ("c0", "cancelled"),
        ("c1", "cancelled"),
    ]
    shown = fabric(redis_server, namespace, "batch", "results", "stop-me")
    assert [orjson.loads(x)["finish_reason"] for x in shown.stdout.splitlines()] == [
        "cancelled"
    ] * 2


def test_wait_draws_a_progress_bar_on_a_terminal(redis_server: RedisServer, namespace: str) -> None:
    assert fabric(redis_server, namespace, "init").returncode == 0
    data = jsonl({"tokens": [1, 2], "max_new_tokens": 3, "id": "t"})
    assert (
        fabric(redis_server, namespace, "submit", "-", "--batch", "tty", stdin=data).returncode == 0
    )
    main, side = pty.openpty()
    env = {**os.environ, "FABRIC_REDIS_URL": redis_server.url, "FABRIC_NAMESPACE": namespace}
    env.pop("NO_COLOR", None)
    with subprocess.Popen(
        [sys.executable, "-m", "fabric_worker", "batch", "wait", "tty", "--timeout", "0.5"],
        env={**env, "TERM": "xterm", "COLUMNS": "80"},
        stdout=subprocess.PIPE,
        stderr=side,
    ) as waiting:
        os.close(side)
        drawn = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the other side closed: the command is done
                break
            if not chunk:
                break
            drawn += chunk
        out, _ = waiting.communicate(timeout=30)
    os.close(main)
    assert waiting.returncode == 7
    assert b"batch tty" in drawn and b"0/1" in drawn, drawn
    assert b"finished\r\n" not in drawn  # the bar, not the count lines
    assert b"left 1" in out
