"""Rates over a window of time, from a worker's cumulative counters, and the
log lines made of them. One window for every reader: the progress log, the
heartbeat and the metrics each keep their own :class:`RateWindow`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from engines.contract import EngineStats
from fabric_worker.core.counts import Counts


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


@dataclass(frozen=True, slots=True)
class Rates:
    """What one window saw, per second or as a fraction."""

    busy_fraction: float = 0.0  # engine busy time over wall time (not clamped)
    tokens_per_s: float = 0.0  # prompt + generated
    generated_per_s: float = 0.0
    jobs_per_s: float = 0.0
    padding_waste: float = 0.0  # padded over computed token slots
    prefix_hit_ratio: float = 0.0


class RateWindow:
    """Rates since the previous :meth:`advance` (or since construction).

    A window shorter than ``min_window_s`` says too little: ``advance`` then
    keeps the previous rates and the window grows on.
    """

    def __init__(
        self, *, min_window_s: float = 0.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._min_window_s = min_window_s
        self._last_s = clock()
        self._last_stats = EngineStats()
        self._last_completed = 0
        self.rates = Rates()

    def advance(self, stats: EngineStats, completed: int) -> Rates:
        now = self._clock()
        wall = now - self._last_s
        if wall < self._min_window_s:
            return self.rates
        d = delta(stats, self._last_stats)
        self.rates = Rates(
            busy_fraction=ratio(d.busy_s, wall),
            tokens_per_s=ratio(d.prompt_tokens + d.generated_tokens, wall),
            generated_per_s=ratio(d.generated_tokens, wall),
            jobs_per_s=ratio(completed - self._last_completed, wall),
            padding_waste=ratio(d.padded_tokens, d.computed_tokens),
            prefix_hit_ratio=hit_rate(d),
        )
        self._last_s, self._last_stats, self._last_completed = now, stats, completed
        return self.rates


def progress_line(
    rates: Rates, counts: Counts, *, in_flight_tokens: int, queued_tokens: int
) -> str:
    return (
        f"jobs/s {rates.jobs_per_s:.1f} "
        f"tokens/s {rates.generated_per_s:.0f} "
        f"busy {rates.busy_fraction:.3f} "
        f"padding {rates.padding_waste:.4f} "
        f"prefix_hits {rates.prefix_hit_ratio:.3f} "
        f"in_flight_tokens {in_flight_tokens} queued_tokens {queued_tokens} "
        f"done {counts.completed} dup {counts.duplicates} dead {counts.dead_lettered} "
        f"reclaimed {counts.reclaimed}"
    )


def summary_line(consumer: str, counts: Counts, stats: EngineStats, wall_s: float) -> str:
    return (
        f"worker {consumer}: exiting after {wall_s:.1f} s: completed {counts.completed}, "
        f"duplicates {counts.duplicates}, dead-lettered {counts.dead_lettered}, retried "
        f"{counts.retried}, reclaimed {counts.reclaimed}, lease lost {counts.lease_lost}; "
        f"engine busy "
        f"{ratio(stats.busy_s, wall_s):.3f}, generated {stats.generated_tokens} tokens"
    )
