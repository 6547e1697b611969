"""The submit path against a real redis-server."""

from __future__ import annotations

import threading

import pytest
import redis

from fabric_worker.broker.namespace import init_namespace
from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.wire.entries import decode_job
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import Keys
from producers import BackpressureError, FabricClient, Job
from tests.integration.proxy import DroppingProxy

pytestmark = pytest.mark.integration

CONFIG = FleetConfig(lanes=(64, 128), vocab_size=1000, max_seq_len=256, backlog_cap_tokens=2000)


BIG_CAP = FleetConfig(lanes=(64, 128), vocab_size=1000, max_seq_len=256, backlog_cap_tokens=10**9)


def make_jobs(n: int, prefix: str = "j") -> list[Job]:
    return [
        Job(tokens=[i % 1000] * (1 + i % 100), max_new_tokens=8, id=f"{prefix}{i}")
        for i in range(n)
    ]


def test_submitted_entries_decode_to_the_jobs(redis_client: redis.Redis, keys: Keys) -> None:
    init_namespace(redis_client, keys, CONFIG)
    client = FabricClient(redis_client, keys.namespace)
    report = client.submit(
        [Job(tokens=[5, 6, 7], max_new_tokens=3, id="a", prefix_class="c", end_id=9)]
    )
    assert report.num_submitted == 1
    [(entry_id, fields)] = redis_client.xrange(keys.jobs(64))
    entry = decode_job(fields, vocab_size=1000, max_prompt_tokens=128)
    assert (
        entry.id,
        entry.tokens.tolist(),
        entry.max_new_tokens,
        entry.prefix_class,
        entry.end_id,
    ) == ("a", [5, 6, 7], 3, "c", 9)
    assert redis_client.get(keys.job(64, "a")).startswith(b"queued " + entry_id + b" ")
    assert int(redis_client.get(keys.backlog(64))) == 64 + 3


def test_retry_after_dropped_reply_enqueues_nothing_twice(
    redis_server: RedisServer, keys: Keys
) -> None:
    direct = redis.Redis.from_url(redis_server.url)
    init_namespace(direct, keys, BIG_CAP)
    proxy = DroppingProxy(redis_server.port)
    try:
        client = FabricClient(redis.Redis.from_url(proxy.url), keys.namespace, retry_budget_s=10)
        assert client.config == FleetConfig.from_hash(direct.hgetall(keys.config))
        # The script's request carries the packed header of the job; drop the
        # reply to the first request that contains it.
        proxy.drop_reply_once(b'"id":"j0"')
        report = client.submit(make_jobs(50))
        assert proxy.num_drops == 1
        assert proxy.num_marked_chunks >= 2  # the round was sent again
        assert (report.num_submitted, report.num_duplicates) == (50, 0)
        total = sum(direct.xlen(keys.jobs(lane)) for lane in CONFIG.lanes)
        assert total == 50
        assert sum(int(direct.get(keys.backlog(lane)) or 0) for lane in CONFIG.lanes) == sum(
            (64 if 1 + i % 100 <= 64 else 128) + 8 for i in range(50)
        )
    finally:
        proxy.close()


def test_backpressure_waits_then_proceeds_when_the_backlog_drains(
    redis_client: redis.Redis, keys: Keys
) -> None:
    init_namespace(redis_client, keys, CONFIG)
    client = FabricClient(redis_client, keys.namespace, backpressure_timeout_s=30)
    jobs = [Job(tokens=[1], max_new_tokens=100, id=f"b{i}") for i in range(16)]  # 164 each: 12 fit
    outcome: dict[str, object] = {}

    def run() -> None:
        outcome["report"] = client.submit(jobs)

    thread = threading.Thread(target=run)
    thread.start()
    # Wait for the first round to land (12 entries), as the workers would see it.
    stream = keys.jobs(64)
    redis_client.xread({stream: "0-0"}, count=1, block=5000)
    while redis_client.xlen(stream) < 12:
        redis_client.xread({stream: "$"}, block=1000)
    assert redis_client.xlen(stream) == 12
    redis_client.decrby(keys.backlog(64), 164 * 4)  # a worker completed four
    thread.join(timeout=30)
    report = outcome["report"]
    assert report.num_submitted == 16  # type: ignore[attr-defined]
    assert redis_client.xlen(stream) == 16


def test_backpressure_times_out_with_a_clear_error(redis_client: redis.Redis, keys: Keys) -> None:
    init_namespace(redis_client, keys, CONFIG)
    client = FabricClient(redis_client, keys.namespace, backpressure_timeout_s=0.3)
    with pytest.raises(BackpressureError, match="stayed at the cap of 2000 tokens") as info:
        client.submit([Job(tokens=[1], max_new_tokens=100, id=f"c{i}") for i in range(14)])
    assert (info.value.report.num_submitted, info.value.num_pending) == (12, 2)
    assert redis_client.xlen(keys.jobs(64)) == 12
    assert int(redis_client.get(keys.backlog(64))) == 12 * 164


def test_a_server_that_lost_the_script_gets_it_again(redis_client: redis.Redis, keys: Keys) -> None:
    """After SCRIPT FLUSH (what a restart does) a round of several calls, in
    two lanes, is refused with NOSCRIPT, loaded, and sent again: every job
    once, none reported twice."""
    init_namespace(redis_client, keys, BIG_CAP)
    client = FabricClient(redis_client, keys.namespace)
    assert client.submit(make_jobs(10, "before")).num_submitted == 10
    redis_client.script_flush()
    report = client.submit(make_jobs(1200, "after"))  # 3 calls: 2 in lane 64, 1 in lane 128
    assert (report.num_submitted, report.num_duplicates) == (1200, 0)
    total = sum(redis_client.xlen(keys.jobs(lane)) for lane in CONFIG.lanes)
    assert total == 1210


def test_an_error_reply_leaves_the_connection_in_step(
    redis_client: redis.Redis, keys: Keys
) -> None:
    """A round whose calls fail (the lane key holds the wrong type) raises the
    server's error, and the next command on the client reads its own reply,
    not one left over from the round."""
    init_namespace(redis_client, keys, BIG_CAP)
    redis_client.set(keys.jobs(128), "not a stream")
    client = FabricClient(redis_client, keys.namespace)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        client.submit(make_jobs(1200))
    assert redis_client.echo("in step") == b"in step"
    # Lane 64's calls ran (its 768 jobs), lane 128's were refused whole.
    assert redis_client.xlen(keys.jobs(64)) == sum(1 + i % 100 <= 64 for i in range(1200))
