"""Shared fixtures for the engine unit tests: manifests, clocks, a poll loop."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engines.clock import VirtualClock
from engines.contract import Engine, EngineOutput
from engines.manifest import MANIFEST_DIR, Manifest, load_manifest

Collect = Callable[[Engine, int], list[EngineOutput]]


@pytest.fixture
def small() -> Manifest:
    """sim-small.json: batch 64, 2048 tokens per iteration, 65,536 KV tokens."""
    return load_manifest(MANIFEST_DIR / "sim-small.json")


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def collect() -> Collect:
    """Poll until ``n`` outputs came back; fail if the engine stops producing."""

    def run(engine: Engine, n: int) -> list[EngineOutput]:
        outputs: list[EngineOutput] = []
        for _ in range(100_000):
            if len(outputs) >= n:
                break
            outputs.extend(engine.poll(timeout_s=10.0))
        else:
            pytest.fail(f"engine returned {len(outputs)} outputs, expected {n}")
        assert len(outputs) == n, f"got {len(outputs)} outputs, expected {n}"
        return outputs

    return run
