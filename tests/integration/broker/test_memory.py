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
from producers import FabricClient, Job

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
