"""A private ``redis-server`` on a free loopback port, for the demo, tests and benchmarks.

It lives in a directory of its own so it can be stopped, killed and restarted
on the same port with its data (AOF) intact.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

INSTALL_HINT = "install it with: sudo apt-get install -y redis-server  (or: brew install redis)"


class RedisServerMissing(RuntimeError):
    pass


def _can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(*, cluster_bus: bool = False) -> int:
    """A free loopback port. With ``cluster_bus``, one whose port + 10000 (the
    cluster bus) is free too, which Redis requires to be at most 65535."""
    if not cluster_bus:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(20_000, 55_535)
        if _can_bind(port) and _can_bind(port + 10_000):
            return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisServer:
    """One ``redis-server`` process bound to 127.0.0.1."""

    def __init__(
        self,
        directory: Path | None = None,
        *,
        port: int | None = None,
        appendonly: bool = False,
        extra_args: list[str] | None = None,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerMissing(f"redis-server not found on PATH; {INSTALL_HINT}")
        self.binary = binary
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="fabric-redis-"))
        self.port = port or free_port()
        self.appendonly = appendonly
        self.extra_args = list(extra_args or [])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def args(self) -> list[str]:
        args = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--daemonize",
            "no",
            "--logfile",
            str(self.directory / "redis.log"),
        ]
        # A replica's full sync starts at once, not after 5 s of waiting for others.
        args += ["--repl-diskless-sync-delay", "0"]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        return args + self.extra_args

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        self.process = subprocess.Popen(
            self.args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Block until the server answers PING (it loads its AOF first)."""
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        try:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    log = self.directory / "redis.log"
                    tail = log.read_text()[-2000:] if log.exists() else ""
                    raise RuntimeError(
                        f"redis-server exited with {self.process.returncode}: {tail}"
                    )
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"redis-server on port {self.port} not ready in {timeout_s} s"
                    )
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """SIGTERM and wait (the server flushes its AOF on the way out)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: nothing flushed that was not already on disk."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cluster_ok(info: object) -> bool:
    # redis-py parses CLUSTER INFO into a dict; older ones return the raw text.
    if isinstance(info, dict):
        return str(info.get("cluster_state")) == "ok"
    return b"cluster_state:ok" in info if isinstance(info, bytes) else False


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _replica_linked(info: dict[str, object]) -> bool:
    return _text(info.get("role")) != "slave" or _text(info.get("master_link_status")) == "up"


class RedisClusterServers:
    """A local Redis Cluster of ``num_masters`` masters, each with
    ``num_replicas`` replicas, on free ports. ``node_timeout_ms`` is how long a
    master may be silent before its replica is promoted; ``appendonly`` runs
    every node with AOF ``appendfsync always``."""

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
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        str(node_timeout_ms),
                    ],
                )
            )

    @property
    def url(self) -> str:
        """A live node's URL (any node serves as a starting point)."""
        live = [n for n in self.nodes if n.process is not None]
        return (live or self.nodes)[0].url

    def role(self, node: RedisServer) -> str:
        """``master`` or ``slave``, as the node itself says (ROLE)."""
        client = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5.0)
        try:
            return _text(client.execute_command("ROLE")[0])
        finally:
            client.close()

    def slot_ranges(self) -> list[tuple[int, int, RedisServer]]:
        """(first slot, last slot, serving master) for every range, as CLUSTER
        SLOTS from a live node says now."""
        client = redis.Redis.from_url(self.url, socket_timeout=5.0)
        try:
            slots = client.execute_command("CLUSTER SLOTS")
        finally:
            client.close()
        by_port = {n.port: n for n in self.nodes}
        return [(int(e[0]), int(e[1]), by_port[int(e[2][1])]) for e in slots]

    def master_of(self, slot: int) -> RedisServer:
        """The live node that serves ``slot`` now."""
        for first, last, node in self.slot_ranges():
            if first <= slot <= last:
                return node
        raise LookupError(f"slot {slot} is not served")

    def node_id(self, node: RedisServer) -> str:
        client = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5.0)
        try:
            return _text(client.execute_command("CLUSTER MYID"))
        finally:
            client.close()

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Block until every live node says ``cluster_state:ok`` and every live
        replica's link to its master is up (a replica still syncing cannot be
        promoted with the data)."""
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            if node.process is None:
                continue
            client = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5.0)
            try:
                while not (
                    _cluster_ok(client.execute_command("CLUSTER INFO"))
                    and _replica_linked(client.info("replication"))
                ):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"cluster node {node.port} not healthy in {timeout_s} s")
                    time.sleep(0.05)
            finally:
                client.close()

    def start(self, timeout_s: float = 30.0) -> RedisClusterServers:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RedisServerMissing(f"redis-cli not found on PATH; {INSTALL_HINT}")
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                str(self.num_replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=timeout_s,
        )
        self.wait_healthy(timeout_s)
        return self

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
    (``redis-server --sentinel``) watching them as ``service``, on free ports.

    ``down_after_ms`` is how long the master may be silent before the
    sentinels agree it is down and promote a replica.
    """

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
        self.nodes: list[RedisServer] = []
        self.sentinels: list[RedisServer] = []
        master_port = free_port()
        for i in range(1 + num_replicas):
            node_dir = self.directory / f"node{i}"
            node_dir.mkdir(parents=True, exist_ok=True)
            replica_of = [] if i == 0 else ["--replicaof", "127.0.0.1", str(master_port)]
            self.nodes.append(
                RedisServer(
                    node_dir,
                    port=master_port if i == 0 else None,
                    appendonly=appendonly,
                    extra_args=replica_of,
                )
            )
        self.quorum = num_sentinels // 2 + 1
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
        client = redis.Redis(host="127.0.0.1", port=self.sentinels[0].port, socket_timeout=5.0)
        try:
            _host, port = client.sentinel_get_master_addr_by_name(self.service)
        finally:
            client.close()
        return next(n for n in self.nodes if n.port == int(port))

    def start(self, timeout_s: float = 30.0) -> RedisSentinelServers:
        for node in self.nodes:
            node.start()
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait_healthy(timeout_s)
        return self

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        """Block until every live replica is linked to its master and every
        sentinel sees the master and the other sentinels."""
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            if node.process is None:
                continue
            client = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=5.0)
            try:
                while not _replica_linked(client.info("replication")):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"replica {node.port} not linked in {timeout_s} s")
                    time.sleep(0.05)
            finally:
                client.close()
        for sentinel in self.sentinels:
            client = redis.Redis(host="127.0.0.1", port=sentinel.port, socket_timeout=5.0)
            try:
                while True:
                    state = client.sentinel_master(self.service)
                    if int(state.get("num-other-sentinels", 0)) >= len(self.sentinels) - 1:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"sentinel {sentinel.port} not ready in {timeout_s} s")
                    time.sleep(0.05)
            finally:
                client.close()

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
        self.config.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {directory}",
                    f"logfile {directory / 'sentinel.log'}",
                    f"sentinel monitor {group.service} 127.0.0.1 {master_port} {group.quorum}",
                    f"sentinel down-after-milliseconds {group.service} {group.down_after_ms}",
                    f"sentinel failover-timeout {group.service} 10000",
                    f"sentinel parallel-syncs {group.service} 1",
                    "",
                ]
            )
        )

    def args(self) -> list[str]:
        return [self.binary, str(self.config), "--sentinel"]
