"""Worker heartbeats: a compact status hash per worker in Redis, with a TTL.

Workers publish; ``fabric health`` (container probes), ``fabric top`` and the
autoscaler read. A worker that stops publishing disappears when its hash
expires; the ``{ns}:workers`` sorted set (scored by last heartbeat) lets
readers list workers without scanning keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

HEARTBEAT_EVERY_S = 2.0
TTL_S = 3 * HEARTBEAT_EVERY_S  # three missed heartbeats and the worker is gone


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """One worker as the fleet sees it."""

    consumer: str
    state: str  # WorkerState value: starting, running, draining, stopped, failed
    heartbeat_at: float  # unix seconds
    busy_fraction: float = 0.0
    tokens_per_s: float = 0.0  # prompt + generated tokens processed per second
    generated_per_s: float = 0.0
    jobs_per_s: float = 0.0
    in_flight_tokens: int = 0
    queued_tokens: int = 0
    completed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    reclaimed: int = 0
    lease_lost: int = 0
    kv_cache_tokens: int = 0
    max_num_tokens: int = 0
    gpu: str = ""  # CUDA_VISIBLE_DEVICES as the worker saw it
    pid: int = 0

    def to_hash(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> WorkerStatus:
        """Parse a status hash; unknown fields are ignored (newer workers)."""
        data = {
            (k.decode() if isinstance(k, bytes) else str(k)): (
                v.decode() if isinstance(v, bytes) else str(v)
            )
            for k, v in raw.items()
        }
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            text = data[f.name]
            if f.type in ("int", int):
                values[f.name] = int(float(text))
            elif f.type in ("float", float):
                values[f.name] = float(text)
            else:
                values[f.name] = text
        return cls(**values)

    def is_fresh(self, now_s: float, ttl_s: float = TTL_S) -> bool:
        return now_s - self.heartbeat_at <= ttl_s

    def is_healthy(self, now_s: float, ttl_s: float = TTL_S) -> bool:
        """A liveness probe's answer: heard from recently and not failed."""
        return self.is_fresh(now_s, ttl_s) and self.state not in ("failed", "stopped")
