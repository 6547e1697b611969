"""The scripts under OOM (maxmemory below what Redis holds, noeviction): those
that add data are refused whole, the rest still run."""

from __future__ import annotations

import pytest
import redis

from fabric_worker.broker.namespace import init_namespace
from fabric_worker.broker.scripts import register
from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import GROUP, Keys
from producers import FabricClient, Job, RedisMemoryError

pytestmark = pytest.mark.integration

LANE = 64


def test_adding_scripts_are_refused_whole_and_the_others_run(
    own_redis_server: RedisServer, keys: Keys
) -> None:
    client = redis.Redis.from_url(own_redis_server.url)
    config = FleetConfig(lanes=(LANE,), vocab_size=100, max_seq_len=128, backlog_cap_tokens=10**6)
    init_namespace(client, keys, config)
    FabricClient(client, keys.namespace).submit([Job(tokens=[1, 2], max_new_tokens=4, id="a")])
    jobs = keys.jobs(LANE)
    [[_, [(entry_id, _fields)]]] = client.xreadgroup(GROUP, "c", {jobs: ">"}, count=1)
    client.config_set("maxmemory", "1")
    try:
        submit = register(client, "submit")
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            submit(
                keys=[jobs, keys.backlog(LANE), keys.job(LANE, "b")],
                args=[10**6, "n", 6, b"h", b"t"],
            )
        assert client.xlen(jobs) == 1 and not client.exists(keys.job(LANE, "b"))
        assert register(client, "renew")(keys=[jobs], args=[GROUP, "c", entry_id]) == []
        assert register(client, "retry")(keys=[jobs], args=[GROUP, "c", entry_id, 10**6])
    finally:
        client.config_set("maxmemory", "0")
        client.close()


def test_a_round_refused_in_part_for_memory_counts_what_went_through_once(
    own_redis_server: RedisServer, keys: Keys
) -> None:
    """One script call of a round goes through, the other is refused whole: its
    800 KB of arguments alone take Redis past maxmemory (a client's query
    buffer counts as used memory). The batch that went through is counted once
    as submitted and never sent again (resent after a worker finished it, it
    would come back as a duplicate); only the refused batch waits for memory."""
    client = redis.Redis.from_url(own_redis_server.url)
    config = FleetConfig(
        lanes=(LANE, 1024), vocab_size=100, max_seq_len=2048, backlog_cap_tokens=10**8
    )
    init_namespace(client, keys, config)
    producer = FabricClient(client, keys.namespace, backpressure_timeout_s=0.3)
    producer.submit([Job(tokens=[1], max_new_tokens=1, id="warm")])  # script loaded, config read
    long_jobs = [Job(tokens=[7] * 1000, max_new_tokens=4, id=f"long{i}") for i in range(200)]
    short_jobs = [Job(tokens=[1, 2], max_new_tokens=4, id=f"short{i}") for i in range(10)]
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", str(used + 100_000))
    try:
        with pytest.raises(RedisMemoryError) as refused:
            producer.submit(long_jobs + short_jobs)
        report = refused.value.report
        assert (report.num_submitted, report.num_duplicates) == (10, 0)
        assert refused.value.num_pending == 200
        assert client.xlen(keys.jobs(LANE)) == 11  # the warm-up job and the short ones
        assert client.xlen(keys.jobs(1024)) == 0
    finally:
        client.config_set("maxmemory", "0")
        client.close()
