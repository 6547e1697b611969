"""`fabric dlq list|replay|purge` and replay.lua against a real redis-server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis
import redis.asyncio

from fabric_worker.broker.dlq import DeadLetters, ReplayOutcome, iter_dead_letters
from fabric_worker.broker.namespace import init_namespace
from fabric_worker.broker.streams import Broker
from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.wire.claims import DeadLetter
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import Keys
from producers import FabricClient, Job
from tests.integration.harness import (
    WorkerProcess,
    num_pending,
    result_counts,
    result_named_by_state,
)

pytestmark = pytest.mark.integration

LANES = (64, 128)
POISON = 7


def fabric(
    server: RedisServer, namespace: str, *args: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FABRIC_REDIS_URL": server.url, "FABRIC_NAMESPACE": namespace}
    return subprocess.run(
        [sys.executable, "-m", "fabric_worker", *args],
        input=stdin.decode(),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def setup(server: RedisServer, keys: Keys, **changes: object) -> redis.Redis:
    client = redis.Redis.from_url(server.url)
    settings: dict[str, object] = {
        "lanes": LANES,
        "vocab_size": 1000,
        "max_seq_len": 512,
        "backlog_cap_tokens": 10**9,
        "lease_s": 1.0,
        "max_deliveries": 2,
        **changes,
    }
    init_namespace(client, keys, FleetConfig(**settings))  # type: ignore[arg-type]
    return client


def submit(client: redis.Redis, keys: Keys, *jobs: Job) -> None:
    report = FabricClient(client, keys.namespace).submit(list(jobs))
    assert report.num_submitted == len(jobs)


def dead_letter(
    server: RedisServer, keys: Keys, lane: int, entry_id: bytes, job_id: str | None, cost: int
) -> None:
    """Dead-letter one entry the way a worker does (Broker.dead_letter)."""

    async def run() -> str:
        client = redis.asyncio.Redis.from_url(server.url)
        try:
            broker = Broker(client, keys, "test-worker", retention_s=3600)
            letter = DeadLetter(lane, entry_id, job_id, cost, "test reason", 3, "boom")
            [reply] = await broker.dead_letter([letter])
            return reply
        finally:
            await client.aclose()

    assert asyncio.run(run()) == "dead"


def kill_job(server: RedisServer, client: redis.Redis, keys: Keys, job: Job, lane: int) -> None:
    state = client.get(keys.job(lane, job.id or ""))
    assert state is not None and state.startswith(b"queued ")
    entry_id = state.split()[1]
    dead_letter(server, keys, lane, entry_id, job.id, lane + job.max_new_tokens)


def backlog(client: redis.Redis, keys: Keys, lane: int) -> int:
    return int(client.get(keys.backlog(lane)) or 0)


def test_a_poisoned_job_is_listed_and_completes_once_after_replay(
    redis_server: RedisServer, keys: Keys, tmp_path: Path
) -> None:
    client = setup(redis_server, keys)
    good = [Job(tokens=[1, 2, i + 10], max_new_tokens=3, id=f"g{i}") for i in range(5)]
    bad = Job(tokens=[1, POISON, 2], max_new_tokens=4, id="poison")
    submit(client, keys, *good, bad)
    sick = WorkerProcess(
        redis_server.url, keys.namespace, tmp_path, "--burst", "--fault", f"poison_token={POISON}"
    )
    try:
        assert sick.wait(60) == 0, sick.log
    finally:
        sick.stop()
    assert client.get(keys.job(64, "poison")) == b"dead"

    listed = fabric(redis_server, keys.namespace, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == [
        "lane",
        "entry",
        "job",
        "deliveries",
        "failed_at",
        "worker",
        "reason",
        "error",
    ]
    assert row.split()[0] == "64" and row.split()[2] == "poison" and row.split()[3] == "2"
    assert "engine failed it on each of 2 deliveries" in row
    assert f"poison token {POISON}" in row
    doc = orjson.loads(fabric(redis_server, keys.namespace, "dlq", "list", "--json").stdout)
    [letter] = doc["dead_letters"]
    assert doc["total"] == 1
    assert (letter["job_id"], letter["lane"], letter["deliveries"]) == ("poison", 64, 2)
    assert (letter["worker"], letter["replayable"], letter["cost_tokens"]) == ("w", True, 68)
    assert letter["reason"] == "engine failed it on each of 2 deliveries"

    replayed = fabric(redis_server, keys.namespace, "dlq", "replay", "--id", "poison")
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1, kept 0, not found 0" in replayed.stdout
    state = client.get(keys.job(64, "poison"))
    assert state is not None and state.startswith(b"queued ") and state.endswith(b" replay")
    assert client.ttl(keys.job(64, "poison")) == -1  # queued never expires
    assert backlog(client, keys, 64) == 64 + 4
    assert client.xlen(keys.dlq(64)) == 0

    fixed = WorkerProcess(redis_server.url, keys.namespace, tmp_path, "--burst", name="fixed")
    try:
        assert fixed.wait(60) == 0, fixed.log
    finally:
        fixed.stop()
    counts = result_counts(client, keys, LANES)
    assert counts == dict.fromkeys([*(j.id for j in good), "poison"], 1)
    assert result_named_by_state(client, keys, 64, "poison") == "poison"
    assert backlog(client, keys, 64) == 0 and num_pending(client, keys, LANES) == 0
    assert fabric(redis_server, keys.namespace, "dlq", "list").stdout.startswith("no dead letters")
    again = fabric(redis_server, keys.namespace, "dlq", "replay", "--id", "poison")
    assert again.returncode == 1
    assert "no dead letter for 'poison'" in again.stderr


def test_replay_script_restores_the_job_exactly_and_atomically(
    redis_server: RedisServer, keys: Keys
) -> None:
    client = setup(redis_server, keys)
    job = Job(tokens=[5, 6, 7, 8], max_new_tokens=9, id="a", prefix_class="c", end_id=3)
    submit(client, keys, job)
    [(_, original)] = client.xrange(keys.jobs(64))
    kill_job(redis_server, client, keys, job, 64)
    assert backlog(client, keys, 64) == 0 and client.xlen(keys.jobs(64)) == 0
    [letter] = iter_dead_letters(client, keys, LANES)
    dead = DeadLetters(client, keys)
    result = dead.replay(letter)
    assert result.outcome is ReplayOutcome.REPLAYED
    [(entry_id, fields)] = client.xrange(keys.jobs(64))
    assert fields == original  # h and t byte for byte
    assert entry_id.decode() == result.detail
    assert client.get(keys.job(64, "a")) == b"queued " + entry_id + b" replay"
    assert backlog(client, keys, 64) == 64 + 9
    assert client.xlen(keys.dlq(64)) == 0
    # A second replay of the same dead letter finds it gone and changes nothing.
    assert dead.replay(letter).outcome is ReplayOutcome.GONE
    assert client.xlen(keys.jobs(64)) == 1 and backlog(client, keys, 64) == 64 + 9
    # A producer retrying the job now gets a duplicate, not a second entry.
    assert FabricClient(client, keys.namespace).submit([job]).num_duplicates == 1


def test_replay_leaves_jobs_that_were_done_or_submitted_again(
    redis_server: RedisServer, keys: Keys
) -> None:
    client = setup(redis_server, keys)
    jobs = [Job(tokens=[1, 2], max_new_tokens=2, id=name) for name in ("done", "again", "expired")]
    submit(client, keys, *jobs)
    for job in jobs:
        kill_job(redis_server, client, keys, job, 64)
    client.set(keys.job(64, "done"), "done")
    client.delete(keys.job(64, "again"), keys.job(64, "expired"))  # as retention would
    submit(client, keys, jobs[1])
    queued_before = client.get(keys.job(64, "again"))
    backlog_before = backlog(client, keys, 64)
    result = fabric(redis_server, keys.namespace, "dlq", "replay", "--all")
    assert result.returncode == 1
    assert "replayed 1, kept 2, not found 0" in result.stdout
    assert "kept job done (lane 64" in result.stderr and "already done" in result.stderr
    assert "kept job again (lane 64" in result.stderr and "already queued" in result.stderr
    assert "replayed job expired (lane 64" in result.stdout
    assert client.get(keys.job(64, "again")) == queued_before
    assert backlog(client, keys, 64) == backlog_before + 64 + 2
    assert sorted(d.job_id or "" for d in iter_dead_letters(client, keys, LANES)) == [
        "again",
        "done",
    ]


def test_unparseable_dead_letters_are_kept_unless_forced(
    redis_server: RedisServer, keys: Keys
) -> None:
    client = setup(redis_server, keys)
    raw = client.xadd(keys.jobs(128), {"h": b"{not json", "t": b"\x01\x00\x00\x00"})
    dead_letter(redis_server, keys, 128, raw, None, 0)
    good = Job(tokens=[1] * 100, max_new_tokens=5, id="ok")
    submit(client, keys, good)
    kill_job(redis_server, client, keys, good, 128)

    result = fabric(redis_server, keys.namespace, "dlq", "replay", "--all")
    assert result.returncode == 1
    assert "replayed 1, kept 1, not found 0" in result.stdout
    assert "(lane 128, no job id in its header)" in result.stderr
    assert "not replayable (--force replays it as is)" in result.stderr
    [kept] = iter_dead_letters(client, keys, LANES)
    assert (kept.job_id, kept.is_replayable, kept.reason) == (None, False, "test reason")
    assert backlog(client, keys, 128) == 128 + 5

    forced = fabric(redis_server, keys.namespace, "dlq", "replay", "--all", "--force")
    assert forced.returncode == 0, forced.stderr
    assert client.xlen(keys.dlq(128)) == 0
    assert [f[b"h"] for _, f in client.xrange(keys.jobs(128))][-1] == b"{not json"
    assert backlog(client, keys, 128) == 128 + 5  # a forced entry carries no cost


def test_purge_deletes_dead_letters_and_keeps_the_ids_deduped(
    redis_server: RedisServer, keys: Keys
) -> None:
    client = setup(redis_server, keys)
    jobs = [Job(tokens=[1, 2, 3], max_new_tokens=2, id=name) for name in ("a", "b", "c")]
    submit(client, keys, *jobs)
    for job in jobs:
        kill_job(redis_server, client, keys, job, 64)

    unconfirmed = fabric(redis_server, keys.namespace, "dlq", "purge", "--id", "a")
    assert unconfirmed.returncode == 2
    assert "this deletes 1 dead letter(s); pass --yes" in unconfirmed.stderr
    assert client.xlen(keys.dlq(64)) == 3

    [letter_b] = [d for d in iter_dead_letters(client, keys, LANES) if d.job_id == "b"]
    purged = fabric(
        redis_server,
        keys.namespace,
        "dlq",
        "purge",
        "--id",
        "a",
        "--entry",
        letter_b.entry_id,
        "--id",
        "nosuch",
        "--yes",
    )
    assert purged.returncode == 1  # one name was not found
    assert "purged 2, not found 1" in purged.stdout
    assert "no dead letter for 'nosuch'" in purged.stderr
    assert [d.job_id for d in iter_dead_letters(client, keys, LANES)] == ["c"]
    assert client.get(keys.job(64, "a")) == b"dead"
    resubmit = fabric(
        redis_server,
        keys.namespace,
        "submit",
        "-",
        stdin=b'{"tokens": [1, 2, 3], "max_new_tokens": 2, "id": "a"}\n',
    )
    assert resubmit.stdout == "submitted 0, duplicates 1\n"

    everything = fabric(redis_server, keys.namespace, "dlq", "purge", "--all", "--yes")
    assert everything.returncode == 0, everything.stderr
    assert "purged 1, not found 0" in everything.stdout
    assert client.xlen(keys.dlq(64)) == 0


def test_list_filters_by_lane_and_limits(redis_server: RedisServer, keys: Keys) -> None:
    client = setup(redis_server, keys)
    short = [Job(tokens=[1], max_new_tokens=1, id=f"s{i}") for i in range(3)]
    long = Job(tokens=[1] * 100, max_new_tokens=1, id="long")
    submit(client, keys, *short, long)
    for job in short:
        kill_job(redis_server, client, keys, job, 64)
    kill_job(redis_server, client, keys, long, 128)

    lane = orjson.loads(
        fabric(redis_server, keys.namespace, "dlq", "list", "--lane", "128", "--json").stdout
    )
    assert [d["job_id"] for d in lane["dead_letters"]] == ["long"] and lane["total"] == 1
    limited = fabric(redis_server, keys.namespace, "dlq", "list", "--limit", "2")
    assert limited.returncode == 0
    assert [line.split()[2] for line in limited.stdout.splitlines()[1:]] == ["s0", "s1"]
    assert "showing 2 of 4 dead letters (--limit)" in limited.stderr
    every = orjson.loads(fabric(redis_server, keys.namespace, "dlq", "list", "--json").stdout)
    assert [d["job_id"] for d in every["dead_letters"]] == ["s0", "s1", "s2", "long"]
    assert every["namespace"] == keys.namespace


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("dlq", "replay"), 2, "name dead letters with --id/--entry, or pass --all"),
        (("dlq", "replay", "--id", "x", "--all"), 2, "or pass --all (not both)"),
        (("dlq", "purge", "--yes"), 2, "name dead letters with --id/--entry"),
        (("dlq", "list", "--lane", "99"), 2, "99 is not a lane of namespace"),
        (("dlq", "replay", "--lane", "65", "--all"), 2, "(lanes: 64,128)"),
        (("dlq", "list", "--limit", "0"), 2, "--limit"),
        (("dlq", "replay", "--id", "nosuch"), 1, "no dead letter for 'nosuch'"),
        (("dlq", "frobnicate"), 2, "No such command 'frobnicate'"),
    ],
)
def test_bad_arguments_give_clear_errors(
    redis_server: RedisServer, keys: Keys, args: tuple[str, ...], code: int, message: str
) -> None:
    setup(redis_server, keys)
    result = fabric(redis_server, keys.namespace, *args)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert message in result.stderr


def test_dlq_before_init_says_what_to_do(redis_server: RedisServer, namespace: str) -> None:
    result = fabric(redis_server, namespace, "dlq", "list")
    assert result.returncode == 2
    assert "run `fabric init` first" in result.stderr
