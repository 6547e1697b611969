"""Enqueue no-op jobs for one peer, run one worker of it, time the drain.

Runs inside the peer's venv (``bench/.venv-peers`` or ``bench/.venv-arq``), started by
bench/supply.py; prints one ``RESULT {json}`` line. The Redis at ``--url`` is a private
server that this run may flush.

Worker settings, for a 2-core machine and one worker process (see ``SETTINGS``):

- Dramatiq: ``--processes 1 --threads 8``. Its default is one process per core and 8
  threads; the process count is set to 1 by the benchmark's rule, the threads stay at the
  default (a no-op releases the GIL at once, so more threads only add contention).
  Prefetch is Dramatiq's default, 2 x threads.
- Celery prefork: ``--pool prefork --concurrency 2``: the default pool, with one child
  per core (Celery's default concurrency is the core count). That is one worker
  instance of three processes (parent + 2 children); reported as such.
- Celery solo: ``--pool solo``: strictly one process (tasks run in the consumer).
  Both Celery variants: prefetch multiplier 4 (default), early ack (default), and
  ``--without-gossip --without-mingle --without-heartbeat``, which the Celery docs
  suggest when workers need not talk to each other.
- arq: defaults (``max_jobs`` 10, results kept), ``--burst``: arq is one asyncio
  process per worker by design.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

import redis

from bench.common import ROOT, measure_drain, stop

SETTINGS = {
    "dramatiq": "1 process, 8 threads (default threads), prefetch 16",
    "celery-prefork": "prefork pool, concurrency 2 (= cores), prefetch x4; 3 processes",
    "celery-solo": "solo pool (1 process), prefetch x4",
    "arq": "1 asyncio process, max_jobs 10 (default), results kept (default)",
}


def enqueue(peer: str, num_jobs: int, url: str) -> None:
    if peer == "dramatiq":
        from bench.peers.dramatiq_app import noop

        for _ in range(num_jobs):
            noop.send()
    elif peer.startswith("celery"):
        from bench.peers.celery_app import noop

        for _ in range(num_jobs):
            noop.delay()
    elif peer == "arq":
        asyncio.run(_enqueue_arq(num_jobs))
    else:
        raise SystemExit(f"unknown peer {peer!r}")


async def _enqueue_arq(num_jobs: int) -> None:
    from arq import create_pool

    from bench.peers.arq_app import WorkerSettings

    pool = await create_pool(WorkerSettings.redis_settings)
    for start in range(0, num_jobs, 500):
        batch = range(start, min(start + 500, num_jobs))
        await asyncio.gather(*(pool.enqueue_job("noop") for _ in batch))
    await pool.aclose()


def worker_command(peer: str) -> list[str]:
    py = sys.executable
    if peer == "dramatiq":
        return [py, "-m", "dramatiq", "bench.peers.dramatiq_app", "--processes", "1"]
    if peer.startswith("celery"):
        pool = ["--pool", "prefork", "--concurrency", "2"] if peer == "celery-prefork" else []
        if peer == "celery-solo":
            pool = ["--pool", "solo"]
        return [
            py,
            "-m",
            "celery",
            "-A",
            "bench.peers.celery_app",
            "worker",
            *pool,
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    if peer == "arq":
        return [py, "-m", "arq", "bench.peers.arq_app.WorkerSettings", "--burst"]
    raise SystemExit(f"unknown peer {peer!r}")


def remaining_fn(peer: str, client: redis.Redis):
    if peer == "dramatiq":
        # a message stays in the .msgs hash until the worker acks it, after the actor ran
        return lambda: client.hlen("dramatiq:default.msgs")
    if peer.startswith("celery"):
        # queued, plus delivered and not yet acked (early ack: acked as it starts)
        def celery_left() -> int:
            pipe = client.pipeline(transaction=False)
            pipe.llen("celery")
            pipe.hlen("unacked")
            queued, unacked = pipe.execute()
            return int(queued) + int(unacked)

        return celery_left
    if peer == "arq":
        # arq removes a job from its queue zset when it finishes
        return lambda: client.zcard("arq:queue")
    raise SystemExit(f"unknown peer {peer!r}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("peer", choices=sorted(SETTINGS))
    parser.add_argument("--url", required=True)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--redis-pid", type=int, help="report this redis-server's CPU time")
    args = parser.parse_args()
    os.environ["BENCH_REDIS_URL"] = args.url
    client = redis.Redis.from_url(args.url)
    client.flushall()
    started = time.monotonic()
    enqueue(args.peer, args.jobs, args.url)
    enqueue_s = time.monotonic() - started
    remaining = remaining_fn(args.peer, client)
    if remaining() != args.jobs:
        raise SystemExit(f"{args.peer}: expected {args.jobs} queued jobs, found {remaining()}")
    log = open(os.devnull, "wb")  # noqa: SIM115 - lives as long as the worker
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen(
        worker_command(args.peer), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        pids = {"redis": args.redis_pid} if args.redis_pid else {}
        drain = measure_drain(remaining, args.jobs, worker, args.timeout_s, pids=pids)
    finally:
        stop(worker)
    result = {
        "peer": args.peer,
        "jobs": args.jobs,
        "settings": SETTINGS[args.peer],
        "enqueue_s": enqueue_s,
        "enqueue_jobs_per_s": args.jobs / enqueue_s,
        **drain,
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
