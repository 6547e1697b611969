"""Replicated Redis on loopback for tests and benchmarks: a Redis Cluster
(masters, optionally with replicas) and a Sentinel group (master, replicas,
sentinels), each on free ports in a directory of its own."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from fabric_worker.broker import topology
from fabric_worker.broker.client import cluster_is_ok
from fabric_worker.dev.redis_server import (
    INSTALL_HINT,
    RedisServer,
    RedisServerMissing,
    free_port,
)


def _wait(predicate: Callable[[], bool], deadline: float, what: str) -> None:
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready in time")
        time.sleep(0.05)


class RedisClusterServers:
    """A Redis Cluster of ``num_masters`` masters, each with ``num_replicas``
    replicas. ``node_timeout_ms`` is how long a master may be silent before its
    replica is promoted; ``appendonly`` runs every node with AOF ``always``."""

    def __init__(
        self,
        directory: Path | None = None,
        num_masters: int = 3,
        *,
        num_replicas: int = 0,
        node_timeout_ms: int = 5000,
        appendonly: bool = False,
    ) -> None:
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="fabric-cluster-"))
        self.num_replicas = num_replicas
        self.nodes: list[RedisServer] = []
        for i in range(num_masters * (1 + num_replicas)):
            node_dir = self.directory / f"node{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            self.nodes.append(
                RedisServer(
                    node_dir,
                    port=free_port(cluster_bus=True),
                    appendonly=appendonly,
                    extra_args=[
                        *("--cluster-enabled", "yes"),
                        *("--cluster-config-file", "nodes.conf"),
                        *("--cluster-node-timeout", str(node_timeout_ms)),
                    ],
                )
            )

    @property
    def url(self) -> str:
        """A live node's URL (any node serves as a starting point)."""
        live = [n for n in self.nodes if n.process is not None]
        return (live or self.nodes)[0].url

    def _live(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.process is not None]

    def role(self, node: RedisServer) -> str:
        return topology.role(node.port)

    def slot_ranges(self) -> list[tuple[int, int, RedisServer]]:
        """(first slot, last slot, serving master) for every range, now."""
        by_port = {n.port: n for n in self.nodes}
        return [(a, b, by_port[p]) for a, b, p in topology.cluster_slots(self._live()[0].port)]

    def master_of(self, slot: int) -> RedisServer:
        for first, last, node in self.slot_ranges():
            if first <= slot <= last:
                return node
        raise LookupError(f"slot {slot} is not served")

    def node_id(self, node: RedisServer) -> str:
        return topology.cluster_node_id(node.port)

    def busiest_master(self) -> RedisServer:
        """The live master holding the most keys."""
        masters = [n for n in self._live() if topology.role(n.port) == "master"]
        return max(masters, key=lambda n: topology.num_keys(n.port))

    def start(self, timeout_s: float = 30.0) -> RedisClusterServers:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RedisServerMissing(f"redis-cli not found on PATH; {INSTALL_HINT}")
        subprocess.run(
            [
                *(cli, "--cluster", "create"),
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                *("--cluster-replicas", str(self.num_replicas), "--cluster-yes"),
            ],
            check=True,
            capture_output=True,
            timeout=timeout_s,
        )
        self.wait_healthy(timeout_s)
        return self

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Every live node says state ok, and every live replica is linked."""
        deadline = time.monotonic() + timeout_s
        for node in self._live():
            _wait(partial(cluster_is_ok, node.port), deadline, f"cluster node {node.port}")
            _wait(partial(topology.replica_linked, node.port), deadline, f"node {node.port}")

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class RedisSentinelServers:
    """A master, ``num_replicas`` replicas and ``num_sentinels`` sentinels
    (``redis-server --sentinel``) watching them as ``service``. ``down_after_ms``
    is how long the master may be silent before the sentinels promote a replica."""

    def __init__(
        self,
        directory: Path | None = None,
        *,
        service: str = "fabric",
        num_replicas: int = 1,
        num_sentinels: int = 3,
        down_after_ms: int = 1000,
        appendonly: bool = False,
    ) -> None:
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="fabric-sentinel-"))
        self.service = service
        self.down_after_ms = down_after_ms
        self.quorum = num_sentinels // 2 + 1
        master_port = free_port()
        self.nodes: list[RedisServer] = []
        for i in range(1 + num_replicas):
            node_dir = self.directory / f"node{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            replica_of = [] if i == 0 else ["--replicaof", "127.0.0.1", str(master_port)]
            port = master_port if i == 0 else None
            self.nodes.append(
                RedisServer(node_dir, port=port, appendonly=appendonly, extra_args=replica_of)
            )
        self.sentinels: list[RedisServer] = []
        for i in range(num_sentinels):
            sentinel_dir = self.directory / f"sentinel{i}"
            sentinel_dir.mkdir(parents=True, exist_ok=True)
            self.sentinels.append(_SentinelServer(sentinel_dir, self, master_port))

    @property
    def url(self) -> str:
        """The ``redis+sentinel://`` URL naming every sentinel."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.service}/0"

    def master(self) -> RedisServer:
        """The node the sentinels name as master now."""
        port = topology.sentinel_master_port(self.sentinels[0].port, self.service)
        return next(n for n in self.nodes if n.port == port)

    def busiest_master(self) -> RedisServer:
        return self.master()

    def start(self, timeout_s: float = 30.0) -> RedisSentinelServers:
        for server in (*self.nodes, *self.sentinels):
            server.start()
        self.wait_healthy(timeout_s)
        return self

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Every live replica is linked and every sentinel knows the others."""
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            if node.process is not None:
                _wait(partial(topology.replica_linked, node.port), deadline, f"{node.port}")
        for sentinel in self.sentinels:
            _wait(partial(self._knows_peers, sentinel.port), deadline, f"sentinel {sentinel.port}")

    def _knows_peers(self, port: int) -> bool:
        return topology.sentinel_num_peers(port, self.service) >= len(self.sentinels) - 1

    def close(self) -> None:
        for server in (*self.sentinels, *self.nodes):
            server.close()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisSentinelServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SentinelServer(RedisServer):
    """``redis-server --sentinel`` with a config file of its own (a sentinel
    rewrites its config as it learns the topology)."""

    def __init__(self, directory: Path, group: RedisSentinelServers, master_port: int) -> None:
        super().__init__(directory)
        self.config = directory / "sentinel.conf"
        name = group.service
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {directory}",
            f"logfile {directory / 'sentinel.log'}",
            f"sentinel monitor {name} 127.0.0.1 {master_port} {group.quorum}",
            f"sentinel down-after-milliseconds {name} {group.down_after_ms}",
            f"sentinel failover-timeout {name} 10000",
            f"sentinel parallel-syncs {name} 1",
        ]
        self.config.write_text("\n".join(lines) + "\n")

    def args(self) -> list[str]:
        return [self.binary, str(self.config), "--sentinel"]
