"""Lane choice: stickiness, pressure, ties, the age bound and max-TPS mode."""

from __future__ import annotations

import math
import random
from collections import deque

import pytest

from fabric_worker.core.lanes import LaneChooser, LanePolicy

LANES = (64, 128, 256, 512)


def make_chooser(max_wait_s: float = 2.0, *, max_tps: bool = False) -> LaneChooser:
    return LaneChooser(LANES, LanePolicy(max_wait_s=max_wait_s, max_tps=max_tps))


# --- policy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_wait_s": 0.0}, "max_wait_s"),
        ({"max_wait_s": -1.0}, "max_wait_s"),
        ({"max_wait_s": math.inf}, "max_wait_s"),
        ({"max_wait_s": math.nan}, "max_wait_s"),
        ({"max_tps_wait_factor": 0.5}, "max_tps_wait_factor"),
        ({"max_tps_wait_factor": math.inf}, "max_tps_wait_factor"),
    ],
)
def test_policy_rejects_bad_values(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        LanePolicy(**kwargs)  # type: ignore[arg-type]


def test_policy_age_bound() -> None:
    assert LanePolicy(max_wait_s=2.0).age_bound_s == 2.0
    assert LanePolicy(max_wait_s=2.0, max_tps=True).age_bound_s == 8.0
    assert LanePolicy(max_wait_s=1.5, max_tps=True, max_tps_wait_factor=2.0).age_bound_s == 3.0


# --- chooser basics ----------------------------------------------------------------------


def test_chooser_rejects_bad_lanes() -> None:
    with pytest.raises(ValueError, match="lanes"):
        LaneChooser([], LanePolicy())
    with pytest.raises(ValueError, match="lanes"):
        LaneChooser([64, 64], LanePolicy())


def test_no_work_returns_none_and_keeps_current() -> None:
    chooser = make_chooser()
    assert chooser.current is None
    assert chooser.choose(0.0, {}) is None
    assert chooser.choose(0.1, {64: 0, 128: 0}) is None
    assert chooser.current is None
    assert chooser.choose(0.2, {128: 10}) == 128
    assert chooser.choose(0.3, {}) is None
    assert chooser.current == 128


def test_first_choice_is_highest_pressure() -> None:
    chooser = make_chooser()
    assert chooser.choose(0.0, {64: 100, 256: 5000, 512: 4000}) == 256
    assert chooser.current == 256


def test_stays_on_current_lane_while_it_has_work() -> None:
    chooser = make_chooser()
    assert chooser.choose(0.0, {64: 100, 128: 50}) == 64
    # 128 now has far more backlog, but 64 still has work: stay for shape purity.
    for step in range(1, 19):
        assert chooser.choose(step * 0.1, {64: 10, 128: 100_000}) == 64


def test_switches_by_pressure_when_current_lane_empties() -> None:
    chooser = make_chooser()
    assert chooser.choose(0.0, {64: 100}) == 64
    assert chooser.choose(0.1, {64: 0, 128: 300, 256: 900, 512: 200}) == 256
    assert chooser.choose(0.2, {128: 300, 512: 200}) == 128


def test_pressure_tie_goes_to_longest_waiting_lane() -> None:
    chooser = make_chooser()
    assert chooser.choose(0.0, {64: 10, 512: 5}) == 64
    assert chooser.choose(0.1, {64: 10, 512: 5, 128: 5}) == 64
    # 512 has waited since 0.0, 128 since 0.1; equal backlog.
    assert chooser.choose(0.2, {512: 5, 128: 5}) == 512


def test_pressure_and_wait_tie_goes_to_smaller_lane() -> None:
    chooser = make_chooser()
    assert chooser.choose(0.0, {64: 10}) == 64
    assert chooser.choose(0.1, {64: 10, 512: 5, 256: 5}) == 64
    assert chooser.choose(0.2, {512: 5, 256: 5}) == 256


def test_fresh_tie_goes_to_smaller_lane() -> None:
    assert make_chooser().choose(0.0, {512: 7, 128: 7, 256: 7}) == 128


# --- age bound ---------------------------------------------------------------------------


def test_age_bound_switches_to_waiting_lane_and_back() -> None:
    chooser = make_chooser(max_wait_s=2.0)
    backlog = {512: 1_000_000, 64: 10}
    assert chooser.choose(0.0, backlog) == 512
    assert chooser.wait_s(64, 1.0) == 1.0
    assert chooser.choose(1.99, backlog) == 512
    assert chooser.choose(2.0, backlog) == 64
    assert chooser.wait_s(64, 2.0) == 0.0
    # 512 was left with work: it waits from 2.0 and takes over once 64 is drained...
    assert chooser.wait_s(512, 3.0) == 1.0
    assert chooser.choose(2.1, {512: 1_000_000}) == 512
    # ...and, had 64 stayed full, the age bound would have brought 512 back at 4.0.
    chooser2 = make_chooser(max_wait_s=2.0)
    assert chooser2.choose(0.0, backlog) == 512
    assert chooser2.choose(2.0, backlog) == 64
    assert chooser2.choose(3.99, backlog) == 64
    assert chooser2.choose(4.0, backlog) == 512


def test_age_bound_picks_longest_waiting_among_overdue() -> None:
    chooser = make_chooser(max_wait_s=1.0)
    assert chooser.choose(0.0, {512: 10**6}) == 512
    assert chooser.choose(0.5, {512: 10**6, 128: 1}) == 512
    assert chooser.choose(0.7, {512: 10**6, 128: 1, 64: 10**5}) == 512
    # Both overdue at 1.8: 128 has waited since 0.5, 64 only since 0.7 despite more backlog.
    assert chooser.choose(1.8, {512: 10**6, 128: 1, 64: 10**5}) == 128


def test_wait_resets_when_lane_is_seen_empty() -> None:
    chooser = make_chooser(max_wait_s=2.0)
    assert chooser.choose(0.0, {512: 10**6, 64: 1}) == 512
    assert chooser.choose(1.5, {512: 10**6}) == 512  # 64 emptied by another worker
    assert chooser.wait_s(64, 1.5) == 0.0
    assert chooser.choose(2.5, {512: 10**6, 64: 1}) == 512  # waits from 2.5, not 0.0
    assert chooser.choose(4.49, {512: 10**6, 64: 1}) == 512
    assert chooser.choose(4.5, {512: 10**6, 64: 1}) == 64


def test_light_lane_never_starves_behind_a_full_heavy_lane() -> None:
    max_wait_s = 2.0
    dt_s = 0.05
    read_tokens = 4096
    rng = random.Random(1234)
    chooser = make_chooser(max_wait_s=max_wait_s)
    heavy = 512
    light_lanes = (64, 128, 256)
    # Light lanes: a FIFO of (arrival_s, tokens) jobs each; the heavy lane is always full.
    jobs: dict[int, deque[tuple[float, int]]] = {lane: deque() for lane in light_lanes}
    max_job_wait_s = 0.0
    num_light_served = 0
    num_heavy_reads = 0
    num_steps = 20_000  # 1000 s of simulated time
    for step in range(num_steps):
        now_s = step * dt_s
        for lane in light_lanes:
            if rng.random() < 0.004:  # a job every ~12 s per light lane
                jobs[lane].append((now_s - rng.uniform(0, dt_s), rng.randint(10, 300)))
        backlog = {lane: sum(tokens for _, tokens in jobs[lane]) for lane in light_lanes}
        backlog[heavy] = 10**9
        chosen = chooser.choose(now_s, backlog)
        assert chosen is not None
        if chosen == heavy:
            num_heavy_reads += 1
            continue
        budget = read_tokens
        while jobs[chosen] and jobs[chosen][0][1] <= budget:
            arrival_s, tokens = jobs[chosen].popleft()
            budget -= tokens
            max_job_wait_s = max(max_job_wait_s, now_s - arrival_s)
            num_light_served += 1
    assert num_light_served > 100
    # Seen at the next call (one step late); with all three light lanes overdue at once,
    # the last one is served two steps after the first.
    assert max_job_wait_s <= max_wait_s + len(light_lanes) * dt_s + 1e-9
    # The heavy lane keeps the bulk of the reads: the age bound does not break stickiness.
    assert num_heavy_reads > 0.9 * num_steps


# --- max-TPS mode ------------------------------------------------------------------------


def test_max_tps_stays_on_lane_longer() -> None:
    backlog = {512: 10**6, 64: 10}
    normal = make_chooser(max_wait_s=2.0)
    deep = make_chooser(max_wait_s=2.0, max_tps=True)
    for chooser in (normal, deep):
        assert chooser.choose(0.0, backlog) == 512
    assert normal.choose(2.0, backlog) == 64
    assert deep.choose(2.0, backlog) == 512
    assert deep.choose(7.99, backlog) == 512
    assert deep.choose(8.0, backlog) == 64


# --- input checks ------------------------------------------------------------------------


def test_choose_rejects_unknown_lane() -> None:
    with pytest.raises(ValueError, match="unknown lane"):
        make_chooser().choose(0.0, {100: 5})


def test_choose_rejects_negative_backlog() -> None:
    with pytest.raises(ValueError, match="backlog_tokens"):
        make_chooser().choose(0.0, {64: -1})


def test_choose_rejects_time_going_backwards() -> None:
    chooser = make_chooser()
    chooser.choose(5.0, {64: 1})
    with pytest.raises(ValueError, match="now_s"):
        chooser.choose(4.9, {64: 1})
