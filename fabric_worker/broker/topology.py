"""What a replicated Redis on loopback says about itself: roles, slots, links,
sentinels' view. The private launchers (``fabric_worker.dev``) and the
failover scenarios wait on these; they are not used on the serving path."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@contextmanager
def _node(port: int) -> Iterator[redis.Redis]:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5.0)
    try:
        yield client
    finally:
        client.close()


def role(port: int) -> str:
    """``master`` or ``slave``, as the server on ``port`` says (ROLE)."""
    with _node(port) as client:
        return _text(client.execute_command("ROLE")[0])


def num_keys(port: int) -> int:
    with _node(port) as client:
        return int(client.dbsize())


def replica_linked(port: int) -> bool:
    """True for a master, and for a replica whose link to its master is up
    (a replica still syncing could not be promoted with the data)."""
    with _node(port) as client:
        info = client.info("replication")
    return _text(info.get("role")) != "slave" or _text(info.get("master_link_status")) == "up"


def cluster_slots(port: int) -> list[tuple[int, int, int]]:
    """(first slot, last slot, master's port) for every range, from CLUSTER SLOTS."""
    with _node(port) as client:
        slots = client.execute_command("CLUSTER SLOTS")
    return [(int(e[0]), int(e[1]), int(e[2][1])) for e in slots]


def cluster_node_id(port: int) -> str:
    with _node(port) as client:
        return _text(client.execute_command("CLUSTER MYID"))


def sentinel_master_port(port: int, service: str) -> int:
    """The master's port, as the sentinel on ``port`` names it now."""
    with _node(port) as client:
        _host, master_port = client.sentinel_get_master_addr_by_name(service)
    return int(master_port)


def sentinel_num_peers(port: int, service: str) -> int:
    """How many other sentinels the sentinel on ``port`` knows for ``service``."""
    with _node(port) as client:
        return int(client.sentinel_master(service).get("num-other-sentinels", 0))
