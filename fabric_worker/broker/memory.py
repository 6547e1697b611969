"""Redis memory: the figures ``inspect`` shows and an OOM refusal names, and
the eviction policy a worker insists on.

A full Redis is backpressure, not data loss: with ``noeviction`` it refuses
the scripts that add data (they carry no ``allow-oom`` flag) whole, before
any write, and evicts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
import redis.exceptions

OutOfMemory = redis.exceptions.OutOfMemoryError  # "OOM command not allowed ..."


@dataclass(frozen=True, slots=True)
class Memory:
    used_bytes: int
    max_bytes: int  # 0: no limit

    def describe(self) -> str:
        limit = _mib(self.max_bytes) if self.max_bytes else "no limit"
        return f"used {_mib(self.used_bytes)} of maxmemory {limit}"


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def memory(client: Any) -> Memory | None:
    """Used memory and maxmemory (INFO memory), or None where INFO is denied
    or the client spans several nodes."""
    try:
        info = client.info("memory")
    except redis.RedisError:
        return None
    if not isinstance(info, dict) or "used_memory" not in info:
        return None
    return Memory(int(info["used_memory"]), int(info.get("maxmemory", 0)))


def eviction_policy(client: Any) -> str | None:
    """``maxmemory-policy``, or None where CONFIG GET is denied (ACL)."""
    try:
        reply = client.config_get("maxmemory-policy")
    except redis.ResponseError:
        return None
    value = reply.get("maxmemory-policy") if isinstance(reply, dict) else None
    if isinstance(value, bytes):
        value = value.decode()
    return str(value) if value is not None else None


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, OutOfMemory)
