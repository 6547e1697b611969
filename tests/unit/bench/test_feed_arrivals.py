"""bench.feed_arrivals', feed_plot's and feed_waits' figures on hand-made rounds: the schedule,
the percentiles, the engine's busy share while work was queued, the queue waits."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench.feed_arrivals import Arrived, busy_while_queued, percentile, poisson_offsets
from bench.feed_plot import busy_curve, save_plot
from bench.feed_timeline import Timeline
from bench.feed_waits import passed_over, queue_waits, wait_figures
from engines.contract import EngineRequest


def test_the_schedule_is_seeded_and_keeps_its_rate() -> None:
    offsets = poisson_offsets(50.0, 20.0)
    assert offsets == poisson_offsets(50.0, 20.0)
    assert offsets != poisson_offsets(50.0, 20.0, seed=12)
    assert offsets == sorted(offsets) and offsets[0] > 0.0 and offsets[-1] < 20.0
    # 1,000 arrivals expected; a Poisson count's standard deviation is about 32
    assert 900 < len(offsets) < 1100


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1 .. 100
    assert (percentile(values, 50), percentile(values, 90), percentile(values, 99)) == (
        50.0,
        90.0,
        99.0,
    )
    assert percentile([3.0], 99) == 3.0 and percentile([], 50) == 0.0


def test_busy_counts_only_polls_of_a_loaded_engine_while_work_was_queued() -> None:
    # Job 1 queued 0-2, job 2 queued 5-6: 3 s of queued time. The engine is polled
    # 0.5-2.0 holding job 1 (1.5 s), 2.0-5.0 holding nothing (not busy), 5.2-6.0
    # holding job 2 (0.8 s).
    got = Arrived(
        submitted={1: 0.0, 2: 5.0},
        finished={1: 2.0, 2: 6.0},
        timeline=Timeline(
            submits=[(0.5, 1), (5.2, 1)],
            polls=[(0.5, 2.0, 1), (2.0, 5.0, 0), (5.2, 6.0, 1)],
        ),
    )
    assert busy_while_queued(got) == pytest.approx((1.5 + 0.8) / 3.0)


def test_the_busy_curve_is_the_share_of_each_bin_spent_on_a_loaded_engine() -> None:
    # From the first submit at 0: polled holding a request 0-1 s, empty 1-2 s (not
    # busy), holding one again 2-4 s; four bins of one second.
    timeline = Timeline(
        submits=[(0.0, 1), (2.0, 1)],
        polls=[(0.0, 1.0, 1), (1.0, 2.0, 0), (2.0, 4.0, 1)],
    )
    assert busy_curve(timeline, bins=4) == [(0.5, 1.0), (1.5, 0.0), (2.5, 1.0), (3.5, 1.0)]


def test_without_matplotlib_the_plot_is_skipped_and_said_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes its import fail
    timeline = Timeline(submits=[(0.0, 1)], polls=[(0.0, 1.0, 1)])
    message = save_plot(tmp_path / "x.png", "x", {"fabric": timeline})
    assert "skipped" in message and not (tmp_path / "x.png").exists()


def test_a_jobs_queue_wait_runs_from_its_claim_to_its_engine_submit() -> None:
    jobs = [EngineRequest(0, [1, 2, 3], 4), EngineRequest(1, [1, 2, 4], 4)]
    # both claimed at 10.0; job 1 given to the engine at 10.5, job 0 at 12.0; a prompt
    # no job has (another contender's) is not counted
    timeline = Timeline(given=[(10.5, (1, 2, 4)), (12.0, (1, 2, 3)), (12.5, (9,))])
    waits = queue_waits(timeline, jobs, {0: 10.0, 1: 10.0})
    assert sorted(waits) == pytest.approx([0.5, 2.0])
    assert wait_figures(waits) == {"wait_p99_s": 2.0, "wait_max_s": 2.0}


def test_a_job_is_passed_over_from_the_first_later_jobs_submit_to_its_own() -> None:
    jobs = [EngineRequest(i, [1, i], 4) for i in range(4)]
    # submit order 0..3; the engine got 2 at 1.0, 0 at 1.5, 3 at 2.0, 1 at 3.0; a
    # resubmit of 2's prompt later does not count
    given = [(1.0, (1, 2)), (1.5, (1, 0)), (2.0, (1, 3)), (3.0, (1, 1)), (4.0, (1, 2))]
    passed = passed_over(Timeline(given=given), jobs)
    assert passed == pytest.approx([0.5, 2.0, 0.0, 0.0])
    assert wait_figures([1.0], passed)["passed_over_max_s"] == 2.0
    # first-come order passes nobody over
    in_order = Timeline(given=[(float(i), (1, i)) for i in range(4)])
    assert passed_over(in_order, jobs) == [0.0] * 4
