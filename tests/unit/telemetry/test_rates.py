"""One rate window for every reader, on a clock the test drives."""

from __future__ import annotations

from engines.contract import EngineStats
from fabric_worker.core.counts import Counts
from fabric_worker.telemetry.rates import RateWindow, progress_line, summary_line


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def stats(**kw: float) -> EngineStats:
    return EngineStats(**kw)  # type: ignore[arg-type]


def test_rates_are_over_the_window_since_the_last_advance() -> None:
    clock = Clock()
    window = RateWindow(clock=clock)
    clock.now_s += 2.0
    first = stats(
        busy_s=1.0,
        prompt_tokens=100,
        generated_tokens=300,
        padded_tokens=10,
        computed_tokens=400,
        prefix_hit_blocks=3,
        prefix_miss_blocks=1,
    )
    rates = window.advance(first, completed=4)
    assert (rates.busy_fraction, rates.tokens_per_s, rates.generated_per_s) == (0.5, 200.0, 150.0)
    assert (rates.jobs_per_s, rates.padding_waste, rates.prefix_hit_ratio) == (2.0, 0.025, 0.75)
    clock.now_s += 1.0
    second = window.advance(stats(busy_s=2.0, generated_tokens=310), completed=5)
    assert (second.busy_fraction, second.generated_per_s, second.jobs_per_s) == (1.0, 10.0, 1.0)


def test_a_window_too_short_keeps_the_last_rates_and_grows_on() -> None:
    clock = Clock()
    window = RateWindow(min_window_s=0.5, clock=clock)
    clock.now_s += 0.2
    assert window.advance(stats(generated_tokens=100), completed=1).generated_per_s == 0.0
    clock.now_s += 0.8  # one second since the start: the first advance did not count
    assert window.advance(stats(generated_tokens=100), completed=1).generated_per_s == 100.0


def test_the_log_lines_keep_their_shape() -> None:
    clock = Clock()
    window = RateWindow(clock=clock)
    clock.now_s += 1.0
    rates = window.advance(stats(busy_s=0.25, generated_tokens=42), completed=3)
    counts = Counts(
        completed=3, duplicates=1, dead_lettered=2, retried=4, reclaimed=5, lease_lost=6
    )
    line = progress_line(rates, counts, in_flight_tokens=7, queued_tokens=8)
    assert line == (
        "jobs/s 3.0 tokens/s 42 busy 0.250 padding 0.0000 prefix_hits 0.000 "
        "in_flight_tokens 7 queued_tokens 8 done 3 dup 1 dead 2 reclaimed 5"
    )
    assert summary_line("w1", counts, stats(busy_s=1.0, generated_tokens=9), 4.0) == (
        "worker w1: exiting after 4.0 s: completed 3, duplicates 1, dead-lettered 2, "
        "retried 4, reclaimed 5, lease lost 6; engine busy 0.250, generated 9 tokens"
    )
