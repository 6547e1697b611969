"""Lifecycles of a job and of a worker: enums with one table-driven transition function each.

Flags drift apart; a table names every legal step, and anything else is a bug that
surfaces as :class:`InvalidTransition` at the step that made it (docs/style.md, rule 6).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


class InvalidTransition(ValueError):
    """An event that the lifecycle's table does not allow in the current state."""

    def __init__(self, state: enum.Enum, event: enum.Enum) -> None:
        super().__init__(f"event {event.name} is not allowed in state {state.name}")
        self.state = state
        self.event = event


class JobState(enum.Enum):
    """Where one claimed job is, as seen by the worker that claimed it."""

    CLAIMED = "claimed"  # read from the lane stream (or reclaimed), pending on this worker
    QUEUED = "queued"  # in the admission queue
    RUNNING = "running"  # admitted, in the engine
    FINISHED = "finished"  # the engine is done; the result is not yet written
    COMPLETED = "completed"  # result written, entry acked (terminal)
    DUPLICATE = "duplicate"  # another delivery had already completed it; only acked (terminal)
    LOST = "lost"  # lease lost to another worker (terminal)
    RELEASED = "released"  # handed back unstarted on a graceful stop (terminal)
    DEAD = "dead"  # dead-lettered (terminal)
    RETRIED = "retried"  # the engine failed it; let go for the next reclaim to retry (terminal)
    ABANDONED = "abandoned"  # cancelled at teardown; left pending for reclaim (terminal)

    @property
    def is_terminal(self) -> bool:
        """Whether no event can move a job on from this state."""
        return self in _TERMINAL_JOB_STATES


_TERMINAL_JOB_STATES = frozenset(
    {
        JobState.COMPLETED,
        JobState.DUPLICATE,
        JobState.LOST,
        JobState.RELEASED,
        JobState.DEAD,
        JobState.RETRIED,
        JobState.ABANDONED,
    }
)


class JobEvent(enum.Enum):
    """What happened to a job."""

    ENQUEUED = "enqueued"  # decoded and put in the admission queue
    ADMITTED = "admitted"  # budget reserved, handed to the engine
    ENGINE_DONE = "engine_done"  # the engine returned its output
    COMMITTED = "committed"  # the complete script wrote the result
    ALREADY_DONE = "already_done"  # the complete script found it done elsewhere
    LEASE_LOST = "lease_lost"  # the lease renewer found the entry owned by another worker
    RELEASED = "released"  # handed back to the group on a graceful stop
    DEAD_LETTERED = "dead_lettered"  # moved to the dead-letter stream
    ATTEMPT_FAILED = "attempt_failed"  # the engine returned an error for it
    ABANDONED = "abandoned"  # the worker tears down before the engine finished it


_J = JobState
_E = JobEvent
JOB_TRANSITIONS: Mapping[tuple[JobState, JobEvent], JobState] = MappingProxyType(
    {
        (_J.CLAIMED, _E.ENQUEUED): _J.QUEUED,
        (_J.QUEUED, _E.ADMITTED): _J.RUNNING,
        (_J.RUNNING, _E.ENGINE_DONE): _J.FINISHED,
        (_J.FINISHED, _E.COMMITTED): _J.COMPLETED,
        (_J.FINISHED, _E.ALREADY_DONE): _J.DUPLICATE,
        # Once the engine is done, the complete script settles ownership: a lost lease shows
        # up there as ALREADY_DONE, so FINISHED has no LEASE_LOST.
        (_J.CLAIMED, _E.LEASE_LOST): _J.LOST,
        (_J.QUEUED, _E.LEASE_LOST): _J.LOST,
        (_J.RUNNING, _E.LEASE_LOST): _J.LOST,
        # Only work the engine has not started is handed back.
        (_J.CLAIMED, _E.RELEASED): _J.RELEASED,
        (_J.QUEUED, _E.RELEASED): _J.RELEASED,
        (_J.CLAIMED, _E.DEAD_LETTERED): _J.DEAD,
        (_J.QUEUED, _E.DEAD_LETTERED): _J.DEAD,
        (_J.RUNNING, _E.DEAD_LETTERED): _J.DEAD,
        (_J.FINISHED, _E.DEAD_LETTERED): _J.DEAD,
        (_J.FINISHED, _E.ATTEMPT_FAILED): _J.RETRIED,
        (_J.RUNNING, _E.ABANDONED): _J.ABANDONED,
    }
)
"""Every legal job step: (state, event) -> next state."""


def job_transition(state: JobState, event: JobEvent) -> JobState:
    """The state after ``event``; raises InvalidTransition if the table does not allow it."""
    try:
        return JOB_TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None


class WorkerState(enum.Enum):
    """Where one worker process is."""

    STARTING = "starting"  # loading config and engine; claims nothing
    RUNNING = "running"  # claiming and serving
    DRAINING = "draining"  # stop requested: claims nothing new, finishes or hands back work
    STOPPED = "stopped"  # drained, exits 0 (terminal)
    FAILED = "failed"  # fatal error, exits non-zero (terminal)

    @property
    def is_terminal(self) -> bool:
        """Whether no event can move a worker on from this state."""
        return self in (WorkerState.STOPPED, WorkerState.FAILED)


class WorkerEvent(enum.Enum):
    """What happened to a worker."""

    STARTED = "started"  # config accepted, engine up
    STOP_REQUESTED = "stop_requested"  # signal, burst mode out of work, or operator
    DRAINED = "drained"  # nothing left in flight or queued
    FATAL_ERROR = "fatal_error"  # engine fatal, broker lost, invariant broken


_W = WorkerState
_V = WorkerEvent
WORKER_TRANSITIONS: Mapping[tuple[WorkerState, WorkerEvent], WorkerState] = MappingProxyType(
    {
        (_W.STARTING, _V.STARTED): _W.RUNNING,
        # A stop during startup drains too: draining nothing is immediate, and the teardown
        # stays one path.
        (_W.STARTING, _V.STOP_REQUESTED): _W.DRAINING,
        (_W.RUNNING, _V.STOP_REQUESTED): _W.DRAINING,
        # Signals repeat (SIGTERM then SIGINT, two operators); a second request changes nothing.
        (_W.DRAINING, _V.STOP_REQUESTED): _W.DRAINING,
        (_W.DRAINING, _V.DRAINED): _W.STOPPED,
        (_W.STARTING, _V.FATAL_ERROR): _W.FAILED,
        (_W.RUNNING, _V.FATAL_ERROR): _W.FAILED,
        (_W.DRAINING, _V.FATAL_ERROR): _W.FAILED,
    }
)
"""Every legal worker step: (state, event) -> next state."""


def worker_transition(state: WorkerState, event: WorkerEvent) -> WorkerState:
    """The state after ``event``; raises InvalidTransition if the table does not allow it."""
    try:
        return WORKER_TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None
