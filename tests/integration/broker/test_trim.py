"""Trimming results past the retention against a real redis-server: by the
server's clock, exactly at the cutoff, through a full Redis, and what a lookup
of a trimmed result then says."""

from __future__ import annotations

import asyncio
import time
from array import array

import pytest
import redis
import redis.asyncio

from fabric_worker.broker import scripts
from fabric_worker.broker.lookup import lookup
from fabric_worker.broker.namespace import init_namespace
from fabric_worker.broker.scripts import register
from fabric_worker.broker.streams import Broker
from fabric_worker.broker.trim import server_time_ms, trim_results
from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.wire.claims import Completion
from fabric_worker.wire.entries import ResultEntry, decode_result, encode_result
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import GROUP, Keys
from fabric_worker.worker.housekeeping import Housekeeper
from producers import FabricClient, Job

pytestmark = pytest.mark.integration

LANES = (64, 128)
RETENTION_S = 1


def setup(client: redis.Redis, keys: Keys) -> FleetConfig:
    config = FleetConfig(
        lanes=LANES, vocab_size=100, max_seq_len=256, backlog_cap_tokens=10**6,
        retention_s=RETENTION_S,
    )  # fmt: skip
    return init_namespace(client, keys, config).config


def result_fields(job_id: str) -> dict[str, bytes]:
    now = time.time()
    return encode_result(ResultEntry(job_id, [1, 2], "stop", 1, "w", now, now, now))


def add_results(client: redis.Redis, keys: Keys, lane: int, at_ms: int, ids: list[str]) -> None:
    """Results written at server time ``at_ms`` (explicit entry ids: no waiting)."""
    for seq, job_id in enumerate(ids):
        client.xadd(keys.results(lane), result_fields(job_id), id=f"{at_ms}-{seq}")


def result_ids(client: redis.Redis, keys: Keys, lane: int) -> list[str]:
    return [decode_result(f).id for _, f in client.xrange(keys.results(lane))]


def test_results_older_than_the_retention_go_and_younger_ones_stay(
    own_redis_server: RedisServer, keys: Keys
) -> None:
    client = redis.Redis.from_url(own_redis_server.url)
    setup(client, keys)
    now_ms = server_time_ms(client.time())
    cutoff_ms = now_ms - RETENTION_S * 1000
    add_results(client, keys, 64, cutoff_ms - 5000, ["old-a", "old-b"])
    add_results(client, keys, 64, cutoff_ms - 1, ["just-past"])
    # A few ms after the cutoff: still inside the retention when trimming reads TIME.
    add_results(client, keys, 64, cutoff_ms + 500, ["young-a", "young-b"])
    add_results(client, keys, 128, cutoff_ms - 10, ["old-c"])
    trimmed = trim_results(client, keys, LANES, RETENTION_S)
    assert trimmed.num_removed == {64: 3, 128: 1}
    assert trimmed.cutoff.ms >= cutoff_ms  # the server's clock, read at the trim
    assert result_ids(client, keys, 64) == ["young-a", "young-b"]
    assert result_ids(client, keys, 128) == []
    assert trim_results(client, keys, LANES, RETENTION_S).num_removed == {64: 0, 128: 0}
    client.close()


def complete_one(client: redis.Redis, keys: Keys, job_id: str) -> bytes:
    """Submit a job and complete it with the real complete script; its result id."""
    FabricClient(client, keys.namespace).submit(
        [Job(tokens=array("I", [1, 2]), max_new_tokens=2, id=job_id)]
    )
    [[_, [(entry_id, _)]]] = client.xreadgroup(GROUP, "c", {keys.jobs(64): ">"}, count=1)
    fields = result_fields(job_id)
    done = Completion(64, entry_id, job_id, 66, fields["h"], fields["t"])
    call = scripts.complete(keys, 64, [done], retention_s=RETENTION_S)
    assert register(client, "complete")(keys=call.keys, args=call.args) == [b"ok"]
    [(result_id, _)] = client.xrevrange(keys.results(64), count=1)  # the newest: this one
    return bytes(result_id)


def wait_for_server_time(client: redis.Redis, past_ms: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while server_time_ms(client.time()) <= past_ms:
        assert time.monotonic() < deadline, "the server's clock did not move"
        time.sleep(0.02)


def test_a_lookup_of_a_trimmed_result_says_so(own_redis_server: RedisServer, keys: Keys) -> None:
    client = redis.Redis.from_url(own_redis_server.url)
    setup(client, keys)
    complete_one(client, keys, "kept-state")
    gone_id = complete_one(client, keys, "gone")
    # A state that outlives its result (as one written with a longer retention
    # would): the lookup must say the result was trimmed, not crash or say done.
    client.persist(keys.job(64, "kept-state"))
    wait_for_server_time(client, int(gone_id.split(b"-")[0]) + RETENTION_S * 1000)
    assert trim_results(client, keys, LANES, RETENTION_S).num_removed == {64: 2, 128: 0}
    [found] = lookup(client, keys, LANES, ["kept-state"])
    assert (found.state, found.lane, found.result) == ("trimmed", 64, None)
    # The usual case: the state expired with the retention, like its result.
    assert client.get(keys.job(64, "gone")) is None
    [unknown] = lookup(client, keys, LANES, ["gone"])
    assert (unknown.state, unknown.result) == ("unknown", None)
    client.close()


@pytest.mark.timeout(60)
def test_a_worker_out_of_memory_trims_and_its_write_then_goes_through(
    own_redis_server: RedisServer, keys: Keys
) -> None:
    client = redis.Redis.from_url(own_redis_server.url)
    config = setup(client, keys)
    old_ms = server_time_ms(client.time()) - 60_000
    for start in range(0, 20_000, 1000):
        pipe = client.pipeline(transaction=False)
        for seq in range(start, start + 1000):
            pipe.xadd(keys.results(64), result_fields(f"old{seq}"), id=f"{old_ms}-{seq}")
        pipe.execute()
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", str(used - 2**20))  # full: a write is refused
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("probe", "x")

    async def body() -> tuple[bool, int, int]:
        aclient = redis.asyncio.Redis.from_url(own_redis_server.url)
        broker = Broker(aclient, keys, "w", retention_s=config.retention_s, outage_budget_s=20)
        stop = asyncio.Event()
        # Its timer would not trim for an hour: only meeting OOM makes it trim.
        keeper = Housekeeper(broker, LANES, RETENTION_S, stop, log=print, every_s=3600)
        for lane in LANES:
            keeper.schedule.trimmed(lane, time.monotonic())
        task = asyncio.create_task(keeper.run())
        try:
            wrote = await broker.link.call(lambda: aclient.set("probe", "x"))
        finally:
            stop.set()
            await task
            await aclient.aclose()
        return bool(wrote), keeper.num_removed, broker.link.num_retries

    wrote, num_removed, num_retries = asyncio.run(body())
    assert wrote and num_retries >= 1  # refused first, written after the trim
    assert num_removed == 20_000 and client.xlen(keys.results(64)) == 0
    client.config_set("maxmemory", "0")
    client.close()
