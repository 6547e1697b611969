"""Injected faults: poison tokens, a fatal engine, a hanging close."""

from __future__ import annotations

import time

import pytest

from engines.clock import VirtualClock
from engines.contract import EngineFatalError, EngineOutput, EngineRequest, FinishReason
from engines.manifest import Manifest
from engines.sim import SimEngine, SimFaults, expected_output

from .conftest import Collect


def test_faults_are_off_by_default() -> None:
    assert SimFaults() == SimFaults(None, None, None)


def test_a_poisoned_request_fails_alone(
    small: Manifest, clock: VirtualClock, collect: Collect
) -> None:
    engine = SimEngine(small, clock=clock, faults=SimFaults(poison_token=666))
    good = EngineRequest(2, [1, 2, 3], 4)
    engine.submit([EngineRequest(1, [5, 666, 7], 4), good])
    outputs = collect(engine, 2)
    assert outputs[0] == EngineOutput(1, [], FinishReason.ERROR, "sim: poison token 666 in prompt")
    assert outputs[1].tokens == expected_output(good.prompt, 4, None)[0]


def test_fatal_after_steps_raises_from_poll_and_stays_fatal(
    small: Manifest, clock: VirtualClock
) -> None:
    engine = SimEngine(small, clock=clock, faults=SimFaults(fatal_after_steps=3))
    engine.submit([EngineRequest(1, [1, 2, 3], 100)])
    with pytest.raises(EngineFatalError, match="after 3 iterations"):
        engine.poll(timeout_s=100.0)
    assert engine.stats().num_steps == 3
    with pytest.raises(EngineFatalError):
        engine.poll(timeout_s=0.0)


def test_outputs_finished_before_the_fault_are_returned(
    small: Manifest, clock: VirtualClock
) -> None:
    engine = SimEngine(small, clock=clock, faults=SimFaults(fatal_after_steps=2))
    engine.submit([EngineRequest(1, [1], 2), EngineRequest(2, [2], 50)])
    assert [o.request_id for o in engine.poll(timeout_s=100.0)] == [1]
    with pytest.raises(EngineFatalError):
        engine.poll(timeout_s=100.0)


def test_hang_on_close_spends_clock_time_once(small: Manifest, clock: VirtualClock) -> None:
    engine = SimEngine(small, clock=clock, faults=SimFaults(hang_on_close_s=30.0))
    engine.close()
    assert clock.now_s() == 30.0
    engine.close()
    assert clock.now_s() == 30.0


def test_hang_on_close_blocks_on_the_wall_clock(small: Manifest) -> None:
    engine = SimEngine(small, faults=SimFaults(hang_on_close_s=0.05))
    started = time.monotonic()
    engine.close()
    assert time.monotonic() - started >= 0.05
