from __future__ import annotations

import itertools

import pytest

from fabric_worker.fleet.autoscale import Autoscaler, ScalePolicy, per_worker_tokens_per_s

POLICY = ScalePolicy(
    min_workers=1, max_workers=4, target_drain_s=10, cooldown_s=30, guess_tokens_per_s=1000
)


def test_desired_is_backlog_over_throughput_times_drain_time_clamped() -> None:
    scaler = Autoscaler(POLICY)
    assert scaler.update(0, 25_000, []) == 3  # 25k / (1k x 10 s) = 2.5 -> 3
    assert Autoscaler(POLICY).update(0, 10**9, []) == 4
    assert Autoscaler(POLICY).update(0, 0, []) == 1


def test_throughput_is_learned_from_heartbeats() -> None:
    assert per_worker_tokens_per_s([0.0, 2000.0, 4000.0], 1000) == 3000
    assert per_worker_tokens_per_s([0.0], 1000) == 1000
    scaler = Autoscaler(POLICY)
    assert scaler.update(0, 25_000, [5000.0]) == 1  # 25k / (5k x 10) = 0.5


def test_scale_up_is_immediate_scale_down_waits_for_the_cooldown() -> None:
    scaler = Autoscaler(POLICY)
    assert scaler.update(0, 40_000, []) == 4
    assert scaler.update(1, 0, []) == 4
    assert scaler.update(30, 0, []) == 4  # 29 s of wanting less
    assert scaler.update(31, 0, []) == 1


def test_a_hovering_backlog_does_not_flap() -> None:
    scaler = Autoscaler(POLICY)
    history = []
    for t in range(0, 600):
        backlog = 20_000 + (1_500 if t % 2 else -1_500)  # 1.85 .. 2.15 workers
        history.append(scaler.update(float(t), backlog, []))
    changes = [(a, b) for a, b in itertools.pairwise(history) if a != b]
    assert changes == [(2, 3)]  # up once; 1.85 is inside the dead band below 3, so it stays


def test_a_returning_load_resets_the_cooldown() -> None:
    scaler = Autoscaler(POLICY)
    scaler.update(0, 40_000, [])
    scaler.update(10, 0, [])
    scaler.update(25, 40_000, [])  # load is back before the cooldown ended
    assert scaler.update(45, 0, []) == 4  # the clock restarted at 45
    assert scaler.update(75, 0, []) == 1


def test_min_zero_scales_to_zero_and_any_work_wakes_one() -> None:
    scaler = Autoscaler(ScalePolicy(min_workers=0, max_workers=2, cooldown_s=0))
    assert scaler.update(0, 0, []) == 0
    assert scaler.update(1, 1, []) == 1


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"min_workers": -1}, "min_workers"),
        ({"max_workers": 0}, "max_workers"),
        ({"target_drain_s": 0}, "target_drain_s"),
        ({"dead_band": 1.0}, "dead_band"),
        ({"cooldown_s": -1}, "cooldown_s"),
    ],
)
def test_policy_validation_names_the_field(changes: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}"):
        ScalePolicy(**changes)  # type: ignore[arg-type]
