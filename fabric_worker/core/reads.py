"""How much to read, and from where: the ingress and reclaim side of the budget.

A read asks for as many entries as the read-ahead queue has room for, by an
estimate of each lane's job cost (its boundary plus a moving average of the
``max_new_tokens`` seen there). Pure: backlogs and time in, a plan out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from fabric_worker.core.classes import ClassQueue
from fabric_worker.core.lanes import LaneChooser

MAX_READ_COUNT = 1000
EWMA_WEIGHT = 0.05  # of the newest job in a lane's estimated max_new_tokens

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """The next read: one lane at once, or every lane with a blocking wait."""

    lanes: tuple[int, ...]
    count: int
    is_blocking: bool
    backlog_tokens: int = 0  # the chosen lane's, as the plan saw it


class ReadPlanner(Generic[T]):
    """Plans reads against the room in ``queue``, lanes chosen by ``chooser``."""

    def __init__(self, chooser: LaneChooser, queue: ClassQueue[T]) -> None:
        self.chooser = chooser
        self.queue = queue
        self.lanes = chooser.lanes
        self.backlogs: dict[int, int] = {}  # as last read, for the level gauges
        self.last_read_count = 0
        self._empty_at: dict[int, int] = {}  # lane -> backlog at which a read came back empty
        self._est_new_tokens = {lane: float(lane) for lane in self.lanes}

    def _room(self) -> int:
        return self.queue.max_tokens - self.queue.queued_tokens

    def estimate(self, lane: int) -> int:
        """Expected padded cost of a job of this lane (EWMA of its max_new_tokens)."""
        return lane + int(self._est_new_tokens[lane])

    def observe(self, lane: int, max_new_tokens: int) -> None:
        """A job of ``lane`` was accepted: move the lane's estimate towards it."""
        est = self._est_new_tokens
        est[lane] += EWMA_WEIGHT * (max_new_tokens - est[lane])

    def _count(self, lane: int, room: int) -> int:
        return max(1, min(MAX_READ_COUNT, room // self.estimate(lane)))

    def has_room(self) -> bool:
        # Room for less than the cheapest likely job counts as full: reading one
        # entry only to hand it back would spin (and reorder the lane).
        return self._room() >= min(self.estimate(lane) for lane in self.lanes)

    def plan(self, now_s: float, backlogs: dict[int, int]) -> ReadPlan | None:
        """The next read given every lane's backlog; None to wait for room."""
        self.backlogs = backlogs
        readable = {
            lane: 0 if self._empty_at.get(lane) == value else value
            for lane, value in backlogs.items()
        }
        room = self._room()
        lane = self.chooser.choose(now_s, readable)
        if lane is None:
            middle = self.lanes[len(self.lanes) // 2]
            count = max(1, min(MAX_READ_COUNT, room // (2 * middle)))
            return ReadPlan(self.lanes, count, is_blocking=True)
        if room < self.estimate(lane):
            return None
        return ReadPlan((lane,), self._count(lane, room), False, backlogs[lane])

    def done(self, plan: ReadPlan, num_claimed: int) -> None:
        """The read of ``plan`` claimed ``num_claimed`` entries."""
        self.last_read_count = num_claimed
        if not num_claimed and not plan.is_blocking:
            # Pass over this lane until its backlog moves: the counter includes
            # work pending on other workers, which no read returns.
            self._empty_at[plan.lanes[0]] = plan.backlog_tokens

    def reclaim_count(self, lane: int) -> int | None:
        """How many idle entries of ``lane`` to take over; None if no room."""
        room = self._room()
        return None if room < self.estimate(lane) else self._count(lane, room)
