"""The hf engine's join decision and row bookkeeping: pure, no torch."""

from __future__ import annotations

from engines.contract import Capacity, EngineRequest, FinishReason
from engines.hf.scheduler import Row, Scheduler, cache_len_needed

CAPACITY = Capacity(
    max_batch_size=4, max_num_tokens=64, kv_cache_tokens=512, kv_block_tokens=16, max_seq_len=256
)


def req(
    rid: int, length: int, max_new: int = 4, lane: int | None = 64, **kw: object
) -> EngineRequest:
    return EngineRequest(rid, list(range(1, length + 1)), max_new, pad_to=lane, **kw)  # type: ignore[arg-type]


def ids(requests: list[EngineRequest]) -> list[int]:
    return [r.request_id for r in requests]


def test_row_counts_its_cache_and_remainder() -> None:
    row = Row(req(1, 10, max_new=5), [7])
    assert (row.num_cached, row.num_remaining, row.finish_reason()) == (10, 4, None)
    row.tokens += [8, 9, 10, 11]
    assert (row.num_cached, row.num_remaining) == (14, 0)
    assert row.finish_reason() is FinishReason.LENGTH


def test_end_id_stops_before_length_and_is_kept() -> None:
    row = Row(req(1, 3, max_new=2, end_id=9), [5, 9])
    assert row.finish_reason() is FinishReason.STOP
    assert row.output(FinishReason.STOP).tokens == [5, 9]
    assert Row(req(2, 3, end_id=9), [5]).finish_reason() is None


def test_cache_len_is_the_longest_row() -> None:
    rows = [Row(req(1, 10), [1, 2]), Row(req(2, 3), [1])]
    assert cache_len_needed(rows) == 11
    assert cache_len_needed([]) == 0


def test_a_group_is_one_lane_in_arrival_order() -> None:
    scheduler = Scheduler(CAPACITY)
    for request in [req(1, 5, lane=64), req(2, 100, lane=128), req(3, 7, lane=64)]:
        scheduler.add(request)
    assert ids(scheduler.plan_join([], 0)) == [1, 3]
    assert ids(scheduler.plan_join([], 0)) == [2]
    assert scheduler.plan_join([], 0) == []
    assert scheduler.num_waiting == 0


def test_batch_size_bounds_the_join() -> None:
    scheduler = Scheduler(CAPACITY)
    for i in range(6):
        scheduler.add(req(i, 4))
    running = [Row(req(90, 4), [1])]
    assert ids(scheduler.plan_join(running, 4)) == [0, 1, 2]
    full = running + [Row(req(91 + i, 4), [1]) for i in range(3)]
    assert scheduler.plan_join(full, 4) == []
    assert scheduler.num_waiting == 3


def test_step_tokens_bound_the_group_but_one_prompt_always_fits() -> None:
    scheduler = Scheduler(CAPACITY)  # max_num_tokens 64
    scheduler.add(req(1, 30, max_new=1))
    scheduler.add(req(2, 30, max_new=1))
    scheduler.add(req(3, 30, max_new=1))
    assert ids(scheduler.plan_join([], 0)) == [1, 2]  # 3 x 30 > 64
    scheduler.add(req(4, 100, max_new=1, lane=128))
    assert ids(scheduler.plan_join([], 0)) == [3]
    assert ids(scheduler.plan_join([], 0)) == [4]  # alone, over max_num_tokens


def test_kv_bound_counts_padding_and_what_rows_will_add() -> None:
    scheduler = Scheduler(CAPACITY)  # 512 KV tokens
    running = [Row(req(90, 100, max_new=101), [1])]  # 100 cached, 100 to go
    # joining one row of 40 tokens and 4 new: 2 rows x (100 + 100) = 400 <= 512
    scheduler.add(req(1, 40))
    # a second: 3 rows x 200 = 600 > 512
    scheduler.add(req(2, 40))
    assert ids(scheduler.plan_join(running, 100)) == [1]
    assert scheduler.plan_join([*running, Row(req(1, 40), [1])], 100) == []
    assert ids(scheduler.plan_join([], 0)) == [2]


def test_a_longer_prompt_pads_the_running_rows() -> None:
    scheduler = Scheduler(
        Capacity(
            max_batch_size=8,
            max_num_tokens=4096,
            kv_cache_tokens=600,
            kv_block_tokens=16,
            max_seq_len=256,
        )
    )
    running = [Row(req(90, 10, max_new=11), [1])]  # cache 10 columns, 10 to go
    scheduler.add(req(1, 200, max_new=90, lane=256))
    # 2 rows x (200 + 90) = 580 <= 600: the running row is padded to 200 columns
    assert ids(scheduler.plan_join(running, 10)) == [1]
    scheduler.add(req(2, 200, max_new=101, lane=256))
    assert scheduler.plan_join(running, 10) == []  # 2 x (200 + 101) = 602


def test_remove_takes_only_waiting_requests() -> None:
    scheduler = Scheduler(CAPACITY)
    scheduler.add(req(1, 3))
    scheduler.add(req(2, 3))
    removed = scheduler.remove(1)
    assert removed is not None and removed.request_id == 1
    assert scheduler.remove(1) is None
    assert ids(scheduler.plan_join([], 0)) == [2]
