"""The admission queue: grouping by prefix class, the age bound, the token bound."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric_worker.core.classes import ClassQueue, QueueFull

BIG_WAIT_S = 1e9


def runs_of(classes: list[str | None]) -> list[tuple[str | None, int]]:
    runs: list[tuple[str | None, int]] = []
    for cls in classes:
        if runs and runs[-1][0] == cls:
            runs[-1] = (cls, runs[-1][1] + 1)
        else:
            runs.append((cls, 1))
    return runs


# --- construction and input checks ---------------------------------------------------


@pytest.mark.parametrize(
    ("max_tokens", "max_wait_s", "field"),
    [(0, 1.0, "max_tokens"), (10, -1.0, "max_wait_s"), (10, math.nan, "max_wait_s")],
)
def test_rejects_bad_config(max_tokens: int, max_wait_s: float, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ClassQueue[int](max_tokens, max_wait_s)


def test_rejects_non_positive_cost() -> None:
    queue = ClassQueue[int](100, 1.0)
    with pytest.raises(ValueError, match="cost_tokens"):
        queue.push(1, cls=None, cost_tokens=0, now_s=0.0)
    with pytest.raises(ValueError, match="cost_tokens"):
        queue.can_push(-1)


def test_rejects_time_going_backwards() -> None:
    queue = ClassQueue[int](100, 1.0)
    queue.push(1, cls="a", cost_tokens=1, now_s=5.0)
    with pytest.raises(ValueError, match="now_s"):
        queue.pop(4.0)
    with pytest.raises(ValueError, match="now_s"):
        queue.push(2, cls="a", cost_tokens=1, now_s=4.0)
    assert len(queue) == 1


def test_empty_queue() -> None:
    queue = ClassQueue[int](100, 1.0)
    assert len(queue) == 0
    assert queue.queued_tokens == 0
    assert queue.peek_cost(0.0) is None
    assert queue.pop(0.0) is None


# --- order -------------------------------------------------------------------------------


def test_oldest_first_within_a_class() -> None:
    queue = ClassQueue[int](10_000, BIG_WAIT_S)
    for i in range(5):
        queue.push(i, cls="a", cost_tokens=1, now_s=float(i))
    assert [queue.pop(10.0) for _ in range(5)] == [0, 1, 2, 3, 4]


def test_stays_on_current_class_while_it_has_items() -> None:
    queue = ClassQueue[str](10_000, BIG_WAIT_S)
    queue.push("a1", cls="a", cost_tokens=1, now_s=0.0)
    queue.push("a2", cls="a", cost_tokens=1, now_s=0.0)
    assert queue.pop(0.0) == "a1"
    for i in range(10):
        queue.push(f"b{i}", cls="b", cost_tokens=1, now_s=1.0)
    queue.push("a3", cls="a", cost_tokens=1, now_s=2.0)
    assert queue.pop(2.0) == "a2"
    assert queue.pop(2.0) == "a3"
    assert queue.pop(2.0) == "b0"


def test_switches_to_class_with_most_items() -> None:
    queue = ClassQueue[str](10_000, BIG_WAIT_S)
    queue.push("a", cls="a", cost_tokens=1, now_s=0.0)
    queue.push("b1", cls="b", cost_tokens=1, now_s=0.0)
    for i in range(3):
        queue.push(f"c{i}", cls="c", cost_tokens=1, now_s=1.0)
    queue.push("b2", cls="b", cost_tokens=1, now_s=1.0)
    assert [queue.pop(2.0) for _ in range(6)] == ["c0", "c1", "c2", "b1", "b2", "a"]


def test_count_tie_goes_to_oldest_head() -> None:
    queue = ClassQueue[str](10_000, BIG_WAIT_S)
    queue.push("y1", cls="y", cost_tokens=1, now_s=0.0)
    queue.push("x1", cls="x", cost_tokens=1, now_s=1.0)
    queue.push("x2", cls="x", cost_tokens=1, now_s=2.0)
    queue.push("y2", cls="y", cost_tokens=1, now_s=3.0)
    assert queue.pop(4.0) == "y1"


def test_none_is_a_class_of_its_own() -> None:
    queue = ClassQueue[str](10_000, BIG_WAIT_S)
    queue.push("n1", cls=None, cost_tokens=1, now_s=0.0)
    queue.push("a1", cls="a", cost_tokens=1, now_s=0.0)
    queue.push("n2", cls=None, cost_tokens=1, now_s=0.0)
    queue.push("a2", cls="a", cost_tokens=1, now_s=0.0)
    queue.push("n3", cls=None, cost_tokens=1, now_s=0.0)
    assert [queue.pop(0.0) for _ in range(5)] == ["n1", "n2", "n3", "a1", "a2"]


def test_shuffled_classes_come_out_grouped() -> None:
    rng = random.Random(7)
    classes = [f"sys{i}" for i in range(8)]
    jobs = [(cls, n) for cls in classes for n in range(50)]
    rng.shuffle(jobs)
    queue = ClassQueue[tuple[str, int]](10**9, BIG_WAIT_S)
    for job in jobs:
        queue.push(job, cls=job[0], cost_tokens=100, now_s=0.0)
    popped = [queue.pop(0.0) for _ in range(len(jobs))]
    assert None not in popped
    runs = runs_of([job[0] for job in popped if job is not None])
    assert len(runs) == 8
    assert all(length == 50 for _, length in runs)


def test_streaming_shuffled_classes_come_out_in_long_runs() -> None:
    # Jobs of 8 classes arrive in random order while admission pops them: runs stay long
    # because the current class is kept while it has items.
    rng = random.Random(11)
    queue = ClassQueue[str](10**9, 5.0)
    popped: list[str | None] = []
    now_s = 0.0
    for _ in range(20):
        for _ in range(200):
            cls = f"sys{rng.randrange(8)}"
            queue.push(cls, cls=cls, cost_tokens=1, now_s=now_s)
        for _ in range(200):
            popped.append(queue.pop(now_s))
        now_s += 0.1
    popped.extend(queue.drain())
    assert len(popped) == 4000
    runs = runs_of(popped)
    assert len(popped) / len(runs) >= 20


# --- age bound -----------------------------------------------------------------------------


def test_item_older_than_max_wait_goes_first() -> None:
    queue = ClassQueue[str](10_000, 2.0)
    queue.push("a1", cls="a", cost_tokens=1, now_s=0.0)
    queue.push("b1", cls="b", cost_tokens=1, now_s=0.5)
    for i in range(2, 6):
        queue.push(f"a{i}", cls="a", cost_tokens=1, now_s=0.5)
    assert queue.pop(1.0) == "a1"
    # b1 is exactly max_wait_s old: not yet older, the current class goes on.
    assert queue.peek_cost(2.5) == 1
    assert queue.pop(2.5) == "a2"
    # b1 is overdue now, but so is the current class's next item (a3, pushed with b1):
    # the run of a goes on through its overdue items, then b1.
    assert [queue.pop(2.51) for _ in range(4)] == ["a3", "a4", "a5", "b1"]


def test_a_run_gives_way_at_its_first_item_that_is_not_overdue() -> None:
    queue = ClassQueue[str](10_000, 1.0)
    queue.push("a1", cls="a", cost_tokens=1, now_s=0.0)
    queue.push("b1", cls="b", cost_tokens=1, now_s=0.1)
    queue.push("a2", cls="a", cost_tokens=1, now_s=0.2)
    queue.push("a3", cls="a", cost_tokens=1, now_s=1.5)
    # at 2.0: a1, b1, a2 overdue; a3 is not
    assert [queue.pop(2.0) for _ in range(4)] == ["a1", "a2", "b1", "a3"]


def test_a_backlog_of_overdue_items_comes_out_in_class_runs_by_oldest_item() -> None:
    queue = ClassQueue[str](10_000, 1.0)
    for i, cls in enumerate("abcabcabc"):
        queue.push(f"{cls}{i}", cls=cls, cost_tokens=1, now_s=i * 0.01)
    popped = [queue.pop(10.0) for _ in range(9)]
    assert popped == ["a0", "a3", "a6", "b1", "b4", "b7", "c2", "c5", "c8"]


def test_age_bound_order_is_oldest_first_across_classes() -> None:
    queue = ClassQueue[str](10_000, 1.0)
    queue.push("c", cls="c", cost_tokens=1, now_s=0.0)
    queue.push("b", cls="b", cost_tokens=1, now_s=0.1)
    queue.push("a", cls="a", cost_tokens=1, now_s=0.2)
    for i in range(5):
        queue.push(f"d{i}", cls="d", cost_tokens=1, now_s=0.3)
    assert [queue.pop(5.0) for _ in range(3)] == ["c", "b", "a"]


def test_light_class_never_starves_behind_a_busy_class() -> None:
    max_wait_s = 1.0
    dt_s = 0.01
    standing_items = 50  # the busy class's items stay about 0.5 s old: never overdue
    rng = random.Random(3)
    queue = ClassQueue[tuple[str, float]](10**9, max_wait_s)
    max_item_wait_s = 0.0
    num_light_popped = 0
    for step in range(50_000):
        now_s = step * dt_s
        # The busy class never runs dry, so without the age bound it would be popped forever.
        queue.push(("busy", now_s), cls="busy", cost_tokens=1, now_s=now_s)
        if rng.random() < 0.01:
            queue.push(("light", now_s), cls=f"light{rng.randrange(3)}", cost_tokens=1, now_s=now_s)
        while len(queue) > standing_items:
            item = queue.pop(now_s)
            assert item is not None
            if item[0] == "light":
                num_light_popped += 1
                max_item_wait_s = max(max_item_wait_s, now_s - item[1])
    assert num_light_popped > 400
    # Popped at the first pop after it is overdue.
    assert max_item_wait_s <= max_wait_s + dt_s + 1e-9


# --- token bound -----------------------------------------------------------------------


def test_push_refuses_past_max_tokens() -> None:
    queue = ClassQueue[int](100, 1.0)
    queue.push(1, cls="a", cost_tokens=60, now_s=0.0)
    assert queue.can_push(40)
    assert not queue.can_push(41)
    with pytest.raises(QueueFull):
        queue.push(2, cls="a", cost_tokens=41, now_s=0.0)
    assert len(queue) == 1
    assert queue.queued_tokens == 60
    queue.push(3, cls="b", cost_tokens=40, now_s=0.0)
    assert queue.queued_tokens == 100
    assert queue.pop(0.0) == 1
    assert queue.queued_tokens == 40


def test_empty_queue_accepts_one_oversized_item() -> None:
    queue = ClassQueue[int](100, 1.0)
    assert queue.can_push(500)
    queue.push(1, cls=None, cost_tokens=500, now_s=0.0)
    assert not queue.can_push(1)
    with pytest.raises(QueueFull):
        queue.push(2, cls=None, cost_tokens=1, now_s=0.0)
    assert queue.peek_cost(0.0) == 500
    assert queue.pop(0.0) == 1
    assert queue.queued_tokens == 0


# --- drain and remove_if ---------------------------------------------------------------


def test_drain_returns_everything_oldest_first() -> None:
    queue = ClassQueue[int](10_000, 1.0)
    for i in range(6):
        queue.push(i, cls=f"c{i % 3}", cost_tokens=10, now_s=float(i))
    assert queue.pop(6.0) == 0
    assert queue.drain() == [1, 2, 3, 4, 5]
    assert len(queue) == 0
    assert queue.queued_tokens == 0
    assert queue.num_classes == 0
    assert queue.pop(7.0) is None
    queue.push(9, cls="c0", cost_tokens=10, now_s=7.0)
    assert queue.pop(7.0) == 9


def test_remove_if_takes_matching_items_and_keeps_the_rest_in_order() -> None:
    queue = ClassQueue[int](10_000, BIG_WAIT_S)
    for i in range(10):
        queue.push(i, cls="even" if i % 2 == 0 else "odd", cost_tokens=i + 1, now_s=float(i))
    assert queue.pop(10.0) == 0  # current class: even
    assert queue.remove_if(lambda i: i in (2, 3, 7)) == [2, 3, 7]
    assert len(queue) == 6
    assert queue.queued_tokens == sum(i + 1 for i in (1, 4, 5, 6, 8, 9))
    assert [queue.pop(10.0) for _ in range(6)] == [4, 6, 8, 1, 5, 9]
    assert queue.remove_if(lambda i: True) == []


def test_remove_if_leaves_queue_unchanged_when_pred_raises() -> None:
    queue = ClassQueue[int](10_000, BIG_WAIT_S)
    for i in range(4):
        queue.push(i, cls="a", cost_tokens=1, now_s=0.0)

    def pred(item: int) -> bool:
        if item == 2:
            raise RuntimeError("boom")
        return True

    with pytest.raises(RuntimeError):
        queue.remove_if(pred)
    assert len(queue) == 4
    assert [queue.pop(0.0) for _ in range(4)] == [0, 1, 2, 3]


# --- internals that keep pop cheap ---------------------------------------------------------


def test_class_heap_stays_proportional_to_number_of_classes() -> None:
    queue = ClassQueue[int](10**9, BIG_WAIT_S)
    rng = random.Random(5)
    for i in range(50_000):
        queue.push(i, cls=f"c{rng.randrange(4)}", cost_tokens=1, now_s=0.0)
        if rng.random() < 0.5:
            queue.pop(0.0)
        assert len(queue._class_heap) <= 2 * queue.num_classes + 65
    assert len(queue._by_age) <= 2 * len(queue) + 50_000  # sanity: dead heads are dropped
    queue.drain()
    assert len(queue._by_age) == 0


# --- model-based -----------------------------------------------------------------------


class _Reference:
    """A slow, obviously-correct implementation of the pop order, scanning every item."""

    def __init__(self, max_tokens: int, max_wait_s: float) -> None:
        self.max_tokens = max_tokens
        self.max_wait_s = max_wait_s
        self.items: list[tuple[int, str | None, int, float]] = []  # (item, cls, cost, pushed_s)
        self.has_current = False
        self.current: str | None = None

    def can_push(self, cost: int) -> bool:
        return not self.items or sum(i[2] for i in self.items) + cost <= self.max_tokens

    def select(self, now_s: float) -> int | None:
        if not self.items:
            return None
        is_overdue = now_s - self.items[0][3] > self.max_wait_s
        if self.has_current:
            for index, entry in enumerate(self.items):
                if entry[1] == self.current:
                    if not is_overdue or now_s - entry[3] > self.max_wait_s:
                        return index
                    break
        if is_overdue:
            return 0
        counts = Counter(entry[1] for entry in self.items)
        best = max(counts.values())
        # Items are in push order, so the first item of a fullest class has the oldest head.
        return next(i for i, entry in enumerate(self.items) if counts[entry[1]] == best)


def _multiple_of(divisor: int) -> Callable[[int], bool]:
    return lambda item: item % divisor == 0


_CLASSES = st.sampled_from(["a", "b", "c", "d", None])
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("push"), _CLASSES, st.integers(1, 40), st.floats(0, 0.5)),
        st.tuples(st.just("pop"), st.none(), st.integers(0, 0), st.floats(0, 0.5)),
        st.tuples(st.just("remove"), st.none(), st.integers(2, 5), st.floats(0, 0)),
    ),
    max_size=150,
)


@settings(max_examples=300)
@given(ops=_OPS, max_tokens=st.integers(1, 200), max_wait_s=st.floats(0, 2))
def test_matches_reference_and_every_item_comes_out_exactly_once(
    ops: list[tuple[str, str | None, int, float]], max_tokens: int, max_wait_s: float
) -> None:
    queue = ClassQueue[int](max_tokens, max_wait_s)
    ref = _Reference(max_tokens, max_wait_s)
    pushed: list[int] = []
    out: list[int] = []
    now_s = 0.0
    for op, cls, number, dt_s in ops:
        now_s += dt_s
        if op == "push":
            item = len(pushed)
            assert queue.can_push(number) == ref.can_push(number)
            if ref.can_push(number):
                queue.push(item, cls=cls, cost_tokens=number, now_s=now_s)
                ref.items.append((item, cls, number, now_s))
                pushed.append(item)
            else:
                with pytest.raises(QueueFull):
                    queue.push(item, cls=cls, cost_tokens=number, now_s=now_s)
        elif op == "pop":
            index = ref.select(now_s)
            if index is None:
                assert queue.peek_cost(now_s) is None
                assert queue.pop(now_s) is None
            else:
                item, item_cls, cost, _ = ref.items.pop(index)
                assert queue.peek_cost(now_s) == cost
                assert queue.pop(now_s) == item
                ref.has_current, ref.current = True, item_cls
                out.append(item)
        else:
            removed = queue.remove_if(_multiple_of(number))
            assert removed == [e[0] for e in ref.items if e[0] % number == 0]
            ref.items = [e for e in ref.items if e[0] % number != 0]
            out.extend(removed)
        assert len(queue) == len(ref.items)
        assert queue.queued_tokens == sum(e[2] for e in ref.items)
        assert queue.num_classes == len({e[1] for e in ref.items})
    out.extend(queue.drain())
    assert sorted(out) == pushed
    assert len(queue) == 0
    assert queue.queued_tokens == 0
