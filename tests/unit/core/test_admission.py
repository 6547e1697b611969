"""Token budget: marks, padded cost and the high/low-water gate."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabric_worker.core.admission import BudgetMarks, TokenBudget, admission_cost
from fabric_worker.wire.fleet_config import padded_cost

HIGH = 1000
LOW = 600


def make_budget(high: int = HIGH, low: int = LOW) -> TokenBudget:
    return TokenBudget(BudgetMarks(high_water_tokens=high, low_water_tokens=low))


# --- marks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("high", "low", "field"),
    [
        (1000, 0, "low_water_tokens"),
        (1000, -5, "low_water_tokens"),
        (1000, 1000, "low_water_tokens"),
        (1000, 1001, "low_water_tokens"),
        (1, 0, "high_water_tokens"),
        (0, 0, "high_water_tokens"),
    ],
)
def test_marks_reject_bad_values_naming_field_and_value(high: int, low: int, field: str) -> None:
    with pytest.raises(ValueError, match=field) as raised:
        BudgetMarks(high_water_tokens=high, low_water_tokens=low)
    bad_value = low if field == "low_water_tokens" else high
    assert repr(bad_value) in str(raised.value)


def test_marks_are_frozen() -> None:
    marks = BudgetMarks(high_water_tokens=HIGH, low_water_tokens=LOW)
    with pytest.raises(AttributeError):
        marks.high_water_tokens = 5  # type: ignore[misc]


def test_from_capacity_typical_engine() -> None:
    marks = BudgetMarks.from_capacity(kv_cache_tokens=1_000_000, max_num_tokens=8192)
    assert marks.high_water_tokens == 900_000
    assert marks.low_water_tokens == 810_000  # gap = 10% of high > one step


def test_from_capacity_gap_is_at_least_one_step() -> None:
    marks = BudgetMarks.from_capacity(kv_cache_tokens=100_000, max_num_tokens=16384)
    assert marks.high_water_tokens - marks.low_water_tokens == 16384


def test_from_capacity_max_tps_fills_deeper() -> None:
    normal = BudgetMarks.from_capacity(kv_cache_tokens=500_000, max_num_tokens=8192)
    deep = BudgetMarks.from_capacity(kv_cache_tokens=500_000, max_num_tokens=8192, max_tps=True)
    assert deep.high_water_tokens > normal.high_water_tokens
    assert deep.high_water_tokens == 500_000


def test_from_capacity_small_cache_caps_gap_at_half() -> None:
    marks = BudgetMarks.from_capacity(kv_cache_tokens=4096, max_num_tokens=8192)
    assert marks.high_water_tokens == 3686
    assert marks.low_water_tokens == 3686 - 3686 // 2


@given(
    kv_cache_tokens=st.integers(min_value=3, max_value=10**9),
    max_num_tokens=st.integers(min_value=1, max_value=10**6),
    max_tps=st.booleans(),
)
def test_from_capacity_invariants(kv_cache_tokens: int, max_num_tokens: int, max_tps: bool) -> None:
    marks = BudgetMarks.from_capacity(
        kv_cache_tokens=kv_cache_tokens, max_num_tokens=max_num_tokens, max_tps=max_tps
    )
    high, low = marks.high_water_tokens, marks.low_water_tokens
    assert 0 < low < high <= kv_cache_tokens
    assert high == kv_cache_tokens * (100 if max_tps else 90) // 100
    gap = high - low
    # At least one step's worth and 10% of high, unless the cache is too small to hold two
    # steps; never more than half of high.
    assert gap >= min(max(max_num_tokens, high // 10), high // 2)
    assert gap <= high // 2


@pytest.mark.parametrize(
    ("kv_cache_tokens", "max_num_tokens", "field"),
    [(0, 8, "kv_cache_tokens"), (100, 0, "max_num_tokens"), (2, 1, "kv_cache_tokens")],
)
def test_from_capacity_rejects_bad_values(
    kv_cache_tokens: int, max_num_tokens: int, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        BudgetMarks.from_capacity(kv_cache_tokens=kv_cache_tokens, max_num_tokens=max_num_tokens)


# --- padded cost -----------------------------------------------------------------------


def test_padded_cost_is_lane_plus_max_new_tokens() -> None:
    assert padded_cost(512, 128) == 640
    assert padded_cost(64, 1) == 65


@pytest.mark.parametrize(
    ("lane", "max_new_tokens", "field"),
    [(0, 10, "lane"), (-64, 10, "lane"), (64, 0, "max_new_tokens"), (64, -1, "max_new_tokens")],
)
def test_padded_cost_rejects_bad_values(lane: int, max_new_tokens: int, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        padded_cost(lane, max_new_tokens)


# --- gate --------------------------------------------------------------------------------


def test_fresh_budget_is_open_and_empty() -> None:
    budget = make_budget()
    assert budget.is_open
    assert budget.in_flight_tokens == 0
    assert budget.free_tokens == HIGH


def test_admission_exactly_at_high_water_is_allowed_and_closes_gate() -> None:
    budget = make_budget()
    budget.admit(HIGH - 100)
    assert budget.can_admit(100)
    budget.admit(100)
    assert budget.in_flight_tokens == HIGH
    assert not budget.is_open
    assert budget.free_tokens == 0


def test_refusal_across_high_water_closes_gate_for_small_jobs_too() -> None:
    budget = make_budget()
    budget.admit(900)
    assert not budget.try_admit(101)  # would cross high water
    assert not budget.is_open
    assert budget.free_tokens == 0
    # 99 tokens would fit under high water, but the gate is closed.
    assert not budget.can_admit(1)
    assert not budget.try_admit(1)
    with pytest.raises(ValueError, match="cannot admit"):
        budget.admit(1)
    assert budget.in_flight_tokens == 900


def test_closed_gate_stays_closed_at_low_water_and_reopens_one_below() -> None:
    budget = make_budget()
    budget.admit(HIGH)
    assert not budget.is_open
    budget.release(HIGH - LOW)  # exactly at low water
    assert budget.in_flight_tokens == LOW
    assert not budget.is_open
    assert not budget.try_admit(1)
    budget.release(1)  # one below low water
    assert budget.is_open
    assert budget.free_tokens == HIGH - (LOW - 1)
    assert budget.try_admit(HIGH - (LOW - 1))


def test_refusal_below_low_water_leaves_gate_open() -> None:
    budget = make_budget()
    budget.admit(LOW - 1)
    assert not budget.try_admit(HIGH - LOW + 2)  # crosses high water
    assert budget.is_open
    assert budget.try_admit(HIGH - LOW + 1)


def test_refusal_at_exactly_low_water_closes_gate() -> None:
    budget = make_budget()
    budget.admit(LOW)
    assert not budget.try_admit(HIGH - LOW + 1)
    assert not budget.is_open


def test_can_admit_does_not_close_gate() -> None:
    budget = make_budget()
    budget.admit(900)
    assert not budget.can_admit(200)
    assert budget.is_open
    assert budget.can_admit(100)


def test_job_bigger_than_high_water_never_fits() -> None:
    budget = make_budget()
    assert budget.fits_ever(HIGH)
    assert not budget.fits_ever(HIGH + 1)
    with pytest.raises(ValueError, match="never"):
        budget.try_admit(HIGH + 1)
    with pytest.raises(ValueError, match="never"):
        budget.admit(HIGH + 1)
    assert budget.is_open
    assert budget.in_flight_tokens == 0


def test_release_more_than_in_flight_raises() -> None:
    budget = make_budget()
    budget.admit(10)
    with pytest.raises(ValueError, match="in_flight_tokens"):
        budget.release(11)
    assert budget.in_flight_tokens == 10


@pytest.mark.parametrize("method", ["fits_ever", "can_admit", "try_admit", "admit", "release"])
@pytest.mark.parametrize("cost", [0, -1])
def test_non_positive_cost_raises(method: str, cost: int) -> None:
    budget = make_budget()
    with pytest.raises(ValueError, match="cost_tokens"):
        getattr(budget, method)(cost)


# --- random sequences --------------------------------------------------------------------


@st.composite
def _scenarios(draw: st.DrawFn) -> tuple[int, int, list[tuple[str, int]]]:
    high = draw(st.integers(min_value=2, max_value=5000))
    low = draw(st.integers(min_value=1, max_value=high - 1))
    ops = draw(
        st.lists(
            st.one_of(
                st.tuples(st.just("admit"), st.integers(min_value=1, max_value=high)),
                st.tuples(st.just("release"), st.integers(min_value=0, max_value=10**6)),
            ),
            max_size=200,
        )
    )
    return high, low, ops


@given(_scenarios())
def test_budget_never_exceeded_and_matches_reference_gate(
    scenario: tuple[int, int, list[tuple[str, int]]],
) -> None:
    high, low, ops = scenario
    budget = make_budget(high, low)
    admitted: list[int] = []
    # Reference model of the gate, written from the contract.
    model_open = True
    for op, value in ops:
        if op == "admit":
            in_flight = sum(admitted)
            expect = model_open and in_flight + value <= high
            assert budget.can_admit(value) == expect
            assert budget.try_admit(value) == expect
            if expect:
                admitted.append(value)
                if in_flight + value >= high:
                    model_open = False
            elif in_flight >= low:
                model_open = False
        elif admitted:
            cost = admitted.pop(value % len(admitted))
            budget.release(cost)
            if sum(admitted) < low:
                model_open = True
        in_flight = sum(admitted)
        assert budget.in_flight_tokens == in_flight
        assert in_flight <= high
        assert budget.is_open == model_open
        assert budget.is_open or in_flight >= low
        assert budget.free_tokens == (high - in_flight if model_open else 0)
        assert budget.free_tokens >= 0


@pytest.mark.parametrize(
    ("pads_prompts", "expected"), [(True, 64 + 16), (False, 20 + 16)], ids=["pads", "ragged"]
)
def test_admission_cost_charges_the_lane_only_where_the_engine_pads(
    pads_prompts: bool, expected: int
) -> None:
    cost = admission_cost(lane=64, prompt_tokens=20, max_new_tokens=16, pads_prompts=pads_prompts)
    assert cost == expected


@pytest.mark.parametrize(
    ("prompt_tokens", "max_new_tokens", "field"),
    [(0, 16, "prompt_tokens"), (65, 16, "prompt_tokens"), (20, 0, "max_new_tokens")],
)
def test_admission_cost_refuses_what_no_job_can_be(
    prompt_tokens: int, max_new_tokens: int, field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        admission_cost(
            lane=64, prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens, pads_prompts=False
        )
