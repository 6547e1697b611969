"""The server-side Lua scripts against a real redis-server (not fakeredis).

Mostly through the async ``Broker``, as the worker calls them; raw script calls
for edge cases. Idle times are set with ``XCLAIM ... IDLE ... JUSTID`` instead
of sleeping, so no test waits on the clock.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio

from fabric_worker.broker import scripts
from fabric_worker.broker.namespace import init_namespace
from fabric_worker.broker.scripts import register
from fabric_worker.broker.streams import Broker
from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.wire.claims import Completion, DeadLetter, HandBack, Retry
from fabric_worker.wire.entries import JobEntry, ResultEntry, encode_job, encode_result
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import GROUP, Keys
from producers import FabricClient, Job
from tests.integration.harness import result_named_by_state

pytestmark = pytest.mark.integration

T = TypeVar("T")
LANE = 64
CONFIG = FleetConfig(lanes=(LANE, 128), vocab_size=1000, max_seq_len=256, backlog_cap_tokens=10**6)
RETENTION_S = 3600
LEASE_MS = 30_000
MAX_NEW = 8
COST = LANE + MAX_NEW  # padded cost of every job submitted here
LONG_IDLE_MS = 10 * LEASE_MS


def submit(client: redis.Redis, keys: Keys, *ids: str) -> list[bytes]:
    """Submit one small job per id to lane 64 (with the producer); their entry ids."""
    init_namespace(client, keys, CONFIG)
    jobs = [Job(tokens=[0, 7, 999], max_new_tokens=MAX_NEW, id=job_id) for job_id in ids]
    assert FabricClient(client, keys.namespace).submit(jobs).num_submitted == len(ids)
    return [client.get(keys.job(LANE, job_id)).split()[1] for job_id in ids]


def with_brokers(
    server: RedisServer, keys: Keys, body: Callable[..., Awaitable[T]], *consumers: str
) -> T:
    """Run ``body(broker, ...)`` with one Broker per consumer name, sharing a client."""

    async def main() -> T:
        client = redis.asyncio.Redis.from_url(server.url)
        try:
            return await body(
                *(Broker(client, keys, c, retention_s=RETENTION_S) for c in consumers)
            )
        finally:
            await client.aclose()

    return asyncio.run(main())


def completion(job_id: str, entry_id: bytes, worker: str) -> Completion:
    now = time.time()
    fields = encode_result(ResultEntry(job_id, [1, 2], "stop", 1, worker, now, now, now))
    return Completion(LANE, entry_id, job_id, COST, fields["h"], fields["t"])


def pending(client: redis.Redis, keys: Keys, entry_id: bytes) -> dict[str, Any]:
    """XPENDING of one entry (consumer, time_since_delivered, times_delivered); {} if none."""
    info = client.xpending_range(keys.jobs(LANE), GROUP, entry_id, entry_id, 1)
    return info[0] if info else {}


def raw_job(job_id: str) -> dict[str, bytes]:
    """A well-formed job entry, for a raw XADD that bypasses the submit script."""
    return encode_job(JobEntry(job_id, array("I", [1, 2, 3]), MAX_NEW))


def make_idle(client: redis.Redis, keys: Keys, owner: str, *ids: bytes, **extra: Any) -> None:
    """Make ``owner``'s entries look idle for LONG_IDLE_MS (no delivery counted)."""
    client.xclaim(
        keys.jobs(LANE), GROUP, owner, 0, list(ids), idle=LONG_IDLE_MS, justid=True, **extra
    )


def backlog(client: redis.Redis, keys: Keys) -> int | None:
    value = client.get(keys.backlog(LANE))
    return None if value is None else int(value)


# --- complete -------------------------------------------------------------------------


def test_complete_writes_once_then_reports_duplicate(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys
) -> None:
    """One result, state done with the retention TTL, entry acked and deleted, backlog
    released by the cost; a second completion writes nothing and releases nothing."""
    j, k = submit(redis_client, keys, "j", "k")
    c = completion("j", j, "A")

    async def body(a: Broker) -> tuple[list[str], list[str]]:
        await a.read([LANE], 10, None)
        first = await a.complete([c])
        return first, await a.complete([c])

    assert with_brokers(redis_server, keys, body, "A") == (["ok"], ["duplicate"])
    [(_, fields)] = redis_client.xrange(keys.results(LANE))
    assert (fields[b"h"], fields[b"t"]) == (c.header, c.tokens)
    assert result_named_by_state(redis_client, keys, LANE, "j") == "j"
    assert 0 < redis_client.ttl(keys.job(LANE, "j")) <= RETENTION_S
    assert [eid for eid, _ in redis_client.xrange(keys.jobs(LANE))] == [k]
    assert pending(redis_client, keys, j) == {}
    assert pending(redis_client, keys, k) != {}  # the other job is untouched
    assert backlog(redis_client, keys) == COST


def test_a_bad_job_in_the_middle_of_a_batch_fails_alone(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys
) -> None:
    """One script call for three jobs whose middle one cannot be completed (its
    state key holds a hash): the other two are written once each, the bad one
    writes nothing and stays pending; the broker raises; a retry of the whole
    batch writes nothing twice."""
    a, b, c = submit(redis_client, keys, "a", "b", "c")
    redis_client.delete(keys.job(LANE, "b"))
    redis_client.hset(keys.job(LANE, "b"), "not", "a string")
    batch = [completion("a", a, "A"), completion("b", b, "A"), completion("c", c, "A")]
    script = register(redis_client, "complete")
    call = scripts.complete(keys, LANE, batch, retention_s=RETENTION_S)

    async def body(w: Broker) -> str:
        await w.read([LANE], 10, None)
        with pytest.raises(redis.ResponseError, match="1 job") as raised:
            await w.complete(batch)
        return str(raised.value)

    assert "'b'" in with_brokers(redis_server, keys, body, "A")
    results = [f[b"h"] for _, f in redis_client.xrange(keys.results(LANE))]
    assert results == [batch[0].header, batch[2].header]
    assert [result_named_by_state(redis_client, keys, LANE, j) for j in "ac"] == ["a", "c"]
    assert [eid for eid, _ in redis_client.xrange(keys.jobs(LANE))] == [b]
    assert pending(redis_client, keys, b) != {}
    assert backlog(redis_client, keys) == COST  # only the two written released theirs
    replies = script(keys=call.keys, args=call.args)
    assert replies[0] == replies[2] == b"duplicate"
    assert replies[1].startswith(b"error WRONGTYPE")
    assert redis_client.xlen(keys.results(LANE)) == 2


@pytest.mark.parametrize(
    ("entry_id", "cost"), [(b"not-an-id", COST), (b"1-1", -1)], ids=["entry id", "cost"]
)
def test_a_job_with_bad_arguments_writes_nothing_and_the_rest_complete(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys, entry_id: bytes, cost: int
) -> None:
    """Arguments are checked before any write of their job: a malformed entry
    id or cost would fail XACK or DECRBY after the result was written."""
    j, k = submit(redis_client, keys, "j", "k")
    bad = Completion(LANE, entry_id, "j", cost, b"h", b"t")
    call = scripts.complete(keys, LANE, [bad, completion("k", k, "A")], retention_s=RETENTION_S)
    redis_client.xreadgroup(GROUP, "A", {keys.jobs(LANE): ">"})
    replies = register(redis_client, "complete")(keys=call.keys, args=call.args)
    assert replies[0].startswith(b"error ") and replies[1] == b"ok"
    assert redis_client.xlen(keys.results(LANE)) == 1
    assert redis_client.get(keys.job(LANE, "j")).startswith(b"queued ")
    assert [eid for eid, _ in redis_client.xrange(keys.jobs(LANE))] == [j]


def test_a_batch_takes_only_completions_of_its_own_lane(keys: Keys) -> None:
    other = Completion(128, b"1-1", "x", 1, b"h", b"t")
    with pytest.raises(ValueError, match="lane 128"):
        scripts.complete(keys, LANE, [other], retention_s=RETENTION_S)


@pytest.mark.parametrize("first", ["owner", "reclaimer"])
def test_slow_owner_and_reclaimer_produce_one_result(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys, first: str
) -> None:
    """A finishes after its entry was reclaimed by B (or before B): whoever completes
    first writes the only result; the other gets "duplicate"."""
    [j] = submit(redis_client, keys, "j")

    async def body(a: Broker, b: Broker) -> list[str]:
        await a.read([LANE], 10, None)
        make_idle(redis_client, keys, "A", j)
        [taken] = await b.reclaim(LANE, LEASE_MS)
        assert (taken.entry_id, taken.deliveries) == (j, 2)
        assert pending(redis_client, keys, j)["consumer"] == b"B"
        order = [a, b] if first == "owner" else [b, a]
        return [(await w.complete([completion("j", j, w.consumer)]))[0] for w in order]

    assert with_brokers(redis_server, keys, body, "A", "B") == ["ok", "duplicate"]
    [(_, fields)] = redis_client.xrange(keys.results(LANE))
    winner = "A" if first == "owner" else "B"
    assert f'"worker":"{winner}"'.encode() in fields[b"h"]
    assert redis_client.xlen(keys.jobs(LANE)) == 0
    assert redis_client.xpending(keys.jobs(LANE), GROUP)["pending"] == 0
    assert backlog(redis_client, keys) == 0


def test_complete_of_hand_written_entry_leaves_backlog_alone(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys
) -> None:
    """An entry XADDed by hand (no job-state key) was never counted in the backlog, so
    completing it must not decrement the backlog of the jobs that were."""
    submit(redis_client, keys, "real")
    raw_id = redis_client.xadd(keys.jobs(LANE), raw_job("raw"))

    async def body(a: Broker) -> list[str]:
        claimed = await a.read([LANE], 10, None)
        assert raw_id in [c.entry_id for c in claimed]
        return await a.complete([completion("raw", raw_id, "A")])

    assert with_brokers(redis_server, keys, body, "A") == ["ok"]
    assert backlog(redis_client, keys) == COST  # the real job's cost only
    assert redis_client.xlen(keys.results(LANE)) == 1
    assert result_named_by_state(redis_client, keys, LANE, "raw") == "raw"
    assert pending(redis_client, keys, raw_id) == {}


# --- deadletter -----------------------------------------------------------------------


def test_deadletter_moves_the_entry_byte_for_byte(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys
) -> None:
    """The dlq entry carries the original h and t unchanged plus reason, deliveries,
    error, worker, entry and failed_at; state dead; acked, deleted, backlog released."""
    j, k = submit(redis_client, keys, "j", "k")
    [(_, original)] = redis_client.xrange(keys.jobs(LANE), j, j)

    async def body(a: Broker) -> str:
        await a.read([LANE], 10, None)
        [reply] = await a.dead_letter([DeadLetter(LANE, j, "j", COST, "bad", 3, "boom")])
        return reply

    before = time.time()
    assert with_brokers(redis_server, keys, body, "A") == "dead"
    [(_, dead)] = redis_client.xrange(keys.dlq(LANE))
    assert abs(float(dead.pop(b"failed_at")) - before) < 60
    assert dead == {
        b"h": original[b"h"],
        b"t": original[b"t"],
        b"reason": b"bad",
        b"deliveries": b"3",
        b"error": b"boom",
        b"worker": b"A",
        b"entry": j,
    }
    assert redis_client.get(keys.job(LANE, "j")) == b"dead"
    assert 0 < redis_client.ttl(keys.job(LANE, "j")) <= RETENTION_S
    assert [eid for eid, _ in redis_client.xrange(keys.jobs(LANE))] == [k]
    assert pending(redis_client, keys, j) == {}
    assert backlog(redis_client, keys) == COST


def test_deadletter_of_done_or_missing_entry_writes_nothing(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys
) -> None:
    """ "done" for a job already completed (no dlq entry, backlog not released twice);
    "gone" for an entry deleted while pending, which it still acks."""
    j, k = submit(redis_client, keys, "j", "k")

    async def body(a: Broker) -> tuple[str, str]:
        await a.read([LANE], 10, None)
        assert await a.complete([completion("j", j, "A")]) == ["ok"]
        [done] = await a.dead_letter([DeadLetter(LANE, j, "j", COST, "r", 1)])
        redis_client.xdel(keys.jobs(LANE), k)
        [gone] = await a.dead_letter([DeadLetter(LANE, k, None, 0, "r", 1)])
        return done, gone

    assert with_brokers(redis_server, keys, body, "A") == ("done", "gone")
    assert redis_client.xlen(keys.dlq(LANE)) == 0
    assert result_named_by_state(redis_client, keys, LANE, "j") == "j"
    assert redis_client.xpending(keys.jobs(LANE), GROUP)["pending"] == 0
    assert backlog(redis_client, keys) == COST  # only j's cost was released


def test_deadletter_of_entries_the_backlog_never_counted(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys
) -> None:
    """A raw entry with arbitrary fields goes to the dlq with empty h and t (own-key flag
    0: the backlog key in the state slot is neither overwritten nor decremented); a
    hand-written job with an id but no state key is marked dead, backlog untouched."""
    submit(redis_client, keys, "real")
    junk = redis_client.xadd(keys.jobs(LANE), {"x": "1", "junk": b"\xff\x00"})
    raw = redis_client.xadd(keys.jobs(LANE), raw_job("raw"))

    async def body(a: Broker) -> list[str]:
        await a.read([LANE], 10, None)
        return [
            (await a.dead_letter([DeadLetter(LANE, eid, job_id, COST, "undecodable", 1)]))[0]
            for eid, job_id in [(junk, None), (raw, "raw")]
        ]

    assert with_brokers(redis_server, keys, body, "A") == ["dead", "dead"]
    [(_, dead), _] = redis_client.xrange(keys.dlq(LANE))
    assert (dead[b"h"], dead[b"t"], dead[b"entry"]) == (b"", b"", junk)
    assert dead[b"reason"] == b"undecodable"
    assert backlog(redis_client, keys) == COST
    assert redis_client.get(keys.job(LANE, "raw")) == b"dead"
    assert redis_client.xlen(keys.jobs(LANE)) == 1  # only "real" is left
    assert redis_client.xpending(keys.jobs(LANE), GROUP)["pending"] == 1


# --- renew ----------------------------------------------------------------------------


def test_renew_is_an_owner_checked_heartbeat(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys
) -> None:
    """Own entries get their idle time reset without a delivery counted; an entry now
    owned by B and one no longer pending come back as lost, and B keeps its entry."""
    mine, taken, finished = submit(redis_client, keys, "mine", "taken", "finished")

    async def body(a: Broker) -> list[bytes]:
        await a.read([LANE], 10, None)
        make_idle(redis_client, keys, "A", mine, taken, finished)
        redis_client.xclaim(keys.jobs(LANE), GROUP, "B", 0, [taken], justid=True)
        redis_client.xack(keys.jobs(LANE), GROUP, finished)
        assert pending(redis_client, keys, mine)["time_since_delivered"] >= LONG_IDLE_MS
        return await a.renew(LANE, [mine, taken, finished])

    assert with_brokers(redis_server, keys, body, "A") == [taken, finished]
    renewed = pending(redis_client, keys, mine)
    assert renewed["consumer"] == b"A"
    assert renewed["time_since_delivered"] < LEASE_MS
    assert renewed["times_delivered"] == 1
    assert pending(redis_client, keys, taken)["consumer"] == b"B"
    assert pending(redis_client, keys, finished) == {}


# --- requeue --------------------------------------------------------------------------


def test_requeue_hands_an_unstarted_entry_to_the_tail(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys
) -> None:
    """A copy with the same fields goes to the tail, B reads it at once with ">", the
    original is acked and deleted, and the state names the copy with the same nonce."""
    j, k = submit(redis_client, keys, "j", "k")
    [(_, original)] = redis_client.xrange(keys.jobs(LANE), j, j)
    nonce = redis_client.get(keys.job(LANE, "j")).split()[2]

    async def body(a: Broker, b: Broker) -> list[tuple[bytes, dict[bytes, bytes], int]]:
        assert [c.entry_id for c in await a.read([LANE], 1, None)] == [j]
        assert await a.requeue([HandBack(LANE, j, "j")]) == [True]
        return [(c.entry_id, c.fields, c.deliveries) for c in await b.read([LANE], 10, None)]

    read_by_b = with_brokers(redis_server, keys, body, "A", "B")
    [(_, state_id, state_nonce)] = [redis_client.get(keys.job(LANE, "j")).split()]
    assert state_nonce == nonce and state_id != j
    assert read_by_b[0][0] == k
    assert read_by_b[1] == (state_id, original, 1)
    assert [eid for eid, _ in redis_client.xrange(keys.jobs(LANE))] == [k, state_id]
    assert pending(redis_client, keys, j) == {}
    assert pending(redis_client, keys, state_id)["consumer"] == b"B"
    assert backlog(redis_client, keys) == 2 * COST


def test_requeue_leaves_entries_that_are_not_ours_alone(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys
) -> None:
    """An entry B took over, or one no longer pending, is not copied, acked or
    deleted, and its state key is unchanged; requeue reports False."""
    j, k = submit(redis_client, keys, "j", "k")
    state = redis_client.get(keys.job(LANE, "j"))

    async def body(a: Broker) -> tuple[bool, bool]:
        await a.read([LANE], 10, None)
        redis_client.xclaim(keys.jobs(LANE), GROUP, "B", 0, [j], justid=True)
        redis_client.xack(keys.jobs(LANE), GROUP, k)
        return tuple(await a.requeue([HandBack(LANE, j, "j"), HandBack(LANE, k, "k")]))

    assert with_brokers(redis_server, keys, body, "A") == (False, False)
    assert [eid for eid, _ in redis_client.xrange(keys.jobs(LANE))] == [j, k]
    assert pending(redis_client, keys, j)["consumer"] == b"B"
    assert redis_client.get(keys.job(LANE, "j")) == state


def test_requeue_without_own_key_does_not_touch_the_backlog(
    redis_client: redis.Redis, keys: Keys
) -> None:
    """Raw call with own-key flag 0 (the backlog key in the state slot): the entry is
    requeued and the backlog key keeps its value."""
    submit(redis_client, keys, "real")
    raw = redis_client.xadd(keys.jobs(LANE), {"h": "x", "t": "y"})
    redis_client.xreadgroup(GROUP, "A", {keys.jobs(LANE): ">"})
    requeue = register(redis_client, "requeue")
    new_id = requeue(keys=[keys.jobs(LANE), keys.backlog(LANE)], args=[GROUP, "A", raw, "0"])
    assert new_id and new_id != raw
    assert redis_client.xrange(keys.jobs(LANE), new_id, new_id)[0][1] == {b"h": b"x", b"t": b"y"}
    assert backlog(redis_client, keys) == COST


# --- retry and reclaim ----------------------------------------------------------------


def test_retry_makes_the_entry_reclaimable_at_once(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys
) -> None:
    """retry sets the idle time past the lease without counting a delivery; B's reclaim
    takes it at once and reports deliveries = 2; A can no longer retry it."""
    [j] = submit(redis_client, keys, "j")

    async def body(a: Broker, b: Broker) -> None:
        await a.read([LANE], 10, None)
        assert await b.reclaim(LANE, LEASE_MS) == []  # not idle yet
        assert await a.retry_later([Retry(LANE, j, 2 * LEASE_MS)]) == [True]
        info = pending(redis_client, keys, j)
        assert (info["consumer"], info["times_delivered"]) == (b"A", 1)
        assert info["time_since_delivered"] >= 2 * LEASE_MS
        [taken] = await b.reclaim(LANE, LEASE_MS)
        assert (taken.entry_id, taken.deliveries) == (j, 2)
        assert taken.fields == redis_client.xrange(keys.jobs(LANE), j, j)[0][1]
        assert await a.retry_later([Retry(LANE, j, 2 * LEASE_MS)]) == [False]

    with_brokers(redis_server, keys, body, "A", "B")
    info = pending(redis_client, keys, j)
    assert (info["consumer"], info["times_delivered"]) == (b"B", 2)
    assert info["time_since_delivered"] < LEASE_MS


def test_reclaim_takes_at_most_count_and_resumes_on_the_next_call(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys
) -> None:
    """With 250 idle entries and count=100, each reclaim takes at most 100 (what the
    worker has room for: more would be handed straight back, losing the delivery
    count); repeated calls take them all, each with its own delivery count plus this
    delivery."""
    ids = submit(redis_client, keys, *(f"j{i}" for i in range(250)))

    async def body(a: Broker, b: Broker) -> tuple[list[int], dict[bytes, int]]:
        assert len(await a.read([LANE], 250, None)) == 250
        for extra in range(3):  # earlier deliveries: 1, 2 or 3
            make_idle(redis_client, keys, "A", *ids[extra::3], retrycount=1 + extra)
        sizes: list[int] = []
        taken: dict[bytes, int] = {}
        while batch := await b.reclaim(LANE, LEASE_MS, count=100):
            assert all(c.fields for c in batch)
            sizes.append(len(batch))
            taken.update((c.entry_id, c.deliveries) for c in batch)
        return sizes, taken

    sizes, taken = with_brokers(redis_server, keys, body, "A", "B")
    assert sizes == [100, 100, 50]
    assert taken == {eid: 2 + i % 3 for i, eid in enumerate(ids)}
    consumers = redis_client.xpending(keys.jobs(LANE), GROUP)["consumers"]
    assert consumers == [{"name": b"B", "pending": 250}]


# --- submit ---------------------------------------------------------------------------


def test_submit_stops_at_the_first_job_over_the_cap(redis_client: redis.Redis, keys: Keys) -> None:
    """A duplicate is reported and costs nothing; the first job over the cap ends the
    batch (a later job that would fit is not handled); backlog = accepted costs."""
    script = register(redis_client, "submit")
    names = ["a", "b", "c", "d"]
    costs = [COST, COST, 100, 10]
    fields = [raw_job(n) for n in names]

    def call(jobs: list[int], cap: int, nonce: str) -> bytes:
        batch = [(names[i], costs[i], fields[i]["h"], fields[i]["t"]) for i in jobs]
        c = scripts.submit(keys, LANE, batch, cap=cap, nonce=nonce)
        return script(keys=c.keys, args=c.args)  # type: ignore[no-any-return]

    assert call([0], 200, "n1") == b"n"
    assert call([0], 200, "n1") == b"o"  # the same call again: its own earlier write
    assert call([0, 1, 2, 3], 200, "n2") == b"dn"
    assert backlog(redis_client, keys) == 2 * COST
    [(a_id, _), (b_id, _)] = redis_client.xrange(keys.jobs(LANE))
    assert redis_client.get(keys.job(LANE, "a")) == b"queued " + a_id + b" n1"
    assert redis_client.get(keys.job(LANE, "b")) == b"queued " + b_id + b" n2"
    assert redis_client.ttl(keys.job(LANE, "b")) == -1  # no expiry while queued
    assert redis_client.exists(keys.job(LANE, "c"), keys.job(LANE, "d")) == 0


# --- entries that carry someone else's id ---------------------------------------------


def test_a_second_entry_for_a_finished_id_is_deleted_without_a_result(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys
) -> None:
    """A stray entry for a job already done (written by hand, or left by a restore)
    completes as a duplicate: no second result, and it leaves the stream so burst
    workers can see the lane empty."""
    [j] = submit(redis_client, keys, "j")
    stray = redis_client.xadd(keys.jobs(LANE), raw_job("j"))  # type: ignore[arg-type]

    async def body(a: Broker) -> list[str]:
        await a.read([LANE], 10, None)
        first = await a.complete([completion("j", j, "A")])
        return first + await a.complete([completion("j", stray, "A")])

    assert with_brokers(redis_server, keys, body, "A") == ["ok", "duplicate"]
    assert redis_client.xlen(keys.results(LANE)) == 1
    assert redis_client.xlen(keys.jobs(LANE)) == 0
    assert redis_client.xpending(keys.jobs(LANE), GROUP)["pending"] == 0


def test_dead_lettering_a_forged_entry_leaves_the_real_job_alone(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys
) -> None:
    """An entry whose header names a live job's id (forged or stale) goes to the dead
    letters alone: the real job stays queued, keeps its backlog, and completes."""
    [real] = submit(redis_client, keys, "j")
    forged = redis_client.xadd(keys.jobs(LANE), raw_job("j"))  # type: ignore[arg-type]

    async def body(a: Broker) -> tuple[str, list[str]]:
        await a.read([LANE], 10, None)
        [moved] = await a.dead_letter([DeadLetter(LANE, forged, "j", COST, "bad", 1)])
        return moved, await a.complete([completion("j", real, "A")])

    assert with_brokers(redis_server, keys, body, "A") == ("dead", ["ok"])
    assert result_named_by_state(redis_client, keys, LANE, "j") == "j"
    assert redis_client.xlen(keys.dlq(LANE)) == 1
    assert backlog(redis_client, keys) == 0  # released once, by the real completion


def test_own_pending_finds_entries_whose_read_reply_was_lost(
    redis_server: RedisServer, redis_client: redis.Redis, keys: Keys
) -> None:
    """Entries the server delivered to A but A never saw (the reply was lost in an
    outage) are found under A's own name, with fields and delivery count 1, without
    counting another delivery; B's entries are not A's."""
    ids = submit(redis_client, keys, "j", "k", "l")
    redis_client.xreadgroup(GROUP, "A", {keys.jobs(LANE): ">"}, count=2)  # reply "lost"
    redis_client.xreadgroup(GROUP, "B", {keys.jobs(LANE): ">"}, count=1)

    async def body(a: Broker) -> list[tuple[bytes, int, bool]]:
        return [(c.entry_id, c.deliveries, bool(c.fields)) for c in await a.own_pending(LANE)]

    assert with_brokers(redis_server, keys, body, "A") == [(ids[0], 1, True), (ids[1], 1, True)]
    assert pending(redis_client, keys, ids[0])["times_delivered"] == 1
