"""The fault suite: each fault injected for real into worker processes on the
simulated engine against a real redis-server, and exactly once checked after.

Faults covered elsewhere, not repeated here:

- slow worker (SIGSTOP past the lease, SIGCONT): test_worker.py::
  test_stopped_worker_loses_its_lease_and_writes_no_duplicate
- poison job: test_worker.py::
  test_poison_and_malformed_entries_are_dead_lettered_and_the_rest_completes
- producer retry after a dropped reply: test_submit.py::
  test_retry_after_dropped_reply_enqueues_nothing_twice
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bench.chaos import run_chaos
from fabric_worker.broker.namespace import init_namespace
from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.wire.entries import (
    MAX_ENTRY_BYTES,
    MAX_HEADER_BYTES,
    ResultEntry,
    decode_result,
    is_valid_id,
    pack_tokens,
)
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import GROUP, Keys
from producers import FabricClient, Job
from tests.integration.harness import (
    WorkerProcess,
    num_pending,
    num_results,
    run_burst_worker,
    wait_until,
)
from tests.integration.worker.test_worker import LANES, VOCAB, assert_exactly_once, ragged_jobs

pytestmark = pytest.mark.integration


SetupFleet = Callable[..., redis.Redis]


@pytest.fixture
def setup_fleet() -> Iterator[SetupFleet]:
    """``setup_fleet(server, keys, **config)``: a namespace on ``server`` with the
    lanes and vocabulary of test_worker.py, and a client to it (closed after)."""
    clients: list[redis.Redis] = []

    def setup(server: RedisServer, keys: Keys, **config: Any) -> redis.Redis:
        client = redis.Redis.from_url(server.url)
        clients.append(client)
        fields = {"max_seq_len": 512, "backlog_cap_tokens": 10**9, **config}
        init_namespace(client, keys, FleetConfig(lanes=LANES, vocab_size=VOCAB, **fields))
        return client

    yield setup
    for client in clients:
        client.close()


def observed_at(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll ``predicate`` every 10 ms; the monotonic time it was first seen true."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic()


def results(client: redis.Redis, keys: Keys) -> list[tuple[float, ResultEntry]]:
    """Every result with the time it was written (its entry id, server clock, unix s)."""
    found = []
    for lane in LANES:
        for entry_id, fields in client.xrange(keys.results(lane)):
            found.append((entry_ms(entry_id) / 1000, decode_result(fields)))
    return found


def entry_ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-")[0])


def summary(worker: WorkerProcess) -> str:
    """The line a worker prints when it exits (not printed after SIGKILL)."""
    return next(line for line in worker.log.splitlines() if " exiting after " in line)


def catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a SIGTERM handler installed (Linux /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(
        next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16
    )
    return bool(caught >> (signal.SIGTERM - 1) & 1)


def held(client: redis.Redis, keys: Keys) -> dict[str, int]:
    """Entries pending per consumer, over every lane."""
    found: dict[str, int] = {}
    for lane in LANES:
        for consumer in client.xpending(keys.jobs(lane), GROUP)["consumers"]:
            name = consumer["name"].decode()
            found[name] = found.get(name, 0) + int(consumer["pending"])
    return found


def held_job_ids(client: redis.Redis, keys: Keys, consumer: str) -> set[str]:
    """The job ids of the entries pending on ``consumer`` (which is not running)."""
    found = set()
    for lane in LANES:
        stream = keys.jobs(lane)
        pending = client.xpending_range(stream, GROUP, "-", "+", 10_000, consumername=consumer)
        for info in pending:
            [(_, fields)] = client.xrange(stream, info["message_id"], info["message_id"])
            found.add(json.loads(fields[b"h"])["id"])
    return found


# --- 1. chaos ------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_chaos_sigkill_every_second_or_two_and_a_redis_restart_lose_and_double_nothing(
    tmp_path: Path,
) -> None:
    """5,000 jobs, three workers on the wall-clock simulator, a random worker
    SIGKILLed every 1 to 2 s and replaced, redis-server SIGKILLed once three
    quarters of the results are in and restarted from its AOF (appendfsync
    always) after longer than the lease. See bench/chaos.py."""
    report = run_chaos(5000, log_dir=tmp_path, timeout_s=170)
    printout = "\n".join(report.lines())
    assert report.violations() == [], printout
    assert report.elapsed_s < 180, printout
    # The faults really happened and really hit work in flight.
    assert report.num_redis_restarts == 1, printout
    assert report.num_kills >= 3, printout
    assert report.num_reclaimed > 0 and report.num_redelivered > 0, printout


# --- 3. Redis outage -----------------------------------------------------------------


@pytest.mark.timeout(180)
def test_redis_outage_within_the_budget_holds_in_flight_work_and_loses_nothing(
    own_redis_server: RedisServer, keys: Keys, tmp_path: Path, setup_fleet: SetupFleet
) -> None:
    # The lease outlasts the outage, as in production (30 s lease, outage budget
    # 30 s): whoever held an entry before the outage still holds it after.
    client = setup_fleet(own_redis_server, keys, lease_s=20.0)
    jobs = ragged_jobs(3000, seed=10)
    FabricClient(client, keys.namespace).submit(jobs)
    workers = [
        WorkerProcess(own_redis_server.url, keys.namespace, tmp_path, name=name)
        for name in ("a", "b")
    ]
    try:
        for worker in workers:
            worker.wait_started()
        wait_until(lambda: num_results(client, keys, LANES) >= 300, 60, "300 results")
        holders = held(client, keys)
        assert holders.get("a", 0) > 0 and holders.get("b", 0) > 0, holders
        stopped_at = time.time()
        own_redis_server.stop()
        time.sleep(10)  # the fault itself: ten seconds without Redis
        for worker in workers:
            assert worker.process.poll() is None, worker.log[-3000:]
        own_redis_server.start()
        restarted_at = time.time()
        wait_until(lambda: num_results(client, keys, LANES) == len(jobs), 120, "every result")
        for worker in workers:
            worker.process.send_signal(signal.SIGTERM)
        for worker in workers:
            assert worker.wait(60) == 0, worker.log[-3000:]
    finally:
        for worker in workers:
            worker.stop()
    assert_exactly_once(client, keys, jobs)
    written = results(client, keys)
    # Nothing was redelivered: no lease ran out, no entry was reclaimed...
    assert {result.deliveries for _, result in written} == {1}
    for worker in workers:
        assert "reclaimed 0, lease lost 0;" in summary(worker), summary(worker)
    # ...and work claimed before the outage was written after it, by its holder.
    across = [r for at, r in written if r.started_at < stopped_at and at > restarted_at]
    assert across, "no job was held across the outage"


@pytest.mark.timeout(120)
def test_redis_outage_past_the_budget_exits_4_within_5_s_and_leaves_work_pending(
    own_redis_server: RedisServer, keys: Keys, tmp_path: Path, setup_fleet: SetupFleet
) -> None:
    budget_s = 3.0
    client = setup_fleet(own_redis_server, keys, lease_s=1.0)
    jobs = ragged_jobs(2000, seed=11)
    FabricClient(client, keys.namespace).submit(jobs)
    worker = WorkerProcess(
        own_redis_server.url,
        keys.namespace,
        tmp_path,
        "--outage-budget-s",
        str(budget_s),
        name="cut",
    )
    try:
        worker.wait_started()
        wait_until(lambda: num_results(client, keys, LANES) >= 200, 60, "200 results")
        stopped_at = time.monotonic()
        own_redis_server.stop()
        code = worker.wait(60)
        exited_at = time.monotonic()
    finally:
        worker.stop()
    assert code == 4, worker.log[-3000:]
    assert exited_at - stopped_at - budget_s < 5.0, worker.log[-3000:]
    assert "fatal: broker lost" in worker.log
    assert f"Redis unreachable for {budget_s:g} s" in worker.log
    # What it held stays pending, and another worker finishes it exactly once.
    own_redis_server.start()
    assert num_pending(client, keys, LANES) > 0
    run_burst_worker(own_redis_server.url, keys.namespace, tmp_path)
    assert_exactly_once(client, keys, jobs)


@pytest.mark.timeout(120)
def test_worker_started_during_an_outage_waits_for_redis_up_to_the_budget(
    own_redis_server: RedisServer, keys: Keys, tmp_path: Path, setup_fleet: SetupFleet
) -> None:
    client = setup_fleet(own_redis_server, keys)
    jobs = ragged_jobs(200, seed=13)
    FabricClient(client, keys.namespace).submit(jobs)
    url, ns = own_redis_server.url, keys.namespace
    own_redis_server.stop()
    patient = WorkerProcess(url, ns, tmp_path, "--burst", name="patient")
    hasty = WorkerProcess(url, ns, tmp_path, "--burst", "--outage-budget-s", "1", name="hasty")
    stopped = WorkerProcess(url, ns, tmp_path, "--burst", name="stopped")
    try:
        # Redis stays down until the one with a 1 s budget has given up (status 4,
        # broker lost, as when a running worker loses Redis, and one line)...
        assert hasty.wait(30) == 4, hasty.log
        assert hasty.log.startswith("error: cannot reach Redis for 1 s (broker lost):"), hasty.log
        assert len(hasty.log.splitlines()) == 1, hasty.log
        assert patient.process.poll() is None, patient.log
        # ...and one stopped while it waits has nothing to drain: it exits 0.
        wait_until(lambda: catches_sigterm(stopped.process.pid), 30, "a SIGTERM handler")
        stopped.process.send_signal(signal.SIGTERM)
        assert stopped.wait(30) == 0, stopped.log
        assert stopped.log == "stopped by SIGTERM before serving\n"
        own_redis_server.start()
        assert patient.wait(60) == 0, patient.log[-3000:]
    finally:
        for worker in (patient, hasty, stopped):
            worker.stop()
    assert_exactly_once(client, keys, jobs)


# --- 4. engine fatal error -----------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("hang_on_close", [False, True], ids=["clean-close", "close-hangs-30s"])
def test_engine_fatal_exits_3_within_5_s_and_its_jobs_finish_on_another_worker(
    redis_server: RedisServer,
    keys: Keys,
    tmp_path: Path,
    hang_on_close: bool,
    setup_fleet: SetupFleet,
) -> None:
    client = setup_fleet(redis_server, keys, lease_s=1.0)
    jobs = ragged_jobs(1500, seed=12)
    FabricClient(client, keys.namespace).submit(jobs)
    faults = ["--fault", "fatal_after_steps=300"]
    if hang_on_close:
        faults += ["--fault", "hang_on_close_s=30"]
    doomed = WorkerProcess(redis_server.url, keys.namespace, tmp_path, *faults, name="doomed")
    try:
        failed_at = observed_at(
            lambda: "fatal: engine" in doomed.log or doomed.process.poll() is not None,
            60,
            "the injected engine fault",
        )
        code = doomed.wait(30)
        exited_at = time.monotonic()
    finally:
        doomed.stop()
    log = doomed.log
    assert code == 3, log[-3000:]
    assert exited_at - failed_at < 5.0, log[-3000:]
    # Ordered teardown: the fatal error first, then the exit line; results the
    # engine had finished were written, what it had not is left pending.
    lines = log.splitlines()
    fatal = next(i for i, line in enumerate(lines) if "fatal: engine" in line)
    assert "injected fatal error after 300 iterations" in lines[fatal]
    assert any(" exiting after " in line for line in lines[fatal + 1 :]), log[-3000:]
    assert 0 < num_results(client, keys, LANES) < len(jobs)
    left = held_job_ids(client, keys, "doomed")
    assert left and num_pending(client, keys, LANES) == len(left)
    run_burst_worker(redis_server.url, keys.namespace, tmp_path)
    assert_exactly_once(client, keys, jobs)
    assert {r.worker for _, r in results(client, keys) if r.id in left} == {"r"}


# --- 6. graceful stop ----------------------------------------------------------------


class StreamWatch:
    """Every entry appended to the lanes' job streams from now on, with its job id,
    seen through plain XREAD (no group: it claims nothing, changes nothing)."""

    def __init__(self, url: str, keys: Keys) -> None:
        self._client = redis.Redis.from_url(url)
        self._streams = {
            keys.jobs(lane): self._client.xinfo_stream(keys.jobs(lane))["last-generated-id"]
            for lane in LANES
        }
        self.appended: dict[str, bytes] = {}  # job id -> entry id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for stream, entries in self._client.xread(self._streams, block=100) or []:
                for entry_id, fields in entries:
                    self.appended[json.loads(fields[b"h"])["id"]] = entry_id
                    self._streams[stream.decode()] = entry_id

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._client.close()


def long_jobs(n: int, prefix: str) -> list[Job]:
    """Jobs of 3,000 decode steps, ten seconds or so on the simulated GPU. Their
    padded cost (3,064) lets sim-small's budget (58,982 tokens) run 19 at once
    and its read-ahead (as much again) queue 19 more."""
    return [
        Job(tokens=[1 + i % 100] * 60, max_new_tokens=3000, id=f"{prefix}{i}") for i in range(n)
    ]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("taker_is", ["idle", "busy"])
def test_sigterm_hands_back_unstarted_entries_to_another_worker_in_under_a_second(
    redis_server: RedisServer, keys: Keys, tmp_path: Path, taker_is: str, setup_fleet: SetupFleet
) -> None:
    """The leaver finishes what it started within the grace period and hands back
    what it had queued; the taker, already running (idle on empty lanes, or busy
    with work of its own), claims each handed-back entry within a second. The
    lease (30 s) outlasts the test: only the hand-back can move an entry."""
    client = setup_fleet(redis_server, keys, lease_s=30.0, max_seq_len=4096)
    url, ns = redis_server.url, keys.namespace
    submitter = FabricClient(client, ns)
    running, queued = long_jobs(19, "run"), long_jobs(19, "queued")
    own = long_jobs(10, "own") if taker_is == "busy" else []
    leaver = WorkerProcess(url, ns, tmp_path, "--grace-s", "60", name="leaver")
    workers = [leaver]
    try:
        leaver.wait_started()
        # The leaver runs the first 19 and queues the next 19: its read-ahead is
        # then full, so it reads nothing more.
        submitter.submit(running)
        wait_until(lambda: held(client, keys).get("leaver") == 19, 30, "19 running")
        submitter.submit(queued)
        wait_until(lambda: held(client, keys).get("leaver") == 38, 30, "19 more queued")
        taker = WorkerProcess(url, ns, tmp_path, "--grace-s", "60", name="taker")
        workers.append(taker)
        taker.wait_started()
        # One progress line: its loops have run for a second (its ingress too).
        wait_until(lambda: "jobs/s" in taker.log, 30, "the taker's first progress line")
        if own:
            submitter.submit(own)
            wait_until(lambda: held(client, keys).get("taker") == len(own), 30, "the taker busy")
        assert held(client, keys) == {"leaver": 38, **({"taker": len(own)} if own else {})}
        assert num_results(client, keys, LANES) == 0
        watch = StreamWatch(url, keys)
        try:
            sigterm_at = time.time()
            leaver.process.send_signal(signal.SIGTERM)
            assert leaver.wait(90) == 0, leaver.log[-3000:]
            jobs = running + queued + own
            wait_until(lambda: num_results(client, keys, LANES) == len(jobs), 90, "every result")
        finally:
            watch.close()
        taker.process.send_signal(signal.SIGTERM)
        assert taker.wait(60) == 0, taker.log[-3000:]
    finally:
        for worker in workers:
            worker.stop()
    assert_exactly_once(client, keys, jobs)
    handed = watch.appended
    assert handed, "the leaver had nothing queued to hand back"
    assert f"handed back {len(handed)} unstarted entries" in leaver.log, leaver.log[-3000:]
    # Only what had not started was handed back; what had, the leaver finished.
    assert set(handed) <= {job.id for job in queued}
    by_id = {r.id: r for _, r in results(client, keys)}
    kept = {job.id for job in running + queued} - set(handed)
    assert {by_id[job_id].worker for job_id in kept} == {"leaver"}
    assert {by_id[job.id].worker for job in own} <= {"taker"}
    # Each handed-back entry went to the taker as a first delivery, claimed (the
    # result's started_at) within a second of its copy reaching the stream's tail.
    latencies = []
    for job_id, entry_id in handed.items():
        result = by_id[job_id]
        assert (result.worker, result.deliveries) == ("taker", 1)
        latencies.append(result.started_at - entry_ms(entry_id) / 1000)
    assert max(latencies) < 1.0, sorted(latencies)
    # From the SIGTERM itself to the last of them claimed: under a second too.
    last_claim = max(by_id[job_id].started_at for job_id in handed)
    assert last_claim - sigterm_at < 1.0, (last_claim - sigterm_at, sorted(latencies))
    assert "reclaimed 0," in summary(taker)


# --- bad input under a running worker ------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    """A raw entry no worker may serve, and the reasons it may be dead-lettered with.

    ``header`` is a dict (the job id is filled in when the entry is written, so
    that no two entries share one; ``spliced`` adds members as raw JSON), raw
    bytes, or None for no ``h`` field; ``tokens`` is the ``t`` field, None for none.
    """

    kind: str
    lane: int
    header: dict[str, Any] | bytes | None
    tokens: bytes | None
    reasons: tuple[str, ...]
    extra: tuple[tuple[bytes, bytes], ...] = ()
    spliced: tuple[tuple[str, bytes], ...] = ()

    def fields(self, job_id: str) -> dict[bytes, bytes]:
        fields = dict(self.extra)
        if isinstance(self.header, dict):
            members = orjson.dumps({"v": 1, "id": job_id, **self.header})[:-1]
            for name, raw in self.spliced:
                members += b"," + orjson.dumps(name) + b":" + raw
            fields[b"h"] = members + b"}"
        elif self.header is not None:
            fields[b"h"] = self.header
        if self.tokens is not None:
            fields[b"t"] = self.tokens
        return fields


GOOD = {"max_new_tokens": 4}
lanes = st.sampled_from(LANES)
prompts = st.lists(st.integers(1, VOCAB - 1), min_size=1, max_size=64).map(pack_tokens)
anything = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=5,
)


def nested(depth: int) -> bytes:
    """A JSON array ``depth`` deep (orjson will not write one past 255)."""
    return b"[" * depth + b"]" * depth


def wrong(field: str, bad: st.SearchStrategy[Any], reason: str) -> st.SearchStrategy[Hostile]:
    return st.builds(
        lambda lane, value, tokens: Hostile(
            f"{field}={value!r}"[:80], lane, {**GOOD, field: value}, tokens, (reason,)
        ),
        lanes,
        bad,
        prompts,
    )


def not_int(value: Any) -> bool:
    return not isinstance(value, int) or isinstance(value, bool)


HOSTILE_KINDS: list[st.SearchStrategy[Hostile]] = [
    # wrong types and out-of-range values, one header field at a time
    wrong("v", anything.filter(lambda v: v != 1), "schema version"),
    wrong("id", anything.filter(lambda v: not (isinstance(v, str) and is_valid_id(v))), "id "),
    wrong(
        "max_new_tokens",
        anything.filter(lambda v: not_int(v) or not 1 <= v < 2**31) | st.none(),
        "max_new_tokens",
    ),
    wrong(
        "end_id",
        anything.filter(lambda v: v is not None and (not_int(v) or not 0 <= v < VOCAB)),
        "end_id",
    ),
    wrong(
        "class",
        anything.filter(lambda v: v is not None and not (isinstance(v, str) and 0 < len(v) <= 128)),
        "class must be",
    ),
    wrong(
        "submitted_at",
        anything.filter(not_int).filter(lambda v: not isinstance(v, float)),
        "submitted_at must be a number",
    ),
    # missing and extra fields
    st.builds(
        lambda lane, t: Hostile("no h", lane, None, t, ("missing field 'h'",)), lanes, prompts
    ),
    st.builds(lambda lane: Hostile("no t", lane, GOOD, None, ("missing field 't'",)), lanes),
    st.builds(
        lambda lane, t, name, value: Hostile(
            "extra field", lane, GOOD, t, ("unexpected fields",), ((name, value),)
        ),
        lanes,
        prompts,
        st.binary(min_size=1, max_size=16).filter(lambda b: b not in (b"h", b"t")),
        st.binary(max_size=16),
    ),
    # huge values: the whole entry, the prompt, the header
    st.builds(
        lambda lane, n, where: Hostile(
            f"entry of {n} bytes in {where}",
            lane,
            GOOD if where != "h" else b"{" + b" " * n + b"}",
            b"\0" * n if where == "t" else pack_tokens([1]),
            ("exceeds",),
            ((b"x", b"x" * n),) if where == "x" else (),
        ),
        lanes,
        st.integers(MAX_ENTRY_BYTES, MAX_ENTRY_BYTES + 4096),
        st.sampled_from(["h", "t", "x"]),
    ),
    st.builds(
        lambda lane, n: Hostile(
            f"{n} tokens", lane, GOOD, pack_tokens([1] * n), ("exceeds the largest lane",)
        ),
        lanes,
        st.integers(LANES[-1] + 1, 60_000),
    ),
    st.builds(
        lambda lane, n, t: Hostile(
            f"header of {n} bytes", lane, {**GOOD, "pad": "p" * n}, t, ("header of",)
        ),
        lanes,
        st.integers(MAX_HEADER_BYTES, 50_000),
        prompts,
    ),
    # tokens: out of the vocabulary (negative ids are huge as uint32), ragged, none
    st.builds(
        lambda lane, good, bad: Hostile(
            f"token {bad}", lane, GOOD, pack_tokens([*good, bad]), ("is outside",)
        ),
        lanes,
        st.lists(st.integers(0, VOCAB - 1), max_size=20),
        st.integers(VOCAB, 2**31 - 1) | st.integers(-(2**31), -1).map(lambda v: v + 2**32),
    ),
    st.builds(
        lambda lane, t: Hostile(f"{len(t)} token bytes", lane, GOOD, t, ("not a multiple of 4",)),
        lanes,
        st.binary(min_size=1, max_size=1000).filter(lambda b: len(b) % 4 != 0),
    ),
    st.builds(lambda lane: Hostile("empty prompt", lane, GOOD, b"", ("prompt is empty",)), lanes),
    # headers that are not JSON objects: invalid UTF-8, garbage, deep nesting
    st.builds(
        lambda lane, bad, t: Hostile(
            f"invalid utf-8 {bad!r}",
            lane,
            b'{"v": 1, "id": "' + bad + b'", "max_new_tokens": 4}',
            t,
            ("not valid JSON",),
        ),
        lanes,
        st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]),
        prompts,
    ),
    st.builds(
        lambda lane, raw, t: Hostile(
            "garbage header",
            lane,
            raw,
            t,
            ("not valid JSON", "not a JSON object", "schema version"),
        ),
        lanes,
        st.binary(max_size=64),
        prompts,
    ),
    st.builds(
        lambda lane, depth, t: Hostile(
            f"array {depth} deep",
            lane,
            nested(depth),
            t,
            ("not a JSON object", "depth limit exceeded"),
        ),
        lanes,
        st.integers(1, 2000),
        prompts,
    ),
    st.builds(
        lambda lane, depth, t: Hostile(
            f"max_new_tokens {depth} deep",
            lane,
            {},
            t,
            ("max_new_tokens must be an integer", "depth limit exceeded"),
            spliced=(("max_new_tokens", nested(depth)),),
        ),
        lanes,
        st.integers(1, 2000),
        prompts,
    ),
    # well-formed, but not for this lane or this engine
    st.builds(
        lambda lane, n: Hostile(
            f"{n} tokens in lane {lane}", lane, GOOD, pack_tokens([1] * n), ("does not belong",)
        ),
        st.sampled_from(LANES[:-1]),
        st.integers(LANES[-2] + 1, LANES[-1]),
    ),
    st.builds(
        lambda lane, n, t: Hostile(
            f"max_new_tokens {n}", lane, {"max_new_tokens": n}, t, ("job needs",)
        ),
        lanes,
        st.integers(8192, 2**31 - 1),
        prompts,
    ),
]


def draw_hostile(per_kind: int) -> list[Hostile]:
    """Entries drawn by hypothesis, ``per_kind`` of each kind, to be written all
    at once for one worker run (one run per example would take minutes)."""
    drawn: list[Hostile] = []
    for kind in HOSTILE_KINDS:

        @settings(
            max_examples=per_kind,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(kind)
        def collect(entry: Hostile) -> None:
            drawn.append(entry)

        collect()
    return drawn


@pytest.mark.timeout(180)
def test_hostile_entries_are_dead_lettered_with_a_reason_and_valid_jobs_all_complete(
    redis_server: RedisServer, keys: Keys, tmp_path: Path, setup_fleet: SetupFleet
) -> None:
    client = setup_fleet(redis_server, keys, lease_s=2.0)
    hostile = draw_hostile(per_kind=3)  # 63 entries
    assert len(hostile) >= 2 * len(HOSTILE_KINDS), "hypothesis drew too few entries"
    jobs = ragged_jobs(200, seed=20)
    submitter = FabricClient(client, keys.namespace)
    worker = WorkerProcess(redis_server.url, keys.namespace, tmp_path, name="w")
    try:
        worker.wait_started()
        # Valid and hostile entries interleaved in every lane, under a running worker.
        submitter.submit(jobs[:100])
        written = {}
        for k, entry in enumerate(hostile):
            fields = entry.fields(f"x{k}")
            entry_id = client.xadd(keys.jobs(entry.lane), fields)
            written[(entry.lane, entry_id)] = (entry, fields)
        submitter.submit(jobs[100:])
        wait_until(
            lambda: (
                worker.process.poll() is not None
                or (
                    num_results(client, keys, LANES) == len(jobs)
                    and sum(client.xlen(keys.dlq(lane)) for lane in LANES) >= len(written)
                )
            ),
            120,
            "every valid job done and every hostile entry dead-lettered",
        )
        assert worker.process.poll() is None, worker.log[-3000:]  # it never fell over
        worker.process.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, worker.log[-3000:]
    finally:
        worker.stop()
    assert_exactly_once(client, keys, jobs)
    dead = {}
    for lane in LANES:
        for _, letter in client.xrange(keys.dlq(lane)):
            dead[(lane, letter[b"entry"])] = letter
    assert set(dead) == set(written)
    for key, (entry, fields) in written.items():
        letter = dead[key]
        reason = letter[b"reason"].decode()
        assert any(r in reason for r in entry.reasons), (entry.kind, reason)
        # The original is kept byte for byte, so it can be inspected and replayed.
        assert (letter[b"h"], letter[b"t"]) == (fields.get(b"h", b""), fields.get(b"t", b""))
