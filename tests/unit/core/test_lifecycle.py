"""Job and worker lifecycles: every allowed transition, and every other one refused."""

from __future__ import annotations

import itertools

import pytest

from fabric_worker.core.lifecycle import (
    InvalidTransition,
    JobEvent,
    JobState,
    WorkerEvent,
    WorkerState,
    job_transition,
    worker_transition,
)

J, E = JobState, JobEvent
W, V = WorkerState, WorkerEvent

# Written out from the design, independently of the module's table.
EXPECTED_JOB = {
    (J.CLAIMED, E.ENQUEUED): J.QUEUED,
    (J.QUEUED, E.ADMITTED): J.RUNNING,
    (J.RUNNING, E.ENGINE_DONE): J.FINISHED,
    (J.FINISHED, E.COMMITTED): J.COMPLETED,
    (J.FINISHED, E.ALREADY_DONE): J.DUPLICATE,
    (J.CLAIMED, E.LEASE_LOST): J.LOST,
    (J.QUEUED, E.LEASE_LOST): J.LOST,
    (J.RUNNING, E.LEASE_LOST): J.LOST,
    (J.CLAIMED, E.RELEASED): J.RELEASED,
    (J.QUEUED, E.RELEASED): J.RELEASED,
    (J.CLAIMED, E.DEAD_LETTERED): J.DEAD,
    (J.QUEUED, E.DEAD_LETTERED): J.DEAD,
    (J.RUNNING, E.DEAD_LETTERED): J.DEAD,
    (J.FINISHED, E.DEAD_LETTERED): J.DEAD,
    (J.FINISHED, E.ATTEMPT_FAILED): J.RETRIED,
    (J.RUNNING, E.ABANDONED): J.ABANDONED,
}

EXPECTED_WORKER = {
    (W.STARTING, V.STARTED): W.RUNNING,
    (W.STARTING, V.STOP_REQUESTED): W.DRAINING,
    (W.RUNNING, V.STOP_REQUESTED): W.DRAINING,
    (W.DRAINING, V.STOP_REQUESTED): W.DRAINING,
    (W.DRAINING, V.DRAINED): W.STOPPED,
    (W.STARTING, V.FATAL_ERROR): W.FAILED,
    (W.RUNNING, V.FATAL_ERROR): W.FAILED,
    (W.DRAINING, V.FATAL_ERROR): W.FAILED,
}

JOB_REFUSED = [pair for pair in itertools.product(JobState, JobEvent) if pair not in EXPECTED_JOB]
WORKER_REFUSED = [
    pair for pair in itertools.product(WorkerState, WorkerEvent) if pair not in EXPECTED_WORKER
]


@pytest.mark.parametrize(("pair", "after"), EXPECTED_JOB.items(), ids=str)
def test_job_allowed(pair: tuple[JobState, JobEvent], after: JobState) -> None:
    assert job_transition(*pair) is after


@pytest.mark.parametrize("pair", JOB_REFUSED, ids=str)
def test_job_refused(pair: tuple[JobState, JobEvent]) -> None:
    state, event = pair
    with pytest.raises(InvalidTransition) as raised:
        job_transition(state, event)
    assert raised.value.state is state
    assert raised.value.event is event
    assert state.name in str(raised.value)
    assert event.name in str(raised.value)


def test_job_refusals_include_the_ones_that_matter() -> None:
    # Spot checks that the exhaustive list above really is refusing what it should.
    for pair in [
        (J.FINISHED, E.LEASE_LOST),  # settled by the complete script instead
        (J.RUNNING, E.RELEASED),  # started work is never handed back
        (J.CLAIMED, E.ADMITTED),  # admission goes through the queue
        (J.COMPLETED, E.COMMITTED),  # a result is written once
        (J.DEAD, E.DEAD_LETTERED),
    ]:
        assert pair in JOB_REFUSED


def test_invalid_transition_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        job_transition(J.COMPLETED, E.ENQUEUED)


def test_job_terminal_states_have_no_way_out() -> None:
    terminal = {J.COMPLETED, J.DUPLICATE, J.LOST, J.RELEASED, J.DEAD, J.RETRIED, J.ABANDONED}
    assert {state for state in JobState if state.is_terminal} == terminal
    assert {state for state, _ in EXPECTED_JOB} == set(JobState) - terminal


def test_job_happy_path() -> None:
    state = J.CLAIMED
    for event in (E.ENQUEUED, E.ADMITTED, E.ENGINE_DONE, E.COMMITTED):
        state = job_transition(state, event)
    assert state is J.COMPLETED


@pytest.mark.parametrize(("pair", "after"), EXPECTED_WORKER.items(), ids=str)
def test_worker_allowed(pair: tuple[WorkerState, WorkerEvent], after: WorkerState) -> None:
    assert worker_transition(*pair) is after


@pytest.mark.parametrize("pair", WORKER_REFUSED, ids=str)
def test_worker_refused(pair: tuple[WorkerState, WorkerEvent]) -> None:
    state, event = pair
    with pytest.raises(InvalidTransition) as raised:
        worker_transition(state, event)
    assert raised.value.state is state
    assert raised.value.event is event


def test_worker_terminal_states() -> None:
    assert {state for state in WorkerState if state.is_terminal} == {W.STOPPED, W.FAILED}
    assert (W.RUNNING, V.DRAINED) in WORKER_REFUSED
    assert (W.STOPPED, V.STARTED) in WORKER_REFUSED
