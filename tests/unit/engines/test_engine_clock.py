"""The injectable clock: wall and virtual."""

from __future__ import annotations

import time

from engines.clock import Clock, VirtualClock, WallClock


def test_virtual_clock_moves_only_when_told() -> None:
    clock = VirtualClock(start_s=5.0)
    assert clock.now_s() == 5.0
    assert clock.now_s() == 5.0
    clock.sleep(1.5)
    assert clock.now_s() == 6.5
    clock.advance(0.5)
    assert clock.now_s() == 7.0


def test_virtual_clock_ignores_negative_time() -> None:
    clock = VirtualClock()
    clock.sleep(-1.0)
    clock.advance(-1.0)
    assert clock.now_s() == 0.0


def test_virtual_sleep_does_not_block() -> None:
    clock = VirtualClock()
    started = time.monotonic()
    clock.sleep(3600.0)
    assert time.monotonic() - started < 1.0
    assert clock.now_s() == 3600.0


def test_wall_clock_sleeps_real_time() -> None:
    clock: Clock = WallClock()
    started = clock.now_s()
    clock.sleep(0.02)
    assert clock.now_s() - started >= 0.02
    clock.sleep(-5.0)  # does not raise
