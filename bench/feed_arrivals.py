"""Workload (c) of bench.engine_feed: jobs arriving over time, faster than the engine serves.

The engine's capacity is measured first (jobs/s of the whole mix submitted at once,
direct FIFO); then a producer thread submits jobs on a seeded Poisson schedule at
``RATE_FACTOR`` times that rate for a fixed duration, to the fabric (a real worker on
the shared engine) and to the naive queue worker, alternated round by round. Above
capacity a backlog builds, so the engine should never wait while work is queued:

- ``busy_queued``: the engine's share of the time while some job was submitted and
  not finished, from the timeline (polls while the engine held requests);
- latency p50/p90/p99: a job's submit to its result (both stamped by ``time.time()``
  on this machine: the producer's ``submitted_at``, the worker's ``finished_at``);
- throughput: jobs over first submit to last result.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from bench.feed_contenders import LANES, VOCAB, HostedWorker, direct
from bench.feed_timeline import Recorder, Timeline, in_flight
from bench.shared_engine import EngineHost, EngineProxy
from engines.contract import EngineRequest

RATE_FACTOR = 1.2


@dataclass(slots=True)
class Arrived:
    """One contender's round: tokens, per-job submit and finish times, its timeline."""

    outputs: dict[int, list[int]] = field(default_factory=dict)
    submitted: dict[int, float] = field(default_factory=dict)
    finished: dict[int, float] = field(default_factory=dict)
    timeline: Timeline = field(default_factory=Timeline)
    driver_cpu_s: float | None = None


def poisson_offsets(rate: float, duration_s: float, seed: int = 11) -> list[float]:
    """Arrival times in [0, duration_s) of a Poisson process of ``rate`` per second."""
    rng = random.Random(seed)
    offsets, at = [], rng.expovariate(rate)
    while at < duration_s:
        offsets.append(at)
        at += rng.expovariate(rate)
    return offsets


def measure_capacity(host: EngineHost, jobs: Sequence[EngineRequest]) -> float:
    """Jobs per second of ``jobs`` all submitted at once (after one unmeasured warm-up).
    Give it several of the engine's batches: one batch alone measures a latency."""
    direct(host, jobs, Timeline())
    served = direct(host, jobs, Timeline())
    return len(jobs) / (served.end - served.start)


def produce(offsets: Sequence[float], submit: Callable[[int], None]) -> threading.Thread:
    """A thread calling ``submit(i)`` at ``offsets[i]`` seconds from now."""

    def run() -> None:
        start = time.monotonic()
        for i, offset in enumerate(offsets):
            delay = start + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the schedule itself, not a stand-in for synchronisation
            submit(i)

    thread = threading.Thread(target=run, name="arrivals", daemon=True)
    thread.start()
    return thread


def fabric_arrivals(
    host: EngineHost,
    url: str,
    jobs: Sequence[EngineRequest],
    offsets: Sequence[float],
    policy: dict[str, Any] | None = None,
) -> Arrived:
    """A long-running worker on the shared engine; stopped once every result is in.
    ``policy``: WorkerOptions fields."""
    from fabric_worker.broker.connection import connect_async
    from fabric_worker.broker.namespace import init_namespace
    from fabric_worker.broker.streams import Broker
    from fabric_worker.wire.entries import decode_result
    from fabric_worker.wire.fleet_config import FleetConfig
    from fabric_worker.wire.keys import Keys
    from fabric_worker.worker.options import ExitCode, WorkerOptions
    from producers import FabricClient, Job

    client = redis.Redis.from_url(url)
    client.flushall()
    keys = Keys("feed")
    config = FleetConfig(lanes=LANES, vocab_size=VOCAB, max_seq_len=2048, backlog_cap_tokens=10**9)
    init_namespace(client, keys, config)
    producer = FabricClient(redis.Redis.from_url(url), keys.namespace)
    got = Arrived()

    def submit(i: int) -> None:
        j = jobs[i]
        producer.submit([Job(list(j.prompt), j.max_new_tokens, id=str(j.request_id))])

    async def serve() -> ExitCode:
        async_client = connect_async(url)
        options = WorkerOptions(consumer="feed", log_every_s=3600.0, **(policy or {}))
        broker = Broker(async_client, keys, options.consumer, retention_s=600)
        wrap = lambda e: Recorder(e, got.timeline)  # noqa: E731
        unused = lambda: wrap(EngineProxy(host))  # noqa: E731  (the hosted thread wraps its own)
        worker = HostedWorker(host, wrap, broker, config, unused, options, log=lambda _: None)
        thread = produce(offsets, submit)

        async def stop_when_all_in() -> None:
            while sum([await async_client.xlen(keys.results(lane)) for lane in LANES]) < len(jobs):
                await asyncio.sleep(0.02)
            worker.request_stop()

        watcher = asyncio.create_task(stop_when_all_in())
        try:
            return await worker.run()
        finally:
            watcher.cancel()
            thread.join()
            await async_client.aclose()

    cpu_before = time.thread_time()  # the event loop runs on this thread; the engine's is apart
    code = asyncio.run(serve())
    got.driver_cpu_s = time.thread_time() - cpu_before
    if code is not ExitCode.OK:
        raise RuntimeError(f"fabric worker exited {code}")
    for lane in LANES:
        for _, fields in client.xrange(keys.results(lane)):
            result = decode_result(fields)
            rid = int(result.id)
            got.outputs[rid] = list(result.tokens)
            got.submitted[rid], got.finished[rid] = result.submitted_at, result.finished_at
    return got


def naive_arrivals(
    host: EngineHost, url: str, jobs: Sequence[EngineRequest], offsets: Sequence[float]
) -> Arrived:
    """The naive loop on the host thread while the producer feeds its stream."""
    from array import array

    import orjson

    from bench import naive as loop

    client = redis.Redis.from_url(url)
    client.flushall()
    loop.create_stream(client)
    producer = redis.Redis.from_url(url)
    got = Arrived()

    def submit(i: int) -> None:
        j = jobs[i]
        header = {"id": str(j.request_id), "max_new_tokens": j.max_new_tokens}
        header["submitted_at"] = time.time()
        producer.xadd(loop.STREAM, {"h": orjson.dumps(header), "t": array("I", j.prompt).tobytes()})

    thread = produce(offsets, submit)
    host.call(lambda engine: loop.serve_engine(client, Recorder(engine, got.timeline), len(jobs)))
    thread.join()
    for _, fields in client.xrange(loop.RESULTS):
        header = orjson.loads(fields[b"h"])
        tokens = array("I")
        tokens.frombytes(fields[b"t"])
        rid = int(header["id"])
        got.outputs[rid] = list(tokens)
        got.submitted[rid], got.finished[rid] = header["submitted_at"], header["finished_at"]
    return got


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of them at or below."""
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * q // 100) - 1)] if ordered else 0.0


def queued_spans(got: Arrived) -> list[tuple[float, float]]:
    """The union of [submitted, finished] over the jobs: while work was queued."""
    spans: list[tuple[float, float]] = []
    for begin, end in sorted((got.submitted[r], got.finished[r]) for r in got.finished):
        if spans and begin <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((begin, end))
    return spans


def busy_while_queued(got: Arrived) -> float:
    """Time polling an engine that held requests, over the time any job was queued."""
    spans = queued_spans(got)
    curve = in_flight(got.timeline)
    busy = 0.0
    for begin, end, _ in got.timeline.polls:
        index = bisect.bisect_right(curve, (begin, float("inf")))  # the count as the poll began
        if not index or curve[index - 1][1] <= 0:
            continue
        busy += sum(max(0.0, min(end, s_end) - max(begin, s_begin)) for s_begin, s_end in spans)
    queued = sum(end - begin for begin, end in spans)
    return busy / queued if queued else 0.0


def figures(name: str, got: Arrived, reference: dict[int, list[int]]) -> dict[str, Any]:
    latencies = [got.finished[r] - got.submitted[r] for r in got.finished]
    first, last = min(got.submitted.values()), max(got.finished.values())
    row: dict[str, Any] = {
        "workload": "arrivals",
        "contender": name,
        "jobs": len(got.outputs),
        "jobs_s": round(len(got.outputs) / (last - first), 2),
        "busy_queued": round(busy_while_queued(got), 4),
        **{f"p{q}_s": round(percentile(latencies, q), 3) for q in (50, 90, 99)},
        "tokens_match": got.outputs == reference,
        "max_in_engine": max((count for _, count in in_flight(got.timeline)), default=0),
    }
    if got.driver_cpu_s is not None:
        row["worker_cpu_us_per_job"] = round(1e6 * got.driver_cpu_s / len(got.outputs))
    return row


def bench_arrivals(
    host: EngineHost,
    url: str,
    mix: Callable[[int], list[EngineRequest]],
    *,
    duration_s: float,
    rounds: int,
    capacity_jobs: int,
) -> tuple[list[dict[str, Any]], dict[str, Arrived]]:
    """Rows (one per contender and round) and each contender's last round, for plots."""
    capacity = measure_capacity(host, mix(capacity_jobs))
    offsets = poisson_offsets(RATE_FACTOR * capacity, duration_s)
    jobs = mix(len(offsets))
    reference = {rid: out.tokens for rid, out in _direct_outputs(host, jobs).items()}
    # "uncapped": the engine cap lifted, so only the token budget bounds what the
    # worker hands the engine (how the fabric fed it before max_in_engine).
    uncapped = functools.partial(fabric_arrivals, policy={"max_in_engine": 10**6})
    serve = {"fabric": fabric_arrivals, "fabric uncapped": uncapped, "naive queue": naive_arrivals}
    rows, last = [], {}
    for r in range(rounds):
        for name in list(serve) if r % 2 == 0 else list(serve)[::-1]:
            assert host.call(lambda engine: engine.reset_prefix_cache()), "prefix cache not reset"
            before = host.call(lambda engine: engine.stats())
            got = serve[name](host, url, jobs, offsets)
            row = figures(name, got, reference)
            row["num_steps"] = host.call(lambda engine: engine.stats()).num_steps - before.num_steps
            row |= {"round": r, "capacity_jobs_s": round(capacity, 2), "rate_factor": RATE_FACTOR}
            rows.append(row)
            last[name] = got
    return rows, last


def _direct_outputs(host: EngineHost, jobs: Sequence[EngineRequest]) -> dict[int, Any]:
    from bench.shared_engine import run_direct

    return host.call(lambda engine: run_direct(engine, jobs))


def arrivals(
    host: EngineHost,
    url: str,
    ragged_jobs: Callable[[int, int], list[EngineRequest]],
    quick: bool,
    duration_s: float | None,
    rounds: int,
    plots: dict[str, dict[str, Timeline]],
) -> list[dict[str, Any]]:
    """bench.engine_feed's ``--workload arrivals``: the ragged mix, arriving; each
    contender's last round into ``plots``."""
    rows, last = bench_arrivals(
        host,
        url,
        lambda n: ragged_jobs(n, 32 if quick else 64),
        duration_s=duration_s or (2.0 if quick else 10.0),
        rounds=rounds,
        capacity_jobs=128 if quick else 384,
    )
    plots["arrivals"] = {name: got.timeline for name, got in last.items()}
    return rows
