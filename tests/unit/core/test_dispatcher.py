"""The dispatcher on a CPU with no server: reads, accept, admission order, finish,
the complete script's replies, lease loss and the graceful hand-back."""

from __future__ import annotations

from array import array
from dataclasses import replace

import pytest

from engines.contract import Capacity, EngineOutput, FinishReason
from fabric_worker.core.dispatcher import Dispatcher
from fabric_worker.core.lifecycle import JobState
from fabric_worker.core.policy import DispatchPolicy
from fabric_worker.wire.claims import Claimed, DeadLetter, HandBack, Retry
from fabric_worker.wire.entries import JobEntry, decode_result, encode_job
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.replies import CompleteReply

CONFIG = FleetConfig(
    lanes=(64, 128), vocab_size=1000, max_deliveries=3, lease_s=10.0, max_seq_len=256
)
# Budget: high water 900 tokens (90% of the KV cache), low water 800.
CAPACITY = Capacity(
    max_batch_size=8, max_num_tokens=100, kv_cache_tokens=1000, kv_block_tokens=16, max_seq_len=256
)


def dispatcher(max_in_engine: int | None = None) -> Dispatcher:
    policy = DispatchPolicy(max_in_engine=max_in_engine)
    return Dispatcher(CONFIG, CAPACITY, policy, consumer="w1")


def entry(
    n: int, *, lane: int = 64, max_new: int = 36, deliveries: int = 1, cls: str | None = None
) -> Claimed:
    """Job ``j<n>`` at entry id ``<n>-0``: padded cost lane + max_new (100 by default)."""
    job = JobEntry(f"j{n}", array("I", [1, 2, 3]), max_new, prefix_class=cls, submitted_at=5.0)
    fields = {k.encode(): v for k, v in encode_job(job).items()}
    return Claimed(lane, f"{n}-0".encode(), fields, deliveries)


def out(request_id: int, reason: FinishReason = FinishReason.LENGTH, **kw: object) -> EngineOutput:
    return EngineOutput(request_id, [7, 8], reason, **kw)  # type: ignore[arg-type]


def test_marks_and_read_ahead_come_from_the_capacity() -> None:
    d = dispatcher()
    assert (d.budget.marks.high_water_tokens, d.budget.marks.low_water_tokens) == (900, 800)
    assert d.queue.max_tokens == 900
    assert (
        "budget high=900 low=800 tokens; read-ahead 900 tokens; at most 10 requests in the "
        "engine; lanes 64,128"
    ) in d.describe()


def test_with_no_backlog_the_read_blocks_on_every_lane() -> None:
    plan = dispatcher().reads.plan(0.0, {64: 0, 128: 0})
    assert plan is not None
    assert (plan.lanes, plan.is_blocking) == ((64, 128), True)
    assert plan.count == 900 // (2 * 128)


def test_a_lane_with_backlog_is_read_for_what_the_room_holds_and_skipped_once_empty() -> None:
    d = dispatcher()
    plan = d.reads.plan(0.0, {64: 500, 128: 0})
    assert plan is not None
    assert (plan.lanes, plan.is_blocking, plan.count) == ((64,), False, 900 // 128)
    d.reads.done(plan, 0)
    # The same backlog again: nothing readable there (pending elsewhere), so block on all.
    again = d.reads.plan(0.1, {64: 500, 128: 0})
    assert again is not None and again.is_blocking
    moved = d.reads.plan(0.2, {64: 600, 128: 0})
    assert moved is not None and moved.lanes == (64,)


def test_accept_queues_what_it_can_and_says_what_to_dead_letter_and_hand_back() -> None:
    d = dispatcher()
    bad = Claimed(64, b"99-0", {}, 1)
    rejected = d.accept([entry(i) for i in range(1, 11)] + [bad], now_s=0.0, now_unix=100.0)
    # 900 tokens of room: nine jobs of 100 fit, the tenth goes back.
    assert len(d.queue) == 9 and len(d.holdings) == 9
    assert rejected.hand_backs == [HandBack(64, b"10-0", "j10")]
    assert rejected.dead_letters == [
        DeadLetter(64, b"99-0", None, 0, "entry was deleted while pending", 1)
    ]
    assert d.counts.dead_lettered == 1
    # A second delivery of a held entry (our own, reclaimed after a stall) is passed over.
    assert d.accept([entry(1)], 1.0, 101.0).hand_backs == []
    assert len(d.holdings) == 9


def test_admission_follows_the_queue_and_stops_at_high_water_until_low_water() -> None:
    d = dispatcher()
    d.accept([entry(1, cls="a"), entry(2, cls="b"), entry(3, cls="a")], 0.0, 100.0)
    requests = d.admit(0.0)
    # One prefix class at a time: both "a" jobs before the "b" one.
    assert [r.prefix_class for r in requests] == ["a", "a", "b"]
    assert [r.request_id for r in requests] == [1, 2, 3]
    assert [r.pad_to for r in requests] == [64, 64, 64]
    d.accept([entry(n) for n in range(4, 12)], 0.0, 100.0)
    more = d.admit(0.0)
    assert len(more) == 6 and d.budget.in_flight_tokens == 900  # high water reached
    assert not d.budget.is_open
    d.finish([out(1)], 101.0)  # 800 in flight: not below low water yet
    assert d.admit(0.0) == []
    d.finish([out(2)], 101.0)  # 700: the gate opens again
    assert len(d.admit(0.0)) == 2


def test_admission_keeps_at_most_the_cap_in_the_engine_and_stops_on_a_stop() -> None:
    d = dispatcher(max_in_engine=2)
    d.accept([entry(n, lane=64, max_new=1) for n in range(1, 6)], 0.0, 100.0)
    first = d.admit(0.0)
    assert len(first) == 2 and d.admit(0.0) == []  # the budget has room; the engine has not
    d.finish([out(first[0].request_id)], 101.0)
    assert len(d.admit(0.0)) == 1  # one returned, one more goes in
    d.stop_admitting()
    assert d.admit(0.0) == []


def test_the_default_cap_is_the_engine_batch_and_a_quarter_more() -> None:
    assert dispatcher().engine_cap == 10  # a batch of 8, 2 more waiting
    assert DispatchPolicy().engine_cap(1) == 2  # at least one waiting
    assert DispatchPolicy(max_in_engine=3).engine_cap(64) == 3
    with pytest.raises(ValueError, match="max_in_engine"):
        DispatchPolicy(max_in_engine=0)


def test_a_lost_request_keeps_its_engine_slot_until_the_engine_returns_it() -> None:
    d = dispatcher(max_in_engine=1)
    d.accept([entry(1), entry(2)], 0.0, 100.0)
    [running] = d.admit(0.0)
    d.lose({(64, b"1-0")})
    assert d.admit(0.0) == []  # cancelled, but still in the engine
    d.finish([out(running.request_id, FinishReason.CANCELLED)], 101.0)
    assert len(d.admit(0.0)) == 1


def test_finish_releases_the_budget_and_encodes_one_result_per_output() -> None:
    d = dispatcher()
    d.accept([entry(1, deliveries=2)], 0.0, 100.0)
    [request] = d.admit(0.0)
    finished = d.finish([out(request.request_id, FinishReason.STOP)], 105.0)
    assert d.budget.in_flight_tokens == 0
    [held] = finished.written
    assert held.state is JobState.FINISHED
    [completion] = finished.completions
    assert (completion.lane, completion.entry_id, completion.job_id) == (64, b"1-0", "j1")
    assert completion.cost_tokens == 100
    result = decode_result({b"h": completion.header, b"t": completion.tokens})
    assert (result.id, result.tokens, result.finish_reason) == ("j1", [7, 8], "stop")
    assert (result.worker, result.deliveries) == ("w1", 2)
    assert (result.submitted_at, result.started_at, result.finished_at) == (5.0, 100.0, 105.0)


def test_settle_after_replies_counts_each_outcome_and_lets_go_of_the_entries() -> None:
    d = dispatcher()
    d.accept([entry(1), entry(2)], 0.0, 100.0)
    ids = [r.request_id for r in d.admit(0.0)]
    finished = d.finish([out(i) for i in ids], 101.0)
    d.committed(finished.written, [CompleteReply.OK, CompleteReply.DUPLICATE])
    assert (d.counts.completed, d.counts.duplicates) == (1, 1)
    assert [h.state for h in finished.written] == [JobState.COMPLETED, JobState.DUPLICATE]
    assert d.is_idle
    with pytest.raises(ValueError):  # one reply per written result
        d.committed(finished.written, [CompleteReply.OK])


def test_an_engine_error_is_retried_until_max_deliveries_then_dead_lettered() -> None:
    d = dispatcher()
    d.accept([entry(1, deliveries=2), entry(2, deliveries=3)], 0.0, 100.0)
    ids = [r.request_id for r in d.admit(0.0)]
    finished = d.finish([out(i, FinishReason.ERROR, error="oom") for i in ids], 101.0)
    assert finished.completions == []
    assert finished.retries == [Retry(64, b"1-0", idle_ms=20_000)]  # twice the lease
    assert finished.dead_letters == [
        DeadLetter(64, b"2-0", "j2", 100, "engine failed it on each of 3 deliveries", 3, "oom")
    ]
    assert (d.counts.retried, d.counts.dead_lettered) == (1, 1)
    assert d.is_idle and d.budget.in_flight_tokens == 0


def test_cancelled_at_teardown_is_left_pending_and_an_unknown_output_is_an_invariant() -> None:
    d = dispatcher()
    d.accept([entry(1)], 0.0, 100.0)
    [request] = d.admit(0.0)
    assert d.finish([out(request.request_id, FinishReason.CANCELLED)], 101.0).retries == []
    assert d.is_idle and d.counts.lease_lost == 0
    with pytest.raises(RuntimeError, match="unknown request 99"):
        d.finish([out(99)], 101.0)


def test_a_lost_lease_drops_queued_entries_and_cancels_running_ones() -> None:
    d = dispatcher(max_in_engine=2)
    d.accept([entry(1), entry(2), entry(3)], 0.0, 100.0)
    [running, finishing] = d.admit(0.0)
    finished = d.finish([out(finishing.request_id)], 101.0)
    cancels, num_lost = d.lose({(64, b"1-0"), (64, b"2-0"), (64, b"3-0"), (64, b"9-0")})
    # The running one is cancelled in the engine; the finished one is the complete
    # script's to settle; the queued one and an unknown id are simply gone.
    assert cancels == [running.request_id]
    assert num_lost == 2
    assert len(d.queue) == 0
    assert d.counts.lease_lost == 1  # the queued one now; the running one when it returns
    d.finish([out(running.request_id, FinishReason.CANCELLED)], 102.0)
    assert d.counts.lease_lost == 2
    assert [h.job.id for h in finished.written] == ["j2"]
    assert d.budget.in_flight_tokens == 0


def test_a_graceful_stop_hands_back_everything_unstarted() -> None:
    d = dispatcher(max_in_engine=1)
    d.accept([entry(1), entry(2), entry(3)], 0.0, 100.0)
    d.admit(0.0)
    assert d.release_unstarted() == [HandBack(64, b"2-0", "j2"), HandBack(64, b"3-0", "j3")]
    assert len(d.holdings) == 1 and not d.is_admitting


def test_reclaim_asks_only_for_what_the_room_holds() -> None:
    d = dispatcher()
    assert d.reads.reclaim_count(64) == 900 // 128
    d.accept([entry(n) for n in range(1, 9)], 0.0, 100.0)  # 800 of 900 queued
    assert d.reads.reclaim_count(128) is None
    assert d.reads.reclaim_count(64) is None  # 100 left, less than the estimate of 128


def test_an_engine_that_does_not_pad_is_charged_its_prompt_and_the_backlog_its_padding() -> None:
    policy = DispatchPolicy(max_in_engine=30)
    d = Dispatcher(CONFIG, replace(CAPACITY, pads_prompts=False), policy, consumer="w1")
    # Prompts of 3 tokens + 36 new: 39 budget tokens each, 100 padded in the lane's backlog.
    d.accept([entry(n) for n in range(1, 31)], 0.0, 100.0)
    assert len(d.queue) == 23  # 23 * 39 = 897 of the 900-token read-ahead
    requests = d.admit(0.0)
    assert len(requests) == 23 and d.budget.in_flight_tokens == 23 * 39
    finished = d.finish([out(requests[0].request_id)], 101.0)
    assert d.budget.in_flight_tokens == 22 * 39
    [completion] = finished.completions
    assert completion.cost_tokens == 100  # the submit script charged the backlog this much


@pytest.mark.parametrize(
    ("policy", "max_tokens"),
    [
        (DispatchPolicy(), 900),
        (DispatchPolicy(max_tps=True), 2000),  # max-TPS high water: 1000,
        (DispatchPolicy(read_ahead_budgets=4), 3600),
        (DispatchPolicy(max_tps=True, read_ahead_budgets=3), 3000),
    ],
)
def test_the_read_ahead_holds_the_chosen_number_of_budgets(
    policy: DispatchPolicy, max_tokens: int
) -> None:
    d = Dispatcher(CONFIG, CAPACITY, policy, consumer="w1")
    assert d.queue.max_tokens == max_tokens
    # and reads plan for that room: a 100-token lane-64 job, as many as fit
    plan = d.reads.plan(0.0, {64: 10**6, 128: 0})
    assert plan is not None and plan.count == max_tokens // (64 + 64)


def test_a_read_ahead_of_no_budgets_is_refused() -> None:
    with pytest.raises(ValueError, match="read_ahead_budgets must be >= 1"):
        DispatchPolicy(read_ahead_budgets=0)


def in_flight_dispatcher(**policy: object) -> Dispatcher:
    capacity = replace(CAPACITY, pads_prompts=False)
    return Dispatcher(CONFIG, capacity, DispatchPolicy(**policy), consumer="w1")  # type: ignore[arg-type]


def test_an_engine_that_does_not_pad_reads_every_lane_with_work_at_once() -> None:
    d = in_flight_dispatcher()
    assert d.arrival_order
    plan = d.reads.plan(0.0, {64: 500, 128: 700})
    assert plan is not None and not plan.is_blocking
    # one job from each lane costs (64 + 64) + (128 + 128) by the first estimates
    assert (plan.lanes, plan.count) == ((64, 128), 900 // (128 + 256))
    # a lane the read found empty is passed over until its backlog moves
    d.reads.done(plan, 2, lanes_claimed={128})
    later = d.reads.plan(0.0, {64: 500, 128: 700})
    assert later is not None and later.lanes == (128,)
    moved = d.reads.plan(0.0, {64: 600, 128: 700})
    assert moved is not None and moved.lanes == (64, 128)


def test_arrival_order_queues_entries_by_stream_id_across_lanes() -> None:
    d = in_flight_dispatcher()
    # max_new_tokens tells the jobs apart in what admission hands the engine
    late = Claimed(64, b"1700000000002-0", entry(2, max_new=32).fields, 1)
    early = Claimed(128, b"1700000000001-5", entry(1, lane=128, max_new=33).fields, 1)
    earliest = Claimed(64, b"1700000000001-0", entry(3, max_new=34).fields, 1)
    d.accept([late, early, earliest], 0.0, 0.0)
    requests = d.admit(0.0)
    assert [r.max_new_tokens for r in requests] == [34, 33, 32]


def test_lane_by_lane_stays_the_order_of_padding_engines_and_can_be_chosen() -> None:
    assert not dispatcher().arrival_order
    d = in_flight_dispatcher(arrival_order=False)
    plan = d.reads.plan(0.0, {64: 500, 128: 700})
    assert plan is not None and len(plan.lanes) == 1


def test_a_small_read_ahead_reads_again_once_a_job_fits() -> None:
    d = dispatcher()  # read-ahead 900 tokens: a sixteenth is less than one job
    d.accept([entry(n) for n in range(1, 9)], 0.0, 100.0)  # 800 queued, room 100
    assert not d.reads.has_room()  # less than the cheapest estimate (128)
    d = dispatcher()
    d.accept([entry(n) for n in range(1, 8)], 0.0, 100.0)  # 700 queued, room 200
    assert d.reads.has_room()


def test_a_large_read_ahead_is_refilled_a_sixteenth_at_a_time() -> None:
    big = replace(CAPACITY, kv_cache_tokens=100_000)  # read-ahead 90,000 tokens
    d = Dispatcher(CONFIG, big, DispatchPolicy(), consumer="w1")
    assert d.queue.max_tokens == 90_000
    d.accept([entry(n) for n in range(1, 851)], 0.0, 100.0)  # 85,000 queued
    # Room for 50 jobs, but under 90,000 / 16 = 5,625 tokens: not worth a read yet.
    assert not d.reads.has_room()
    d = Dispatcher(CONFIG, big, DispatchPolicy(), consumer="w1")
    d.accept([entry(n) for n in range(1, 841)], 0.0, 100.0)  # 84,000 queued, room 6,000
    assert d.reads.has_room()
