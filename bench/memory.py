"""Memory of one worker over a long run on the zero-cost engine.

    python -m bench.memory [--jobs 1000000] [--round-jobs 50000] [--traced-rounds 1]

One fabric worker (bench.fabric_child, null.json) serves ``--jobs`` jobs (16-token
prompts in lane 64, max_new_tokens 8), fed in rounds of ``--round-jobs``: the producer
submits a round, the worker drains it, and at the end of each round, with nothing
queued, held or in flight, the worker process records its RSS and the interpreter's
allocated blocks (after a full gc.collect()) and tells the producer to send the next.
Measuring at these idle points compares like with like: the working set (read-ahead
queue, holdings, engine hand-off) is empty at each, so whatever grew was kept.

Warm-up is the first 2 rounds. tracemalloc runs over the last ``--traced-rounds`` + 1
rounds: it starts at an idle point, one round settles (buffers and dict tables reach the
size they keep, and blocks allocated before tracing are not counted), and the growth of
traced bytes from the end of that round to the end of the run is what the steady state
kept. Net growth = those bytes / the RSS at warm-up. tracemalloc slows the worker about
eight-fold and its own tables sit in the RSS, hence a window at the end; the RSS and
allocated-block figures up to that window are untouched by it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from array import array
from pathlib import Path
from typing import Any

import redis

from bench.common import (
    MANIFESTS,
    goal_line,
    machine_line,
    ratio,
    read_json_line,
    rss_bytes,
    save,
    table,
)
from bench.common import child as start_child
from fabric_worker.broker.namespace import init_namespace
from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import Keys
from producers import FabricClient, Job

NAMESPACE = "bench-memory"
PROMPT_TOKENS = 16
MAX_NEW_TOKENS = 8
SUBMIT_CHUNK = 10_000
ROUND_KEY = "bench-memory:round"  # the last round the worker has sampled
WARM_ROUNDS = 2


def child_main(url: str, num_rounds: int, round_jobs: int, traced_rounds: int) -> None:
    from bench.fabric_child import num_left_worker, serve

    client = redis.Redis.from_url(url)
    points: list[dict[str, Any]] = []
    traced: dict[str, Any] = {}

    trace_from = num_rounds - traced_rounds - 2  # tracing starts at the end of this round

    async def sample(worker) -> dict[str, Any]:
        dispatcher = worker.serving.dispatcher  # serving: the hook runs once the worker is up
        for r in range(num_rounds):
            target = (r + 1) * round_jobs
            while num_left_worker(worker) < target or not dispatcher.is_idle:
                await asyncio.sleep(0.02)
            gc.collect()
            point = {
                "round": r,
                "done": num_left_worker(worker),
                "rss": rss_bytes(),
                "blocks": sys.getallocatedblocks(),
                "t": time.monotonic(),
                "traced": tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None,
            }
            if r == trace_from:
                tracemalloc.start(1)
            elif r == trace_from + 1:
                traced["first"] = tracemalloc.take_snapshot()
                traced["start"] = point
            elif r == num_rounds - 1:
                snapshot = tracemalloc.take_snapshot()
                traced["end"] = point
                traced["top"] = [
                    {"where": str(s.traceback[0]), "size": s.size_diff, "count": s.count_diff}
                    for s in snapshot.compare_to(traced.pop("first"), "lineno")[:8]
                ]
                tracemalloc.stop()
            points.append(point)
            client.set(ROUND_KEY, r)
        return {}

    result = asyncio.run(
        serve(
            url=url,
            namespace=NAMESPACE,
            manifest_path=str(MANIFESTS / "null.json"),
            expect=num_rounds * round_jobs,
            hook=sample,
        )
    )
    out = {
        "points": points,
        "traced": traced,
        "end_rss": rss_bytes(),
        "completed": result["completed"],
        "exit_code": result["exit_code"],
    }
    print("RESULT " + json.dumps(out), flush=True)


def submit_round(producer: FabricClient, r: int, round_jobs: int) -> None:
    first = r * round_jobs
    for start in range(first, first + round_jobs, SUBMIT_CHUNK):
        producer.submit(
            [
                Job(
                    tokens=array("I", range(i % 1000, i % 1000 + PROMPT_TOKENS)),
                    max_new_tokens=MAX_NEW_TOKENS,
                    id=f"m{i}",
                )
                for i in range(start, min(start + SUBMIT_CHUNK, first + round_jobs))
            ]
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--round-jobs", type=int, default=50_000)
    parser.add_argument("--traced-rounds", type=int, default=1)
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    num_rounds = args.jobs // args.round_jobs
    if num_rounds < WARM_ROUNDS + args.traced_rounds + 2:
        parser.error("--jobs must hold warm-up (2 rounds), a settling round and the traced ones")
    if args.child:
        child_main(args.child, num_rounds, args.round_jobs, args.traced_rounds)
        return {}
    print(machine_line(), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        init_namespace(client, Keys(NAMESPACE), FleetConfig())
        producer = FabricClient(client, NAMESPACE)
        log = (workdir / "worker.log").open("wb")
        started = time.monotonic()
        worker = start_child(
            "bench.memory",
            *["--jobs", str(args.jobs), "--round-jobs", str(args.round_jobs)],
            *["--traced-rounds", str(args.traced_rounds), "--child", server.url],
            stdout=subprocess.PIPE,
            stderr=log,
        )
        assert worker.stdout is not None
        if not worker.stdout.readline().startswith(b"READY"):
            raise RuntimeError(f"worker did not start; see {log.name}")
        for r in range(num_rounds):
            submit_round(producer, r, args.round_jobs)
            while int(client.get(ROUND_KEY) or -1) < r:
                if worker.poll() is not None:
                    raise RuntimeError(f"worker exited {worker.returncode}; see {log.name}")
                time.sleep(0.02)
            if r % 5 == 4:
                print(f"memory: {(r + 1) * args.round_jobs:,} jobs done", flush=True)
        out, _ = worker.communicate(timeout=600)
        serve_s = time.monotonic() - started
        if worker.returncode != 0:
            raise RuntimeError(f"worker exited {worker.returncode}; see {log.name}")
        client.close()
    r = read_json_line(out)
    points, traced = r["points"], r["traced"]
    warm = points[WARM_ROUNDS - 1]
    untraced_end = points[num_rounds - args.traced_rounds - 2]
    start, end = traced["start"], traced["end"]
    kept = end["traced"] - start["traced"]
    growth = ratio(kept, warm["rss"])
    mib = 2**20
    window_jobs = end["done"] - start["done"]
    rows = [
        ["jobs completed", r["completed"]],
        [f"RSS after warm-up ({warm['done']:,} jobs, idle)", f"{warm['rss'] / mib:.1f} MiB"],
        [
            f"RSS at the end, untraced ({untraced_end['done']:,} jobs, idle)",
            f"{untraced_end['rss'] / mib:.1f} MiB",
        ],
        [
            "RSS growth, warm-up to untraced end",
            f"{ratio(untraced_end['rss'] - warm['rss'], warm['rss']):+.3%}",
        ],
        [
            "allocated blocks, warm-up to untraced end",
            f"{warm['blocks']:,} -> {untraced_end['blocks']:,} "
            f"({untraced_end['blocks'] - warm['blocks']:+,})",
        ],
        [
            "RSS at the very end (tracemalloc's own tables included)",
            f"{points[-1]['rss'] / mib:.1f} MiB",
        ],
        ["tracemalloc window (after a settling round)", f"{window_jobs:,} jobs"],
        ["traced bytes: start -> end of window", f"{start['traced']:,} -> {end['traced']:,}"],
        ["kept per job", f"{ratio(kept, window_jobs):.3f} bytes"],
        ["net growth (kept / RSS at warm-up)", f"{growth:+.4%}"],
    ]
    point_rows = [[p["round"] + 1, p["done"], f"{p['rss'] / mib:.1f}", p["blocks"]] for p in points]
    print()
    print(
        f"bench.memory: one worker, null engine, {args.jobs:,} jobs ({PROMPT_TOKENS}-token "
        f"prompts) in rounds of {args.round_jobs:,} ({serve_s:.0f} s)"
    )
    print(machine_line())
    print(table(["measure", "value"], rows))
    print()
    print(table(["round", "jobs done", "RSS MiB", "allocated blocks"], point_rows))
    print()
    print("largest changes over the window (tracemalloc snapshot diff, by line):")
    print(
        table(
            ["where", "bytes", "blocks"],
            [[t["where"], t["size"], t["count"]] for t in traced.get("top", [])],
        )
    )
    print(goal_line("net growth over the steady state", growth, 0.01, at_most=True))
    result = {**r, "growth": growth, "serve_s": serve_s}
    save("memory", result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
