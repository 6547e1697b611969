"""How much to read, and from where: the ingress and reclaim side of the budget.

A read asks for as many entries as the read-ahead queue has room for, by an
estimate of each lane's job cost (its boundary plus a moving average of the
``max_new_tokens`` seen there). Pure: backlogs and time in, a plan out.

Two orders. Lane by lane (``arrival_order`` false): one lane at a time, as the
:class:`LaneChooser` says, which keeps a static engine's batches shape-pure.
In arrival order: every lane with work in one read, its share of the room
each, for an engine that batches in flight: there a batch of only long
prompts steps slower than the mix the jobs arrived in (docs/benchmarks.md,
section 7), and shape purity buys nothing. The dispatcher then queues the
entries by their stream ids, which are their arrival times.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from fabric_worker.core.classes import ClassQueue
from fabric_worker.core.lanes import LaneChooser

MAX_READ_COUNT = 1000
MIN_READ_FRACTION = 16  # of the read-ahead's tokens: the least room worth a read
EWMA_WEIGHT = 0.05  # of the newest job in a lane's estimated max_new_tokens

T = TypeVar("T")


def arrival(entry_id: bytes) -> tuple[int, int]:
    """A stream entry id (``ms-seq``, as XADD's ``*`` makes it) as a sortable pair."""
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """The next read: one lane at once, or every lane with a blocking wait."""

    lanes: tuple[int, ...]
    count: int
    is_blocking: bool
    backlog_tokens: int = 0  # the chosen lane's, as the plan saw it


class ReadPlanner(Generic[T]):
    """Plans reads against the room in ``queue``, lanes chosen by ``chooser``."""

    def __init__(
        self, chooser: LaneChooser, queue: ClassQueue[T], *, arrival_order: bool = False
    ) -> None:
        self.chooser = chooser
        self.queue = queue
        self.arrival_order = arrival_order
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
        """Whether a read is worth its round trips now.

        Room for less than the cheapest likely job counts as full: reading one
        entry only to hand it back would spin (and reorder the lane). And a full
        read-ahead is refilled by reads of at least ``1 / MIN_READ_FRACTION`` of
        it: with hundreds in flight a few jobs finish per engine iteration, and
        a read (backlogs, XREADGROUP, intake) per iteration for those few cost
        more than a tenth of the iteration, while 15/16 of the read-ahead keeps
        the engine fed meanwhile.
        """
        cheapest = min(self.estimate(lane) for lane in self.lanes)
        return self._room() >= max(cheapest, self.queue.max_tokens // MIN_READ_FRACTION)

    def plan(self, now_s: float, backlogs: dict[int, int]) -> ReadPlan | None:
        """The next read given every lane's backlog; None to wait for room."""
        self.backlogs = backlogs
        readable = {
            lane: 0 if self._empty_at.get(lane) == value else value
            for lane, value in backlogs.items()
        }
        room = self._room()
        if self.arrival_order:
            return self._plan_all(room, readable)
        lane = self.chooser.choose(now_s, readable)
        if lane is None:
            return self._blocking(room)
        if room < self.estimate(lane):
            return None
        return ReadPlan((lane,), self._count(lane, room), False, backlogs[lane])

    def _plan_all(self, room: int, readable: dict[int, int]) -> ReadPlan | None:
        lanes = tuple(lane for lane in self.lanes if readable.get(lane, 0) > 0)
        if not lanes:
            return self._blocking(room)
        per_round = sum(self.estimate(lane) for lane in lanes)  # one job from each lane
        if room < min(self.estimate(lane) for lane in lanes):
            return None
        count = max(1, min(MAX_READ_COUNT, room // per_round))
        return ReadPlan(lanes, count, False, sum(readable[lane] for lane in lanes))

    def _blocking(self, room: int) -> ReadPlan:
        middle = self.lanes[len(self.lanes) // 2]
        count = max(1, min(MAX_READ_COUNT, room // (2 * middle)))
        return ReadPlan(self.lanes, count, is_blocking=True)

    def done(self, plan: ReadPlan, num_claimed: int, *, lanes_claimed: Iterable[int] = ()) -> None:
        """The read of ``plan`` claimed ``num_claimed`` entries, from ``lanes_claimed``
        (needed only for a read of several lanes that was not blocking)."""
        self.last_read_count = num_claimed
        if plan.is_blocking:
            return
        if len(plan.lanes) == 1:
            if not num_claimed:
                # Pass over this lane until its backlog moves: the counter includes
                # work pending on other workers, which no read returns.
                self._empty_at[plan.lanes[0]] = plan.backlog_tokens
            return
        got = set(lanes_claimed)
        for lane in plan.lanes:
            if lane not in got:
                self._empty_at[lane] = self.backlogs.get(lane, 0)

    def reclaim_count(self, lane: int) -> int | None:
        """How many idle entries of ``lane`` to take over; None if no room."""
        room = self._room()
        return None if room < self.estimate(lane) else self._count(lane, room)
