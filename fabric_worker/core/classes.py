"""The admission queue (backpressure level 4): jobs grouped by prefix class, bounded in tokens.

Jobs that name the same prefix class (e.g. one system prompt) share a cached prefix in the
engine. Popping them in runs of one class keeps that cache hot; an age bound makes sure no
class starves while another keeps arriving (DESIGN section 4).

Pop runs once per job at tens of thousands of jobs per second, so it never scans the queue:
per-class deques hold the items, one deque in push order gives the oldest item, and a heap
with lazily discarded entries gives the fullest class. Time is passed in as ``now_s`` and
must not go backwards, which is what lets push order stand for age.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

# Rebuild the class heap once stale entries outnumber live classes by this much, so that its
# size stays proportional to the number of classes at O(1) amortised cost per operation.
_HEAP_SLACK = 64


class QueueFull(Exception):
    """Raised by :meth:`ClassQueue.push` when the item's tokens would exceed ``max_tokens``."""


@dataclass(slots=True, eq=False)
class _Entry(Generic[T]):
    seq: int
    item: T
    cls: str | None
    cost_tokens: int
    pushed_s: float
    is_live: bool = True


class ClassQueue(Generic[T]):
    """A token-bounded queue that pops items in runs of one prefix class.

    Pop order (an item is overdue once now_s - pushed_s > max_wait_s):
    1. The current class (the class of the last popped item) while it has items, unless
       another class holds an overdue item and the current class's oldest is not overdue.
    2. Age bound: otherwise, if the oldest item is overdue, it goes first, whatever its
       class, and its class becomes the current one.
    3. Otherwise the class with the most items (ties: the one whose oldest item is oldest).
    Within a class, oldest first. ``None`` is a class of its own.

    Rule 1 lets a class that the age bound chose run on through its overdue items rather
    than give way after one: when the queue holds more than ``max_wait_s`` of work, every
    item is overdue, and strict oldest-first would interleave the classes (no prefix
    stays cached for its next job) where this serves them in runs, in the order of their
    oldest items. A run still ends at its first item that is not overdue, so an overdue
    item waits at most for the overdue items of the classes whose oldest were older.

    Bound: ``push`` refuses an item whose tokens would take the queue past ``max_tokens``,
    except that an empty queue always takes one item, so a job bigger than the bound still
    gets through. ``now_s`` must not decrease from one call to the next (ValueError).
    """

    def __init__(self, max_tokens: int, max_wait_s: float) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens!r}")
        if not (math.isfinite(max_wait_s) and max_wait_s >= 0):
            raise ValueError(f"max_wait_s must be finite and >= 0, got {max_wait_s!r}")
        self._max_tokens = max_tokens
        self._max_wait_s = max_wait_s
        self._by_class: dict[str | None, deque[_Entry[T]]] = {}
        # Push order, which is age order. Popped entries are marked dead and dropped once
        # they reach the left end.
        self._by_age: deque[_Entry[T]] = deque()
        # (-num_items, head seq, class) per change of a class; an entry is stale unless it
        # still matches its class. Distinct classes never tie on the first two fields, so
        # str and None classes are never compared.
        self._class_heap: list[tuple[int, int, str | None]] = []
        self._has_current = False
        self._current_class: str | None = None
        self._num_items = 0
        self._queued_tokens = 0
        self._next_seq = 0
        self._last_now_s = -math.inf

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    @property
    def max_wait_s(self) -> float:
        return self._max_wait_s

    @property
    def queued_tokens(self) -> int:
        """Sum of the costs of the queued items."""
        return self._queued_tokens

    @property
    def num_classes(self) -> int:
        """Number of classes with queued items."""
        return len(self._by_class)

    def __len__(self) -> int:
        return self._num_items

    def can_push(self, cost_tokens: int) -> bool:
        """Whether ``push`` would accept an item of this cost now."""
        _check_cost(cost_tokens)
        return self._num_items == 0 or self._queued_tokens + cost_tokens <= self._max_tokens

    def push(self, item: T, *, cls: str | None, cost_tokens: int, now_s: float) -> None:
        """Queue ``item`` in class ``cls``. Raises QueueFull if ``can_push`` is false."""
        self._advance(now_s)
        if not self.can_push(cost_tokens):
            raise QueueFull(
                f"cost_tokens {cost_tokens} over max_tokens {self._max_tokens} "
                f"with {self._queued_tokens} queued"
            )
        entry = _Entry(self._next_seq, item, cls, cost_tokens, now_s)
        self._next_seq += 1
        queue = self._by_class.get(cls)
        if queue is None:
            queue = self._by_class[cls] = deque()
        queue.append(entry)
        self._by_age.append(entry)
        self._num_items += 1
        self._queued_tokens += cost_tokens
        self._note_class(cls, queue)

    def peek_cost(self, now_s: float) -> int | None:
        """The cost of the item ``pop(now_s)`` would return; None if empty."""
        self._advance(now_s)
        entry = self._select(now_s)
        return None if entry is None else entry.cost_tokens

    def peek(self, now_s: float) -> T | None:
        """The item ``pop(now_s)`` would return, left in place; None if empty."""
        self._advance(now_s)
        entry = self._select(now_s)
        return None if entry is None else entry.item

    def pop(self, now_s: float) -> T | None:
        """Remove and return the next item (see the class docstring); None if empty."""
        self._advance(now_s)
        entry = self._select(now_s)
        if entry is None:
            return None
        # The selected entry is always the head of its class: within a class push order is
        # age order, so the oldest item overall is also the oldest of its class.
        queue = self._by_class[entry.cls]
        queue.popleft()
        entry.is_live = False
        if queue:
            self._note_class(entry.cls, queue)
        else:
            del self._by_class[entry.cls]
        self._num_items -= 1
        self._queued_tokens -= entry.cost_tokens
        self._has_current = True
        self._current_class = entry.cls
        self._drop_dead_heads()
        return entry.item

    def drain(self) -> list[T]:
        """Remove and return every queued item, oldest first (a graceful stop hands these back)."""
        items = [entry.item for entry in self._by_age if entry.is_live]
        self._rebuild([])
        return items

    def remove_if(self, pred: Callable[[T], bool]) -> list[T]:
        """Remove and return the items ``pred`` selects, oldest first. O(n): for lease loss.

        If ``pred`` raises, the queue is left unchanged.
        """
        live = [entry for entry in self._by_age if entry.is_live]
        hits = [pred(entry.item) for entry in live]
        removed = [entry.item for entry, hit in zip(live, hits, strict=True) if hit]
        if removed:
            self._rebuild([entry for entry, hit in zip(live, hits, strict=True) if not hit])
        return removed

    def _advance(self, now_s: float) -> None:
        if now_s < self._last_now_s:
            raise ValueError(f"now_s went backwards: {now_s!r} < {self._last_now_s!r}")
        self._last_now_s = now_s

    def _select(self, now_s: float) -> _Entry[T] | None:
        if self._num_items == 0:
            return None
        oldest = self._by_age[0]
        is_overdue = now_s - oldest.pushed_s > self._max_wait_s
        if self._has_current:
            queue = self._by_class.get(self._current_class)
            if queue and (not is_overdue or now_s - queue[0].pushed_s > self._max_wait_s):
                return queue[0]
        if is_overdue:
            return oldest
        return self._by_class[self._fullest_class()][0]

    def _fullest_class(self) -> str | None:
        heap = self._class_heap
        while heap:
            neg_num_items, head_seq, cls = heap[0]
            queue = self._by_class.get(cls)
            if queue and len(queue) == -neg_num_items and queue[0].seq == head_seq:
                return cls
            heapq.heappop(heap)
        raise RuntimeError("class heap lost track of a non-empty class")

    def _note_class(self, cls: str | None, queue: deque[_Entry[T]]) -> None:
        heapq.heappush(self._class_heap, (-len(queue), queue[0].seq, cls))
        if len(self._class_heap) > 2 * len(self._by_class) + _HEAP_SLACK:
            self._class_heap = [
                (-len(queue), queue[0].seq, cls) for cls, queue in self._by_class.items()
            ]
            heapq.heapify(self._class_heap)

    def _drop_dead_heads(self) -> None:
        by_age = self._by_age
        while by_age and not by_age[0].is_live:
            by_age.popleft()

    def _rebuild(self, live: list[_Entry[T]]) -> None:
        for entry in self._by_age:
            entry.is_live = False
        self._by_age = deque()
        self._by_class = {}
        self._class_heap = []
        self._num_items = 0
        self._queued_tokens = 0
        for entry in live:
            entry.is_live = True
            self._by_age.append(entry)
            self._by_class.setdefault(entry.cls, deque()).append(entry)
            self._num_items += 1
            self._queued_tokens += entry.cost_tokens
        for cls, queue in self._by_class.items():
            self._class_heap.append((-len(queue), queue[0].seq, cls))
        heapq.heapify(self._class_heap)


def _check_cost(cost_tokens: int) -> None:
    if cost_tokens < 1:
        raise ValueError(f"cost_tokens must be >= 1, got {cost_tokens!r}")
