"""One fabric Worker in a process of its own, built the way fabric_worker/demo.py builds it.

Benchmarks start this as a child (``python -m bench.fabric_child ...``) so the worker has
a core and a GIL of its own, as in production. It prints ``READY`` once the worker is
running, stops the worker gracefully once ``--expect`` jobs have left it (completed,
duplicate or dead-lettered), and prints ``RESULT {json}`` with the engine's counters and
the worker's meter. Other benchmarks call :func:`serve` with hooks of their own.
``--proposed`` runs bench.proposed's worker (a change proposed to worker.py) instead;
``--gaps`` wraps the engine in bench.gaps.GapEngine and reports where its idle time went.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from engines.clock import VirtualClock, WallClock
from engines.contract import Engine
from engines.manifest import load_manifest
from engines.registry import create_engine
from fabric_worker.broker.connection import connect, connect_async
from fabric_worker.broker.namespace import load_config
from fabric_worker.broker.streams import Broker
from fabric_worker.core.lifecycle import WorkerState
from fabric_worker.wire.keys import Keys
from fabric_worker.worker.options import WorkerOptions
from fabric_worker.worker.service import Worker

Hook = Callable[[Worker], Awaitable[dict[str, Any]]]


def engine_options(backend: str, batching: str, clock: str) -> dict[str, Any]:
    if backend != "sim":
        return {}
    return {"batching": batching, "clock": VirtualClock() if clock == "virtual" else WallClock()}


def num_left_worker(worker: Worker) -> int:
    counts = worker.counts
    return counts.completed + counts.duplicates + counts.dead_lettered


async def serve(
    *,
    url: str,
    namespace: str,
    manifest_path: str,
    expect: int,
    batching: str = "inflight",
    clock: str = "wall",
    max_tps: bool = False,
    wrap_engine: Callable[[Engine], Engine] | None = None,
    hook: Hook | None = None,
    proposed: bool = False,
) -> dict[str, Any]:
    """Run a worker until ``expect`` jobs have left it; returns counters (and the hook's)."""
    keys = Keys(namespace)
    with connect(url) as sync_client:
        config = load_config(sync_client, keys)
    manifest = load_manifest(manifest_path)
    options = WorkerOptions(consumer=f"bench-{os.getpid()}", max_tps=max_tps, log_every_s=3600.0)
    engine_kwargs = engine_options(manifest.backend, batching, clock)

    def factory() -> Engine:
        engine = create_engine(manifest, **engine_kwargs)
        return wrap_engine(engine) if wrap_engine is not None else engine

    client = connect_async(url)
    broker = Broker(client, keys, options.consumer, retention_s=config.retention_s)
    worker_class = Worker
    if proposed:
        from bench.proposed import ProposedWorker

        worker_class = ProposedWorker
    worker = worker_class(
        broker, config, factory, options, log=lambda line: print(line, file=sys.stderr)
    )
    run = asyncio.create_task(worker.run())
    while worker.state is WorkerState.STARTING and not run.done():
        await asyncio.sleep(0.01)
    if run.done():
        raise RuntimeError(f"worker exited at start with {run.result()!r}")
    print("READY", flush=True)
    hook_task = asyncio.create_task(hook(worker)) if hook is not None else None
    started = time.monotonic()
    while num_left_worker(worker) < expect and not run.done():
        await asyncio.sleep(0.02)
    serve_s = time.monotonic() - started
    extra = await hook_task if hook_task is not None else {}
    worker.request_stop()
    code = await run
    await client.aclose()
    stats = asdict(worker.engine_stats)
    counts = worker.counts
    return {
        "exit_code": int(code),
        "serve_s": serve_s,
        "engine": stats,
        "completed": counts.completed,
        "duplicates": counts.duplicates,
        "dead_lettered": counts.dead_lettered,
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--batching", default="inflight", choices=["inflight", "static"])
    parser.add_argument("--clock", default="wall", choices=["wall", "virtual"])
    parser.add_argument("--max-tps", action="store_true")
    parser.add_argument("--proposed", action="store_true", help="bench.proposed's worker")
    parser.add_argument("--gaps", action="store_true", help="time the engine thread (bench.gaps)")
    args = parser.parse_args()
    if os.environ.get("BENCH_SWITCH_INTERVAL_S"):  # an experiment: GIL hand-over latency
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL_S"]))
    gap_engines: list[Any] = []

    def wrap(engine: Engine) -> Engine:
        from bench.gaps import GapEngine

        gap_engines.append(GapEngine(engine))
        return gap_engines[-1]  # type: ignore[no-any-return]

    result = asyncio.run(
        serve(
            url=args.url,
            namespace=args.namespace,
            manifest_path=args.manifest,
            expect=args.expect,
            batching=args.batching,
            clock=args.clock,
            max_tps=args.max_tps,
            proposed=args.proposed,
            wrap_engine=wrap if args.gaps else None,
        )
    )
    if gap_engines:
        result["gaps"] = gap_engines[0].report()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
