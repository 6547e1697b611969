"""The contenders of bench.engine_feed, each serving jobs on the one shared engine.

Each returns a :class:`Served`: the tokens of every job and the contender's own
clock, which covers the same thing for all of them: from the moment its driver
starts (the direct loop's first submit, the naive loop's start, the fabric
worker's ``run()``) to the moment the last result is out (the direct loop's
last output, the naive loop's last result written, the fabric's last result
entry in Redis, by its stream id). Putting the jobs on a queue beforehand (the
producer's part) and a burst worker's exit are outside it, and reported apart
as the whole call's wall time.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from bench.feed_timeline import Recorder, Timeline
from bench.shared_engine import EngineHost, EngineProxy, HostedEngineThread, run_direct
from engines.contract import Engine, EngineRequest
from fabric_worker.worker.engine_thread import EngineThread
from fabric_worker.worker.service import Worker

LANES = (64, 128, 256, 512, 1024)
VOCAB = 1024


@dataclass(frozen=True, slots=True)
class Served:
    outputs: dict[int, list[int]]  # job index -> tokens
    start: float  # time.time() at the contender's clock start
    end: float  # ... and at its end
    driver_cpu_s: float | None = None  # the fabric worker's event-loop thread, CPU seconds
    claimed_at: dict[int, float] | None = None  # job index -> the fabric's claim (started_at)


def direct(host: EngineHost, jobs: Sequence[EngineRequest], timeline: Timeline) -> Served:
    def serve(engine: object) -> Served:
        start = time.time()
        done = run_direct(Recorder(engine, timeline), jobs)
        return Served({rid: out.tokens for rid, out in done.items()}, start, time.time())

    return host.call(serve)


def fabric(
    host: EngineHost,
    url: str,
    jobs: Sequence[EngineRequest],
    timeline: Timeline,
    *,
    policy: dict[str, Any] | None = None,
    hosted: bool = True,
) -> Served:
    """Submit every job, then a burst worker on the shared engine serves them all.

    ``hosted``: the worker's engine loop runs on the host thread and steps the
    engine itself (as in production); otherwise each engine call hops to the
    host thread through :class:`EngineProxy`. ``policy``: WorkerOptions fields.
    """
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
    FabricClient(client, keys.namespace).submit(
        Job(list(j.prompt), j.max_new_tokens, id=str(j.request_id), prefix_class=j.prefix_class)
        for j in jobs
    )

    async def serve() -> tuple[ExitCode, float]:
        async_client = connect_async(url)
        options = WorkerOptions(consumer="feed", burst=True, log_every_s=3600.0, **(policy or {}))
        broker = Broker(async_client, keys, options.consumer, retention_s=600)
        engine = lambda: Recorder(EngineProxy(host), timeline)  # noqa: E731
        if hosted:
            wrap = lambda e: Recorder(e, timeline)  # noqa: E731
            worker = HostedWorker(host, wrap, broker, config, engine, options, log=lambda _: None)
        else:
            worker = Worker(broker, config, engine, options, log=lambda _: None)
        start = time.time()
        try:
            return await worker.run(), start
        finally:
            await async_client.aclose()

    cpu_before = time.thread_time()  # the event loop runs on this thread; the engine's is apart
    code, start = asyncio.run(serve())
    driver_cpu_s = time.thread_time() - cpu_before
    if code is not ExitCode.OK:
        raise RuntimeError(f"fabric worker exited {code}")
    outputs, claimed_at, end = {}, {}, start
    for lane in LANES:
        for entry_id, fields in client.xrange(keys.results(lane)):
            result = decode_result(fields)
            outputs[int(result.id)] = list(result.tokens)
            claimed_at[int(result.id)] = result.started_at
            end = max(end, int(entry_id.split(b"-")[0]) / 1000)  # Redis's clock, in ms
    return Served(outputs, start, end, driver_cpu_s, claimed_at)


def naive(host: EngineHost, url: str, jobs: Sequence[EngineRequest], timeline: Timeline) -> Served:
    import orjson

    from bench import naive as loop

    client = redis.Redis.from_url(url)
    client.flushall()
    loop.create_stream(client)
    pipe = client.pipeline(transaction=False)
    for j in jobs:
        header = {"id": str(j.request_id), "max_new_tokens": j.max_new_tokens, "submitted_at": 0}
        pipe.xadd(loop.STREAM, {"h": orjson.dumps(header), "t": array("I", j.prompt).tobytes()})
    pipe.execute()

    def serve(engine: object) -> tuple[float, float]:
        start = time.time()
        loop.serve_engine(client, Recorder(engine, timeline), len(jobs))
        return start, time.time()

    start, end = host.call(serve)
    outputs = {}
    for _, fields in client.xrange(loop.RESULTS):
        tokens = array("I")
        tokens.frombytes(fields[b"t"])
        outputs[int(orjson.loads(fields[b"h"])["id"])] = list(tokens)
    return Served(outputs, start, end)


class HostedWorker(Worker):
    """A worker whose engine thread is the host's thread (HostedEngineThread)."""

    def __init__(self, host: Any, wrap: Callable[[Any], Engine], *args: Any, **kw: Any) -> None:
        self._host, self._wrap = host, wrap
        super().__init__(*args, **kw)

    def make_engine_thread(self, engine_factory: Callable[[], Engine]) -> EngineThread:
        return HostedEngineThread(self._host, self._wrap, self._outputs_arrived)
