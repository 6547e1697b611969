"""How many workers the backlog needs: pure policy, no processes, no Redis.

desired = backlog tokens / (per-worker tokens/s x target drain time), rounded
up and clamped to [min, max]. Per-worker throughput is learned from the
workers' heartbeats; until there is data it is a guess from the manifest.
Scaling up is immediate (work is waiting); scaling down waits until the lower
count has been wanted for a whole cooldown and the backlog is clearly below the
current fleet's capacity (a dead band), so a backlog that hovers around a
boundary does not make workers come and go.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ScalePolicy:
    min_workers: int = 0
    max_workers: int = 1
    target_drain_s: float = 60.0
    cooldown_s: float = 30.0
    guess_tokens_per_s: float = 20_000.0  # per worker, until heartbeats say otherwise
    dead_band: float = 0.2  # scale down only below (1 - dead_band) of a step's capacity

    def __post_init__(self) -> None:
        if self.min_workers < 0:
            raise ValueError(f"min_workers: {self.min_workers} must be >= 0")
        if self.max_workers < max(1, self.min_workers):
            raise ValueError(f"max_workers: {self.max_workers} must be >= max(1, min_workers)")
        for name in ("target_drain_s", "guess_tokens_per_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: {getattr(self, name)} must be positive")
        if self.cooldown_s < 0:
            raise ValueError(f"cooldown_s: {self.cooldown_s} must be >= 0")
        if not 0 <= self.dead_band < 1:
            raise ValueError(f"dead_band: {self.dead_band} must be in [0, 1)")


def per_worker_tokens_per_s(observed: Sequence[float], guess: float) -> float:
    """Mean throughput of workers that reported any; the guess until one has."""
    busy = [tps for tps in observed if tps > 0]
    return sum(busy) / len(busy) if busy else guess


class Autoscaler:
    """Turns backlog and throughput into a worker count, with cooldown and hysteresis."""

    def __init__(self, policy: ScalePolicy) -> None:
        self.policy = policy
        self.desired = policy.min_workers
        self._lower_since_s: float | None = None
        self.per_worker_tps = policy.guess_tokens_per_s

    def needed(self, backlog_tokens: int, per_worker_tps: float) -> float:
        """Workers needed to drain the backlog in the target time (unclamped, fractional)."""
        return backlog_tokens / (per_worker_tps * self.policy.target_drain_s)

    def update(self, now_s: float, backlog_tokens: int, observed_tps: Sequence[float]) -> int:
        """The worker count to run now."""
        p = self.policy
        self.per_worker_tps = per_worker_tokens_per_s(observed_tps, p.guess_tokens_per_s)
        raw = self.needed(backlog_tokens, self.per_worker_tps)
        target = min(p.max_workers, max(p.min_workers, math.ceil(raw)))
        if backlog_tokens > 0:
            target = max(target, min(1, p.max_workers))  # some work: at least one worker
        if target > self.desired:
            self.desired, self._lower_since_s = target, None
        elif target < self.desired:
            clearly_lower = raw <= (self.desired - 1) * (1 - p.dead_band) or backlog_tokens == 0
            if not clearly_lower:
                self._lower_since_s = None
            elif self._lower_since_s is None:
                self._lower_since_s = now_s
            elif now_s - self._lower_since_s >= p.cooldown_s:
                self.desired, self._lower_since_s = target, None
        else:
            self._lower_since_s = None
        return self.desired
