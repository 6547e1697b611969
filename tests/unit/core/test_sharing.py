"""Shared prefixes in the budget, on a CPU: a class's common prefix charged once,
held while any of its jobs is in flight, released with the last."""

from __future__ import annotations

from array import array
from dataclasses import replace

import pytest

from engines.contract import Capacity, EngineOutput, FinishReason
from fabric_worker.core.dispatcher import Dispatcher
from fabric_worker.core.policy import DispatchPolicy
from fabric_worker.core.sharing import SharedPrefixes, common_prefix
from fabric_worker.wire.claims import Claimed
from fabric_worker.wire.entries import JobEntry, encode_job
from fabric_worker.wire.fleet_config import FleetConfig


@pytest.mark.parametrize(
    ("a", "b", "length"),
    [
        ([], [1], 0),
        ([1, 2, 3], [1, 2, 3], 3),
        ([1, 2, 3], [1, 2, 4], 2),
        ([5], [6], 0),
        ([1, 2], [1, 2, 3, 4], 2),
    ],
)
def test_common_prefix(a: list[int], b: list[int], length: int) -> None:
    assert common_prefix(a, b) == length
    assert common_prefix(array("I", a), array("I", b)) == length


PREFIX = list(range(100, 190))  # 90 tokens shared by the class


def prompt(own: int) -> list[int]:
    return PREFIX + [own] * 6  # 96 tokens


def test_the_first_job_pays_a_later_one_is_discounted_in_whole_blocks() -> None:
    sharing = SharedPrefixes(block_tokens=16)
    first, second, third = object(), object(), object()
    assert sharing.discount("c", prompt(1)) == 0
    assert sharing.admitted("c", first, prompt(1), 0) == 0
    # 90 tokens in common: 5 whole blocks of 16
    assert sharing.discount("c", prompt(2)) == 80
    assert sharing.admitted("c", second, prompt(2), 80) == 80  # moved from the first's charge
    assert sharing.pinned_tokens == 80
    # a job sharing less gets less; none gets more than the pin
    assert sharing.discount("c", PREFIX[:40] + [7] * 56) == 32
    assert sharing.discount("c", PREFIX + [1] * 5 + [2]) == 80
    assert sharing.discount("other", prompt(2)) == 0 and sharing.discount(None, prompt(2)) == 0
    assert sharing.admitted("c", third, prompt(3), 80) == 0
    # the pin outlives the first job and goes with the last
    assert sharing.finished("c", first) == 0
    assert sharing.discount("c", prompt(4)) == 80
    assert sharing.finished("c", second) == 0
    assert sharing.finished("c", third) == 80
    assert sharing.pinned_tokens == 0 and sharing.discount("c", prompt(5)) == 0


def test_no_discount_once_the_first_job_left_before_any_pin() -> None:
    sharing = SharedPrefixes(block_tokens=16)
    first, second = object(), object()
    sharing.admitted("c", first, prompt(1), 0)
    sharing.admitted("c", second, [9] * 96, 0)  # shares nothing: charged in full, no pin
    sharing.finished("c", first)
    # nothing in flight holds the prefix in the budget now: a discount would undercount
    assert sharing.discount("c", prompt(3)) == 0
    assert sharing.finished("c", second) == 0


def test_a_block_is_never_the_whole_prompt() -> None:
    sharing = SharedPrefixes(block_tokens=16)
    sharing.admitted("c", object(), [1] * 32, 0)
    assert sharing.discount("c", [1] * 32) == 16  # the last token is computed: 31 shared


CONFIG = FleetConfig(lanes=(128,), vocab_size=1000, max_seq_len=256)
# High water 900 tokens; an in-flight engine (no padding) that shares prefixes.
CAPACITY = Capacity(
    max_batch_size=100,
    max_num_tokens=100,
    kv_cache_tokens=1000,
    kv_block_tokens=16,
    max_seq_len=256,
    pads_prompts=False,
)


def claimed(n: int, cls: str | None) -> Claimed:
    job = JobEntry(f"j{n}", array("I", prompt(n)), 36, prefix_class=cls, submitted_at=1.0)
    fields = {k.encode(): v for k, v in encode_job(job).items()}
    return Claimed(128, f"{n}-0".encode(), fields, 1)


def admitted(policy: DispatchPolicy, cls: str | None) -> tuple[Dispatcher, list[int]]:
    # read ahead deep enough to hold all 30 (the default holds one budget of full costs)
    deep = replace(policy, read_ahead_budgets=5, max_in_engine=100)
    d = Dispatcher(CONFIG, CAPACITY, deep, consumer="w1")
    d.accept([claimed(n, cls) for n in range(1, 31)], 0.0, 0.0)
    return d, [r.request_id for r in d.admit(0.0)]


def test_the_dispatcher_admits_more_of_a_class_and_releases_every_token() -> None:
    # each job costs 96 + 36 = 132: 6 fit in 900 without sharing
    _, unshared = admitted(DispatchPolicy(share_prefixes=False), "c")
    assert len(unshared) == 6
    # with it: 132 for the first, 52 for each other: 1 + 14 fit
    d, ids = admitted(DispatchPolicy(), "c")
    assert len(ids) == 15
    assert d.budget.in_flight_tokens == 132 + 14 * 52
    d.finish([EngineOutput(i, [1], FinishReason.LENGTH) for i in ids[:7]], 2.0)
    assert d.budget.in_flight_tokens == 80 + 8 * 52  # the first left; its prefix is pinned
    d.finish([EngineOutput(i, [1], FinishReason.LENGTH) for i in ids[7:]], 3.0)
    assert d.budget.in_flight_tokens == 0


def test_jobs_without_a_class_and_padding_engines_are_charged_in_full() -> None:
    _, classless = admitted(DispatchPolicy(), None)
    assert len(classless) == 6
    d = Dispatcher(CONFIG, replace(CAPACITY, pads_prompts=True), DispatchPolicy(), consumer="w")
    assert d.sharing is None
