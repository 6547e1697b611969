"""Counters of one worker and the log lines made from them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from engines.contract import EngineStats


def ratio(part: float, whole: float) -> float:
    return part / whole if whole > 0 else 0.0


def hit_rate(stats: EngineStats) -> float:
    return ratio(stats.prefix_hit_blocks, stats.prefix_hit_blocks + stats.prefix_miss_blocks)


def delta(now: EngineStats, before: EngineStats) -> EngineStats:
    """Counters accumulated between two snapshots."""
    return EngineStats(
        busy_s=now.busy_s - before.busy_s,
        num_steps=now.num_steps - before.num_steps,
        prompt_tokens=now.prompt_tokens - before.prompt_tokens,
        generated_tokens=now.generated_tokens - before.generated_tokens,
        padded_tokens=now.padded_tokens - before.padded_tokens,
        computed_tokens=now.computed_tokens - before.computed_tokens,
        prefix_hit_blocks=now.prefix_hit_blocks - before.prefix_hit_blocks,
        prefix_miss_blocks=now.prefix_miss_blocks - before.prefix_miss_blocks,
    )


@dataclass(slots=True)
class Meter:
    """Job outcomes counted by the worker; engine figures come from its stats."""

    completed: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    retried: int = 0
    reclaimed: int = 0
    lease_lost: int = 0
    started_s: float = field(default_factory=time.monotonic)
    _last_s: float = field(default_factory=time.monotonic)
    _last_completed: int = 0
    _last_stats: EngineStats = field(default_factory=EngineStats)

    def count_completion(self, *, ok: bool) -> None:
        if ok:
            self.completed += 1
        else:
            self.duplicates += 1

    def progress_line(
        self, stats: EngineStats, *, in_flight_tokens: int, queued_tokens: int
    ) -> str:
        """Rates since the previous line."""
        now = time.monotonic()
        wall = now - self._last_s
        d = delta(stats, self._last_stats)
        line = (
            f"jobs/s {ratio(self.completed - self._last_completed, wall):.1f} "
            f"tokens/s {ratio(d.generated_tokens, wall):.0f} "
            f"busy {ratio(d.busy_s, wall):.3f} "
            f"padding {ratio(d.padded_tokens, d.computed_tokens):.4f} "
            f"prefix_hits {hit_rate(d):.3f} "
            f"in_flight_tokens {in_flight_tokens} queued_tokens {queued_tokens} "
            f"done {self.completed} dup {self.duplicates} dead {self.dead_lettered} "
            f"reclaimed {self.reclaimed}"
        )
        self._last_s, self._last_completed, self._last_stats = now, self.completed, stats
        return line

    def summary_line(self, consumer: str, stats: EngineStats) -> str:
        wall = time.monotonic() - self.started_s
        return (
            f"worker {consumer}: exiting after {wall:.1f} s: completed {self.completed}, "
            f"duplicates {self.duplicates}, dead-lettered {self.dead_lettered}, retried "
            f"{self.retried}, reclaimed {self.reclaimed}, lease lost {self.lease_lost}; "
            f"engine busy "
            f"{ratio(stats.busy_s, wall):.3f}, generated {stats.generated_tokens} tokens"
        )
