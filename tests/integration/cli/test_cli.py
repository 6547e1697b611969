"""The `fabric` command line as an operator runs it: real process, real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis

from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.wire.entries import ResultEntry, decode_result, encode_result
from fabric_worker.wire.keys import Keys
from tests.integration.harness import WorkerProcess, result_counts

pytestmark = pytest.mark.integration


def fabric(
    server: RedisServer, namespace: str, *args: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "FABRIC_REDIS_URL": server.url, "FABRIC_NAMESPACE": namespace}
    return subprocess.run(
        [sys.executable, "-m", "fabric_worker", *args],
        input=stdin,
        env=env,
        capture_output=True,
        timeout=60,
    )


def jsonl(*jobs: dict[str, object]) -> bytes:
    return b"".join(orjson.dumps(job) + b"\n" for job in jobs)


def test_init_is_idempotent_and_refuses_new_lanes_while_work_is_held(
    redis_server: RedisServer, namespace: str
) -> None:
    first = fabric(redis_server, namespace, "init", "--lanes", "64,128")
    assert first.returncode == 0
    assert b"created (config version 1, 2 lanes: 64,128)" in first.stdout
    again = fabric(redis_server, namespace, "init", "--lanes", "64,128")
    assert b"unchanged (config version 1" in again.stdout
    bumped = fabric(redis_server, namespace, "init", "--lanes", "64,128", "--lease-s", "5")
    assert b"updated (config version 2" in bumped.stdout
    submitted = fabric(
        redis_server,
        namespace,
        "submit",
        "-",
        stdin=jsonl({"tokens": [1] * 100, "max_new_tokens": 4, "id": "a"}),
    )
    assert submitted.returncode == 0, submitted.stderr
    refused = fabric(redis_server, namespace, "init", "--lanes", "64,256")
    assert refused.returncode == 2
    assert b"refusing to change the lane boundaries" in refused.stderr
    assert b"lane 128: 1 entries, 132 backlog tokens" in refused.stderr


def test_submit_reports_and_dedupes(redis_server: RedisServer, namespace: str) -> None:
    assert fabric(redis_server, namespace, "init").returncode == 0
    data = jsonl(
        *(
            {"tokens": [i, 2, 3], "max_new_tokens": 5, "id": f"s{i}", "class": "x"}
            for i in range(20)
        )
    )
    first = fabric(redis_server, namespace, "submit", "-", stdin=data)
    assert (first.returncode, first.stdout) == (0, b"submitted 20, duplicates 0\n")
    again = fabric(redis_server, namespace, "submit", "-", stdin=data)
    assert (again.returncode, again.stdout) == (0, b"submitted 0, duplicates 20\n")


def test_submit_names_every_bad_line_and_writes_nothing(
    redis_server: RedisServer, namespace: str, tmp_path: object
) -> None:
    assert (
        fabric(
            redis_server, namespace, "init", "--lanes", "64,128", "--vocab-size", "50"
        ).returncode
        == 0
    )
    lines = [
        b'{"tokens": [1, 2], "max_new_tokens": 3, "id": "good"}',
        b'{"tokens": [1, 50], "max_new_tokens": 3}',
        b"",
        b"{not json",
        b'{"tokens": [1], "max_new_tokens": 3, "id": "good"}',
        b'{"tokens": [1], "max_new_tokens": 0}',
        b'{"tokens": [1], "max_new_tokens": 3, "colour": "red"}',
        b'{"tokens": [' + b"1," * 128 + b'1], "max_new_tokens": 3}',
        b'{"tokens": [1], "max_new_tokens": 3, "id": "no spaces"}',
        b'"just a string"',
    ]
    result = fabric(redis_server, namespace, "submit", "-", stdin=b"\n".join(lines) + b"\n")
    assert result.returncode == 2
    errors = result.stderr.decode().splitlines()
    assert errors == [
        "line 2: tokens[1] = 50 is outside [0, 50)",
        "line 4: not valid JSON: " + errors[1].split("not valid JSON: ", 1)[1],
        "line 5: id 'good' appears twice in the file",
        "line 6: max_new_tokens must be an integer >= 1, got 0",
        "line 7: unknown field 'colour' (known: class, end_id, id, max_new_tokens, tokens)",
        "line 8: prompt of 129 tokens exceeds the largest lane (128)",
        "line 9: id 'no spaces' must be 1 to 128 characters from [A-Za-z0-9._:-]",
        "line 10: expected a JSON object, got str",
        "8 bad line(s); nothing submitted",
    ]
    client = redis.Redis.from_url(redis_server.url)
    assert client.xlen(Keys(namespace).jobs(64)) == 0


def test_submit_before_init_says_what_to_do(redis_server: RedisServer, namespace: str) -> None:
    result = fabric(
        redis_server, namespace, "submit", "-", stdin=jsonl({"tokens": [1], "max_new_tokens": 1})
    )
    assert result.returncode == 2
    assert (
        f"namespace '{namespace}' has no config: run `fabric init` first".encode() in result.stderr
    )


def test_unreachable_redis_is_one_clear_line(namespace: str) -> None:
    env = {**os.environ, "FABRIC_REDIS_URL": "redis://127.0.0.1:1/0", "FABRIC_NAMESPACE": namespace}
    result = subprocess.run(
        [sys.executable, "-m", "fabric_worker", "inspect"], env=env, capture_output=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.startswith(b"error: cannot reach Redis")
    assert b"Traceback" not in result.stderr


def test_inspect_figures_after_a_known_submit(redis_server: RedisServer, namespace: str) -> None:
    assert fabric(redis_server, namespace, "init", "--lanes", "64,128,256").returncode == 0
    jobs = [{"tokens": [1] * n, "max_new_tokens": 10} for n in (10, 20, 100, 200, 250)]
    assert fabric(redis_server, namespace, "submit", "-", stdin=jsonl(*jobs)).returncode == 0
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys(namespace)
    client.xreadgroup("workers", "w1", {keys.jobs(256): ">"}, count=1)  # one in flight
    doc = orjson.loads(fabric(redis_server, namespace, "inspect", "--json").stdout)
    lanes = {lane["lane"]: lane for lane in doc["lanes"]}
    assert lanes[64] | {"consumers": None} == {
        "lane": 64,
        "queued": 2,
        "in_flight": 0,
        "backlog_tokens": 148,
        "lag": 2,
        "consumers": None,
        "dead": 0,
        "results": 0,
    }
    assert (lanes[128]["queued"], lanes[128]["backlog_tokens"]) == (1, 138)
    assert (lanes[256]["queued"], lanes[256]["in_flight"], lanes[256]["backlog_tokens"]) == (
        1,
        1,
        532,
    )
    assert [c["name"] for c in lanes[256]["consumers"]] == ["w1"]
    table = fabric(redis_server, namespace, "inspect").stdout.decode()
    assert "backlog_tokens" in table and "w1 (1, idle" in table


def test_results_continue_where_the_group_stopped(
    redis_server: RedisServer, namespace: str
) -> None:
    assert fabric(redis_server, namespace, "init", "--lanes", "64").returncode == 0
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys(namespace)

    def add(job_id: str) -> None:
        result = ResultEntry(
            id=job_id,
            tokens=[1, 2],
            finish_reason="length",
            deliveries=1,
            worker="w",
            submitted_at=1.0,
            started_at=2.0,
            finished_at=3.5,
        )
        client.xadd(keys.results(64), encode_result(result))  # type: ignore[arg-type]

    add("r1")
    add("r2")
    first = [
        orjson.loads(line)
        for line in fabric(redis_server, namespace, "results").stdout.splitlines()
    ]
    assert [r["id"] for r in first] == ["r1", "r2"]
    assert first[0] | {"latency_s": 2.5, "tokens": [1, 2], "worker": "w"} == first[0]
    add("r3")
    second = fabric(redis_server, namespace, "results").stdout.splitlines()
    assert [orjson.loads(line)["id"] for line in second] == ["r3"]
    rewound = fabric(redis_server, namespace, "results", "--from-start").stdout.splitlines()
    assert len(rewound) == 3
    other = fabric(redis_server, namespace, "results", "--group", "audit").stdout.splitlines()
    assert len(other) == 3


def test_results_from_start_prints_each_result_once_after_an_unacked_batch(
    redis_server: RedisServer, namespace: str
) -> None:
    assert fabric(redis_server, namespace, "init", "--lanes", "64").returncode == 0
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys(namespace)
    stream = keys.results(64)
    for i in range(200):
        result = ResultEntry(
            id=f"r{i}",
            tokens=[1],
            finish_reason="length",
            deliveries=1,
            worker="w",
            submitted_at=1.0,
            started_at=2.0,
            finished_at=3.0,
        )
        client.xadd(stream, encode_result(result))  # type: ignore[arg-type]
    assert len(fabric(redis_server, namespace, "results").stdout.splitlines()) == 200
    # A reader that died holding a batch it never acked.
    client.xreadgroup("results", "reader", {stream: "0"}, count=42)
    client.xgroup_setid(stream, "results", id="0")
    client.xreadgroup("results", "reader", {stream: ">"}, count=42)
    assert client.xpending(stream, "results")["pending"] == 42
    rewound = fabric(redis_server, namespace, "results", "--from-start").stdout.splitlines()
    ids = [orjson.loads(line)["id"] for line in rewound]
    assert sorted(ids) == sorted(f"r{i}" for i in range(200))
    assert fabric(redis_server, namespace, "results").stdout == b""


def test_submit_to_a_full_redis_waits_then_fails_naming_memory_and_writes_nothing(
    own_redis_server: RedisServer, namespace: str
) -> None:
    assert fabric(own_redis_server, namespace, "init", "--lanes", "64").returncode == 0
    client = redis.Redis.from_url(own_redis_server.url)
    keys = Keys(namespace)
    client.config_set("maxmemory", "1")
    inspected = fabric(own_redis_server, namespace, "inspect")
    assert (
        b"Redis memory: used " in inspected.stdout and b"of maxmemory 0.0 MiB" in inspected.stdout
    )
    data = jsonl(*({"tokens": [1, 2], "max_new_tokens": 4, "id": f"m{i}"} for i in range(50)))
    full = fabric(
        own_redis_server, namespace, "submit", "--backpressure-timeout-s", "1", "-", stdin=data
    )
    assert full.returncode == 6, full.stderr
    assert b"Redis is out of memory (used " in full.stderr
    assert b"50 job(s) not submitted" in full.stderr
    assert len(full.stderr.splitlines()) == 1, full.stderr
    assert client.xlen(keys.jobs(64)) == 0
    assert client.get(keys.backlog(64)) in (None, b"0")
    assert not client.exists(keys.job(64, "m0"))
    client.config_set("maxmemory", "0")
    again = fabric(own_redis_server, namespace, "submit", "-", stdin=data)
    assert (again.returncode, again.stdout) == (0, b"submitted 50, duplicates 0\n")
    doc = orjson.loads(fabric(own_redis_server, namespace, "inspect", "--json").stdout)
    assert doc["redis_memory"]["maxmemory_bytes"] == 0


def test_result_by_id_names_each_jobs_state_and_reads_a_recorded_result(
    redis_server: RedisServer, namespace: str
) -> None:
    assert fabric(redis_server, namespace, "init", "--lanes", "64,128").returncode == 0
    data = jsonl(
        {"tokens": [1] * 100, "max_new_tokens": 4, "id": "q"},
        {"tokens": [1, 2], "max_new_tokens": 4, "id": "d"},
    )
    assert fabric(redis_server, namespace, "submit", "-", stdin=data).returncode == 0
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys(namespace)
    # "d" finished on lane 64, its state naming the result entry, as the
    # completing script records it.
    done = ResultEntry(
        id="d",
        tokens=[7, 8],
        finish_reason="length",
        deliveries=1,
        worker="w",
        submitted_at=1.0,
        started_at=2.0,
        finished_at=3.0,
    )
    entry = client.xadd(keys.results(64), encode_result(done))  # type: ignore[arg-type]
    client.set(keys.job(64, "d"), b"done " + entry)
    out = fabric(redis_server, namespace, "result", "q", "d", "nope")
    assert out.returncode == 0, out.stderr
    rows = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert [(r["id"], r["state"], r["lane"]) for r in rows] == [
        ("q", "queued", 128),
        ("d", "done", 64),
        ("nope", "unknown", None),
    ]
    assert rows[1]["tokens"] == [7, 8] and "tokens" not in rows[0]


def test_result_by_id_reads_back_what_a_worker_completed(
    redis_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    assert fabric(redis_server, namespace, "init", "--lanes", "64,128").returncode == 0
    ids = ["a", "b", "c"]
    data = jsonl(
        *(
            {"tokens": [i + 1] * (20 + 40 * i), "max_new_tokens": 3, "id": j}
            for i, j in enumerate(ids)
        )
    )
    assert fabric(redis_server, namespace, "submit", "-", stdin=data).returncode == 0
    worker = WorkerProcess(redis_server.url, namespace, tmp_path, "--burst", name="w")
    try:
        assert worker.wait(60) == 0, worker.log
    finally:
        worker.stop()
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys(namespace)
    assert result_counts(client, keys, (64, 128)) == dict.fromkeys(ids, 1)
    written = {
        decode_result(f).id: decode_result(f).tokens
        for lane in (64, 128)
        for _, f in client.xrange(keys.results(lane))
    }
    out = fabric(redis_server, namespace, "result", *ids)
    assert out.returncode == 0, out.stderr
    rows = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert [(r["id"], r["state"]) for r in rows] == [(j, "done") for j in ids]
    assert {r["id"]: r["tokens"] for r in rows} == {j: list(written[j]) for j in ids}


def test_trim_removes_results_past_the_retention_and_result_says_which_went(
    redis_server: RedisServer, namespace: str
) -> None:
    init = fabric(redis_server, namespace, "init", "--lanes", "64,128", "--retention-s", "60")
    assert init.returncode == 0, init.stderr
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys(namespace)
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    for job_id, age_s in (("old", 3600), ("young", 1)):
        entry = ResultEntry(job_id, [1], "stop", 1, "w", 1.0, 2.0, 3.0)
        entry_id = f"{now_ms - age_s * 1000}-0"
        client.xadd(keys.results(64), encode_result(entry), id=entry_id)  # type: ignore[arg-type]
        # Kept without expiry: the state outlives the result it names.
        client.set(keys.job(64, job_id), f"done {entry_id}")
    out = fabric(redis_server, namespace, "trim")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert lines[0] == "lane 64: trimmed 1 results"
    assert lines[1].startswith("trimmed 1 results older than the retention of 60 s")
    again = fabric(redis_server, namespace, "trim", "--json")
    assert orjson.loads(again.stdout)["removed"] == {"64": 0, "128": 0}
    looked = fabric(redis_server, namespace, "result", "old", "young", "never")
    rows = [orjson.loads(line) for line in looked.stdout.splitlines()]
    assert [(r["id"], r["state"]) for r in rows] == [
        ("old", "trimmed"),
        ("young", "done"),
        ("never", "unknown"),
    ]
    assert rows[0]["note"].endswith("older than the retention of 60 s")
    assert rows[1]["tokens"] == [1] and "note" not in rows[1]
    assert "longer ago than the retention of 60 s" in rows[2]["note"]
    client.close()


def test_inspect_names_a_results_group_that_lags_past_the_retention(
    redis_server: RedisServer, namespace: str
) -> None:
    init = fabric(redis_server, namespace, "init", "--lanes", "64,128", "--retention-s", "60")
    assert init.returncode == 0, init.stderr
    client = redis.Redis.from_url(redis_server.url)
    keys = Keys(namespace)
    stream = keys.results(64)
    seconds, micros = client.time()
    now_ms = seconds * 1000 + micros // 1000
    for group in ("slow", "quick"):
        client.xgroup_create(stream, group, id="0", mkstream=True)
    for i, age_s in enumerate((3600, 3500, 1)):
        entry = ResultEntry(f"r{i}", [1], "stop", 1, "w", 1.0, 2.0, 3.0)
        client.xadd(stream, encode_result(entry), id=f"{now_ms - age_s * 1000}-0")  # type: ignore[arg-type]
    client.xreadgroup("quick", "q", {stream: ">"})  # "quick" has read all three

    def lagging() -> tuple[dict[str, tuple[bool, bool]], str]:
        doc = orjson.loads(fabric(redis_server, namespace, "inspect", "--json").stdout)
        groups = {g["name"]: (g["has_missed"], g["is_behind"]) for g in doc["result_groups"]}
        return groups, fabric(redis_server, namespace, "inspect").stdout.decode()

    # Before the trim: "slow" has two unread results past the retention.
    groups, shown = lagging()
    assert groups == {"slow": (False, True), "quick": (False, False)}
    assert "results group 'slow' of lane 64 lags past the retention: its oldest unread" in shown
    assert "'quick'" not in shown
    assert fabric(redis_server, namespace, "trim").returncode == 0
    # After it: they are gone unread, and inspect says so.
    groups, shown = lagging()
    assert groups == {"slow": (True, False), "quick": (False, False)}
    assert "'slow' of lane 64 lags past the retention: results were trimmed before it" in shown
    # Once it has read what is left, it lags no more.
    client.xreadgroup("slow", "s", {stream: ">"})
    assert lagging()[0] == {"slow": (False, False), "quick": (False, False)}
    client.close()
