"""``replica_acks``: submit and complete followed by WAIT on the writing
connection, against real masters and replicas."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bench.durability import run_durability
from fabric_worker.broker.connection import connect, connect_async
from fabric_worker.broker.namespace import init_namespace
from fabric_worker.broker.replication import AsyncReplicaWriter, SyncReplicaWriter
from fabric_worker.broker.scripts import Call
from fabric_worker.broker.streams import Broker, Completion
from fabric_worker.broker.transient import ReplicationShortfall
from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.dev.replicated import RedisClusterServers
from fabric_worker.fleet.acl import Role, parse_server_version, role_rules, setuser_tokens
from fabric_worker.wire.entries import ResultEntry, encode_result
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import GROUP, Keys
from producers import FabricClient, Job
from tests.integration.harness import WorkerProcess, wait_until

pytestmark = pytest.mark.integration

LANES = (64, 128, 256)


@pytest.fixture
def master_and_replica(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    (tmp_path / "m").mkdir()
    (tmp_path / "r").mkdir()
    master = RedisServer(tmp_path / "m").start()
    replica = RedisServer(
        tmp_path / "r", extra_args=["--replicaof", "127.0.0.1", str(master.port)]
    ).start()
    client = redis.Redis(port=replica.port)
    try:
        wait_until(
            lambda: client.info("replication")["master_link_status"] == "up", 30, "the replica"
        )
    finally:
        client.close()
    yield master, replica
    replica.close()
    master.close()


def _init(url: str, namespace: str, acks: int) -> Keys:
    keys = Keys(namespace)
    config = FleetConfig(
        lanes=LANES, vocab_size=1000, replica_acks=acks, replica_ack_timeout_ms=200
    )
    with connect(url) as client:
        init_namespace(client, keys, config)
    return keys


def _jobs(prefix: str, n: int) -> list[Job]:
    return [
        Job(tokens=[1 + i % 900] * (1 + i % 200), max_new_tokens=4, id=f"{prefix}{i}")
        for i in range(n)
    ]


def test_submit_waits_for_the_replica_and_fails_without_it(
    master_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    master, replica = master_and_replica
    keys = _init(master.url, "r1", acks=1)
    client = FabricClient.from_url(master.url, "r1", retry_budget_s=1.0)
    report = client.submit(_jobs("a", 300))
    assert report.num_submitted == 300
    with connect(replica.url) as on_replica:  # acknowledged means on the replica already
        assert sum(on_replica.xlen(keys.jobs(lane)) for lane in LANES) == 300

    replica.kill()
    with pytest.raises(ReplicationShortfall, match="only 0 of 1 replica"):
        client.submit(_jobs("b", 10))
    # The writes happened on the master: a later submit dedupes them, nothing twice.
    with connect(master.url) as on_master:
        assert sum(on_master.xlen(keys.jobs(lane)) for lane in LANES) == 310
    client.close()


def test_without_replica_acks_submit_does_not_wait(
    master_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    master, replica = master_and_replica
    _init(master.url, "r2", acks=0)
    replica.kill()
    client = FabricClient.from_url(master.url, "r2", retry_budget_s=1.0)
    assert client.submit(_jobs("c", 10)).num_submitted == 10
    client.close()


def test_completions_short_of_replicas_are_counted_not_failed(
    master_and_replica: tuple[RedisServer, RedisServer],
) -> None:
    master, replica = master_and_replica
    keys = _init(master.url, "r3", acks=1)
    FabricClient.from_url(master.url, "r3").submit(_jobs("d", 4))

    async def complete_all() -> tuple[list[str], list[str], int]:
        client = connect_async(master.url)
        broker = Broker(
            client, keys, "w", retention_s=60, replica_acks=1, replica_ack_timeout_ms=200
        )
        claimed = await broker.read(list(LANES), 10, None)
        done = [
            Completion(
                c.lane,
                c.entry_id,
                f"d{i}",
                1,
                *encode_result_fields(f"d{i}"),
            )
            for i, c in enumerate(sorted(claimed, key=lambda c: c.entry_id))
        ]
        first = await broker.complete(done[:2])
        shortfalls_before = broker.num_replica_shortfalls
        replica.kill()
        second = await broker.complete(done[2:])
        await client.aclose()
        return first, second, broker.num_replica_shortfalls - shortfalls_before

    first, second, shortfalls = asyncio.run(complete_all())
    assert first == ["ok", "ok"] and second == ["ok", "ok"]
    assert shortfalls == 1
    with connect(master.url) as check:
        assert sum(check.xlen(keys.results(lane)) for lane in LANES) == 4
        assert sum(check.xpending(keys.jobs(lane), GROUP)["pending"] for lane in LANES) == 0


def encode_result_fields(job_id: str) -> tuple[bytes, bytes]:
    fields = encode_result(ResultEntry(job_id, [1, 2], "length", 1, "w", 0.0, 0.0, 0.0))
    return fields["h"], fields["t"]


def test_cluster_writes_wait_on_each_node_they_touch(tmp_path: Path) -> None:
    """Scripts of several lanes (slots on different masters) each with WAIT on
    a connection pinned to its node: every node's replica acknowledges."""
    with RedisClusterServers(tmp_path / "c", num_replicas=1) as servers:
        keys = Keys("rc")
        client = connect(servers.url)
        sync_writer = SyncReplicaWriter(client, {"incr": client.register_script(INCR)}, 1, 1000)
        calls = [Call("incr", [keys.backlog(lane)], [1]) for lane in LANES]
        acked = sync_writer.run(calls)
        assert acked.num_acked == 1 and acked.replies == [1, 1, 1]
        nodes = {client.get_node_from_key(keys.backlog(lane)).name for lane in LANES}
        assert len(nodes) > 1  # the calls really went to different masters

        async def run_async() -> int:
            aclient = connect_async(servers.url)
            writer = AsyncReplicaWriter(aclient, {"incr": aclient.register_script(INCR)}, 1, 1000)
            result = await writer.run(calls)
            await writer.aclose()
            await aclient.aclose()
            assert result.replies == [2, 2, 2]
            return result.num_acked

        assert asyncio.run(run_async()) == 1
        client.close()


INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("replica_acks", [0, 1])
def test_failover_while_submitting_keeps_one_result_per_id(
    replica_acks: int, tmp_path: Path
) -> None:
    """Sentinel (1 master, 2 replicas): the master dies while the producer is
    still submitting. Without acknowledgements a submit already confirmed may be
    lost (a race: reported, not asserted); with one, none is. Either way every
    surviving id has exactly one result and the workers stay up."""
    report = run_durability(replica_acks, num_jobs=1200, kill_after_results=300, directory=tmp_path)
    print(
        f"replica_acks={replica_acks}: acknowledged {report.num_acknowledged}, "
        f"unacknowledged {report.num_unacknowledged}, lost {report.num_lost}, "
        f"doubled {report.num_doubled}, {report.results_per_s:.0f} results/s"
    )
    assert report.violations() == []
    assert report.num_submitted_at_kill < report.num_jobs  # the producer was mid-run
    if replica_acks:
        assert report.num_lost == 0


def test_the_role_users_of_fabric_acl_may_wait_for_replicas(
    master_and_replica: tuple[RedisServer, RedisServer], tmp_path: Path
) -> None:
    """The producer and worker users that `fabric acl` defines can submit and
    serve with replica_acks on: WAIT (and, on 7.2+, WAITAOF) is granted."""
    master, _replica = master_and_replica
    _init(master.url, "ra", acks=1)
    admin = redis.Redis(port=master.port)
    version = parse_server_version(admin.info("server")["redis_version"])
    passwords = {Role.PRODUCER: "producer-pw", Role.WORKER: "worker-pw"}
    for rule in role_rules("ra", server_version=version):
        admin.execute_command("ACL", "SETUSER", *setuser_tokens(rule, passwords.get(rule.role)))
    admin.close()

    def url(role: Role) -> str:
        return f"redis://fabric-{role.value}:{passwords[role]}@127.0.0.1:{master.port}/0"

    producer = FabricClient.from_url(url(Role.PRODUCER), "ra", retry_budget_s=1.0)
    assert producer.submit(_jobs("u", 50)).num_submitted == 50
    producer.close()
    worker = WorkerProcess(url(Role.WORKER), "ra", tmp_path, "--burst", manifest="null.json")
    try:
        assert worker.wait(60) == 0, worker.log
    finally:
        worker.stop()
    with connect(master.url) as check:
        assert sum(check.xlen(Keys("ra").results(lane)) for lane in LANES) == 50
