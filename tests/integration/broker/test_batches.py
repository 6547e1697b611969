"""Batch counts kept by the scripts that end a job, against a real redis-server.

Jobs are claimed with XREADGROUP and settled with the same script calls a
worker makes (``scripts.complete`` / ``scripts.dead_letter``), so each count
is checked right after the one call that should move it.
"""

from __future__ import annotations

import time

import pytest
import redis

from fabric_worker.broker import scripts
from fabric_worker.broker.dlq import DeadLetters, iter_dead_letters
from fabric_worker.broker.namespace import init_namespace
from fabric_worker.broker.submit import BatchCancelledError
from fabric_worker.wire.batch_record import BatchCounts
from fabric_worker.wire.claims import Completion, DeadLetter
from fabric_worker.wire.entries import ResultEntry, decode_result, encode_result
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import GROUP, Keys
from fabric_worker.wire.replies import CompleteReply, DeadLetterReply
from producers import FabricClient, Job
from producers.waiting import WaitTimeout

pytestmark = pytest.mark.integration

LANES = (64, 128)
CONFIG = FleetConfig(lanes=LANES, vocab_size=1000, max_seq_len=256, backlog_cap_tokens=10**6)
RETENTION_S = 3600
MAX_NEW = 8


def short(job_id: str) -> Job:
    return Job(tokens=[1, 2, 3], max_new_tokens=MAX_NEW, id=job_id)  # lane 64


def long(job_id: str) -> Job:
    return Job(tokens=[1] * 100, max_new_tokens=MAX_NEW, id=job_id)  # lane 128


def client_for(redis_client: redis.Redis, keys: Keys) -> FabricClient:
    init_namespace(redis_client, keys, CONFIG)
    return FabricClient(redis_client, keys.namespace)


def claim(redis_client: redis.Redis, keys: Keys, lane: int) -> dict[str, bytes]:
    """Read every new entry of ``lane`` as worker ``w``: job id -> entry id."""
    reply = redis_client.xreadgroup(GROUP, "w", {keys.jobs(lane): ">"}, count=100)
    out = {}
    for _, entries in reply:
        for entry_id, fields in entries:
            out[fields[b"h"].split(b'"id":"')[1].split(b'"')[0].decode()] = entry_id
    return out


def complete(
    redis_client: redis.Redis, keys: Keys, lane: int, job_id: str, entry_id: bytes, batch: str
) -> CompleteReply | str:
    now = time.time()
    result = ResultEntry(job_id, [5], "stop", 1, "w", now, now, now, batch=batch)
    fields = encode_result(result)
    c = Completion(lane, entry_id, job_id, lane + MAX_NEW, fields["h"], fields["t"], batch)
    call = scripts.complete(keys, lane, [c], retention_s=RETENTION_S)
    raw = scripts.register(redis_client, "complete")(keys=call.keys, args=call.args)
    return scripts.complete_replies(raw)[0]


def dead_letter(
    redis_client: redis.Redis, keys: Keys, lane: int, job_id: str, entry_id: bytes, batch: str
) -> DeadLetterReply:
    d = DeadLetter(lane, entry_id, job_id, lane + MAX_NEW, "poison", 3, "boom", batch=batch)
    call = scripts.dead_letter(keys, d, retention_s=RETENTION_S, consumer="w", now_unix=time.time())
    raw = scripts.register(redis_client, "deadletter")(keys=call.keys, args=call.args)
    return scripts.dead_letter_reply(raw)


def next_ms(redis_client: redis.Redis) -> None:
    """Poll the server's clock into the next millisecond: entries written after
    this get a later id than those before, on every stream."""
    seconds, micros = redis_client.time()
    start = seconds * 1000 + micros // 1000
    while True:
        seconds, micros = redis_client.time()
        if seconds * 1000 + micros // 1000 > start:
            return


def counts(client: FabricClient, name: str) -> tuple[int, int, int, int]:
    c = client.batch(name)
    assert c is not None
    return c.num_total, c.num_done, c.num_dead, c.num_cancelled


def test_submit_counts_new_jobs_only_and_a_duplicate_stays_in_its_first_batch(
    redis_client: redis.Redis, keys: Keys
) -> None:
    client = client_for(redis_client, keys)
    first = client.submit([short("a"), long("b")], batch="first")
    assert (first.num_submitted, first.batch) == (2, "first")
    again = client.submit([long("b"), short("c")], batch="second")
    assert (again.num_submitted, again.num_duplicates) == (1, 1)
    assert counts(client, "first") == (2, 0, 0, 0)
    assert counts(client, "second") == (1, 0, 0, 0)
    # b's one entry still says its first batch.
    [(_, fields)] = redis_client.xrange(keys.jobs(128))
    assert b'"batch":"first"' in fields[b"h"]
    assert client.batch("never") is None
    assert [b.name for b in client.batches()] == ["first", "second"]


def test_completion_counts_done_once_and_finishes_the_batch_over_both_lanes(
    redis_client: redis.Redis, keys: Keys
) -> None:
    client = client_for(redis_client, keys)
    client.submit([short("a"), long("b")], batch="x")
    a, b = claim(redis_client, keys, 64)["a"], claim(redis_client, keys, 128)["b"]
    assert complete(redis_client, keys, 64, "a", a, "x") is CompleteReply.OK
    assert complete(redis_client, keys, 64, "a", a, "x") is CompleteReply.DUPLICATE
    status = client.batch("x")
    assert status is not None
    assert (status.num_done, status.num_left, status.finished) == (1, 1, None)
    assert redis_client.ttl(keys.batch(128, "x")) == -1  # unfinished: kept
    assert complete(redis_client, keys, 128, "b", b, "x") is CompleteReply.OK
    status = client.batch("x")
    assert status is not None and status.is_finished
    assert status.finished is not None and status.created is not None
    assert status.finished >= status.created
    assert 0 < redis_client.ttl(keys.batch(64, "x")) <= RETENTION_S  # expires with retention


def test_dead_letter_counts_dead_and_replay_takes_it_back(
    redis_client: redis.Redis, keys: Keys
) -> None:
    client = client_for(redis_client, keys)
    client.submit([short("a")], batch="d")
    a = claim(redis_client, keys, 64)["a"]
    assert dead_letter(redis_client, keys, 64, "a", a, "d") is DeadLetterReply.DEAD
    # A second dead-lettering finds the job finished: nothing counted twice.
    assert dead_letter(redis_client, keys, 64, "a", a, "d") is DeadLetterReply.DONE
    assert counts(client, "d") == (1, 0, 1, 0)
    assert client.batch("d").is_finished  # type: ignore[union-attr]
    [letter] = iter_dead_letters(redis_client, keys, LANES)
    assert letter.batch == "d"
    DeadLetters(redis_client, keys).replay(letter)
    status = client.batch("d")
    assert status is not None
    assert (status.num_dead, status.num_left, status.finished) == (0, 1, None)
    assert redis_client.ttl(keys.batch(64, "d")) == -1
    again = claim(redis_client, keys, 64)["a"]
    assert complete(redis_client, keys, 64, "a", again, "d") is CompleteReply.OK
    assert counts(client, "d") == (1, 1, 0, 0)


def test_a_replay_into_a_later_batch_of_the_same_name_counts_the_job_in(
    redis_client: redis.Redis, keys: Keys
) -> None:
    """Dead letters outlive batch records: after the first "n" expired (its
    state too), a new "n" never counted the replayed job dead, so the replay
    counts it in as a new job instead of taking one off the dead."""
    client = client_for(redis_client, keys)
    client.submit([short("old")], batch="n")
    old = claim(redis_client, keys, 64)["old"]
    assert dead_letter(redis_client, keys, 64, "old", old, "n") is DeadLetterReply.DEAD
    redis_client.delete(keys.batch(64, "n"), keys.job(64, "old"))  # both past the retention
    next_ms(redis_client)
    client.submit([short("new")], batch="n")
    [letter] = iter_dead_letters(redis_client, keys, LANES)
    DeadLetters(redis_client, keys).replay(letter)
    assert counts(client, "n") == (2, 0, 0, 0)
    held = claim(redis_client, keys, 64)
    for job_id in ("new", "old"):
        assert complete(redis_client, keys, 64, job_id, held[job_id], "n") is CompleteReply.OK
    assert counts(client, "n") == (2, 2, 0, 0)
    assert client.batch("n").is_finished  # type: ignore[union-attr]


def test_cancel_racing_a_completion_settles_each_job_once_either_way(
    redis_client: redis.Redis, keys: Keys
) -> None:
    client = client_for(redis_client, keys)
    client.submit([short("early"), short("late")], batch="r")
    held = claim(redis_client, keys, 64)
    # Completed before the cancel: the cancel leaves it alone.
    assert complete(redis_client, keys, 64, "early", held["early"], "r") is CompleteReply.OK
    assert client.cancel_batch("r").num_cancelled == 1
    # Completed after the cancel (a worker that had not renewed yet): only acked.
    assert complete(redis_client, keys, 64, "late", held["late"], "r") is CompleteReply.DUPLICATE
    assert counts(client, "r") == (2, 1, 0, 1)
    assert client.cancel_batch("r").num_cancelled == 0  # nothing left: counts nothing twice
    assert counts(client, "r") == (2, 1, 0, 1)
    results = {
        decode_result(f).id: decode_result(f) for _, f in redis_client.xrange(keys.results(64))
    }
    assert results["early"].finish_reason == "stop"
    assert results["late"].finish_reason == "cancelled"
    assert results["late"].batch == "r"
    assert redis_client.xlen(keys.jobs(64)) == 0
    assert redis_client.xpending(keys.jobs(64), GROUP)["pending"] == 0
    assert int(redis_client.get(keys.backlog(64)) or 0) == 0
    assert client.result("late").state == "done"  # finished, its result says cancelled


def test_cancel_reports_entries_it_cannot_settle_and_leaves_them_to_a_worker(
    redis_client: redis.Redis, keys: Keys
) -> None:
    client = client_for(redis_client, keys)
    client.submit([short("good"), short("bad")], batch="m")
    # "bad" is queued, but its entry's header went wrong: it gives no cost.
    [(bad_entry, _)] = [
        (e, f) for e, f in redis_client.xrange(keys.jobs(64)) if b'"id":"bad"' in f[b"h"]
    ]
    redis_client.xdel(keys.jobs(64), bad_entry)
    header = b'{"id":"bad","batch":"m","max_new_tokens":"eight"}'
    bad_entry = redis_client.xadd(keys.jobs(64), {"h": header, "t": b""})
    redis_client.set(keys.job(64, "bad"), b"queued " + bad_entry + b" n")
    # A hand-written entry of the batch with no id at all.
    stray = redis_client.xadd(keys.jobs(64), {"h": b'{"batch":"m"}', "t": b""})
    outcome = client.cancel_batch("m")
    assert outcome.num_cancelled == 1
    assert {e.entry_id: (e.lane, e.reason) for e in outcome.malformed} == {
        bad_entry.decode(): (64, "its header has no valid max_new_tokens"),
        stray.decode(): (64, "its header has no job id"),
    }
    # Nothing of "bad" was touched: still queued, its cost still held.
    assert redis_client.get(keys.job(64, "bad")) == b"queued " + bad_entry + b" n"
    assert int(redis_client.get(keys.backlog(64)) or 0) == 64 + MAX_NEW
    assert counts(client, "m") == (2, 0, 0, 1)
    assert not client.batch("m").is_finished  # type: ignore[union-attr]
    # The worker that reads it dead-letters it: counted once, the batch ends.
    assert dead_letter(redis_client, keys, 64, "bad", bad_entry, "m") is DeadLetterReply.DEAD
    assert counts(client, "m") == (2, 0, 1, 1)
    assert client.batch("m").is_finished  # type: ignore[union-attr]
    again = client.cancel_batch("m")
    assert (again.num_cancelled, [e.entry_id for e in again.malformed]) == (0, [stray.decode()])


def test_a_cancelled_batch_refuses_new_jobs_in_every_lane(
    redis_client: redis.Redis, keys: Keys
) -> None:
    client = client_for(redis_client, keys)
    client.submit([short("a")], batch="c")
    assert client.cancel_batch("c").num_cancelled == 1
    # Lane 128 never had a job of the batch: it refuses one all the same.
    with pytest.raises(BatchCancelledError, match="batch c was cancelled"):
        client.submit([long("b")], batch="c")
    assert redis_client.xlen(keys.jobs(128)) == 0
    status = client.batch("c")
    assert status is not None
    assert (status.is_cancelled, status.num_total, status.num_cancelled, status.is_finished) == (
        True,
        1,
        1,
        True,
    )


def test_results_are_each_job_once_in_finish_order_with_dead_letters(
    redis_client: redis.Redis, keys: Keys
) -> None:
    client = client_for(redis_client, keys)
    client.submit([short("other")], batch="elsewhere")
    client.submit([short("a"), long("b"), short("c")], batch="res")
    short_lane, long_lane = claim(redis_client, keys, 64), claim(redis_client, keys, 128)
    # Finish order is Redis's clock, in milliseconds, merged over the streams.
    complete(redis_client, keys, 128, "b", long_lane["b"], "res")
    complete(redis_client, keys, 64, "other", short_lane["other"], "elsewhere")
    next_ms(redis_client)
    dead_letter(redis_client, keys, 64, "c", short_lane["c"], "res")
    next_ms(redis_client)
    complete(redis_client, keys, 64, "a", short_lane["a"], "res")
    complete(redis_client, keys, 64, "a", short_lane["a"], "res")  # a duplicate: no second line
    docs = client.batch_results("res")
    assert [(d["id"], d["state"]) for d in docs] == [("b", "done"), ("c", "dead"), ("a", "done")]
    assert docs[1]["reason"] == "poison" and docs[1]["error"] == "boom"
    assert client.batch_results("never") == []


def test_delete_is_refused_while_jobs_run_and_removes_a_finished_batch(
    redis_client: redis.Redis, keys: Keys
) -> None:
    client = client_for(redis_client, keys)
    client.submit([short("a")], batch="del")
    with pytest.raises(ValueError, match="1 job\\(s\\) still queued or running"):
        client.delete_batch("del")
    a = claim(redis_client, keys, 64)["a"]
    complete(redis_client, keys, 64, "a", a, "del")
    assert client.delete_batch("del") is not None
    assert client.batch("del") is None
    assert client.batches() == []
    assert client.delete_batch("del") is None
    # A batch whose record expired is listed no more, and its name leaves the index.
    client.submit([short("e1"), long("e2")], batch="expiring")
    redis_client.delete(keys.batch(64, "expiring"))  # as its retention would
    assert [(b.name, b.num_total) for b in client.batches()] == [("expiring", 1)]
    assert redis_client.zrange(keys.batches(64), 0, -1) == []
    assert redis_client.zrange(keys.batches(128), 0, -1) == [b"expiring"]


def test_wait_returns_when_terminal_and_times_out_with_what_it_saw(
    redis_client: redis.Redis, keys: Keys
) -> None:
    client = client_for(redis_client, keys)
    client.submit([short("a"), short("b")], batch="w")
    held = claim(redis_client, keys, 64)
    with pytest.raises(WaitTimeout) as timed_out:
        client.wait(batch="w", timeout_s=0.2)
    assert isinstance(timed_out.value.last, BatchCounts) and timed_out.value.last.num_left == 2
    with pytest.raises(WaitTimeout):
        client.wait(["a", "b"], timeout_s=0.1)
    complete(redis_client, keys, 64, "a", held["a"], "w")
    complete(redis_client, keys, 64, "b", held["b"], "w")
    assert client.wait(batch="w", timeout_s=5).num_done == 2
    found = client.wait(["a", "b", "never"], timeout_s=5)
    assert [f.state for f in found] == ["done", "done", "unknown"]
    assert found[0].result is not None and found[0].result.tokens == [5]
    with pytest.raises(LookupError, match="not known"):
        client.wait(batch="nobody", timeout_s=1)


def test_one_complete_call_counts_each_batch_of_its_jobs(
    redis_client: redis.Redis, keys: Keys
) -> None:
    client = client_for(redis_client, keys)
    client.submit([short("a1"), short("a2")], batch="A")
    client.submit([short("b1")], batch="B")
    client.submit([short("none")])
    held = claim(redis_client, keys, 64)
    now = time.time()
    batches = {"a1": "A", "a2": "A", "b1": "B", "none": None}
    completions = []
    for job_id, batch in [*batches.items(), ("a1", "A")]:  # a1 twice: a duplicate
        fields = encode_result(ResultEntry(job_id, [5], "stop", 1, "w", now, now, now, batch=batch))
        completions.append(
            Completion(64, held[job_id], job_id, 64 + MAX_NEW, fields["h"], fields["t"], batch)
        )
    call = scripts.complete(keys, 64, completions, retention_s=RETENTION_S)
    raw = scripts.register(redis_client, "complete")(keys=call.keys, args=call.args)
    assert [str(r) for r in scripts.complete_replies(raw)] == ["ok"] * 4 + ["duplicate"]
    assert counts(client, "A") == (2, 2, 0, 0)
    assert counts(client, "B") == (1, 1, 0, 0)
    assert client.batch("A").is_finished  # type: ignore[union-attr]
