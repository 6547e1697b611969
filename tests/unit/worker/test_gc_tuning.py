"""tune_gc: start-up frozen out of the collector's sight, rarer young collections."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from fabric_worker.worker.service import GC_THRESHOLDS, tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restore_gc")
def test_start_up_objects_are_frozen_and_young_collections_are_rare() -> None:
    gc.unfreeze()
    survivor = [[i] for i in range(10)]  # lists: tracked by the collector
    assert any(o is survivor for o in gc.get_objects())
    tune_gc()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert GC_THRESHOLDS[0] > 700  # rarer than Python's default
    assert gc.get_freeze_count() >= len(survivor)
    # Frozen: in no generation the collector walks any more.
    assert not any(o is survivor for o in gc.get_objects())


@pytest.mark.usefixtures("restore_gc")
def test_cycles_made_after_tuning_are_still_collected() -> None:
    tune_gc()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    del a, b
    assert gc.isenabled() and ref() is not None  # a cycle: only the collector frees it
    # No gc.collect(): allocations past the first threshold must set the
    # automatic collection off, as they do while serving.
    kept = [[i] for i in range(2 * GC_THRESHOLDS[0])]
    assert ref() is None
    del kept
