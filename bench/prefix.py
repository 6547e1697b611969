"""Prefix-cache hit rate: class grouping vs FIFO order, on the same engine.

    python -m bench.prefix [--jobs 2000]

Jobs: 8 prefix classes, each a 512-token shared prefix (16 KV blocks of 32 tokens), plus
a unique tail of 64 to 448 tokens and max_new_tokens 16; shuffled, then submitted all at
once. The same jobs are served twice by one fabric worker (bench.fabric_child) on the
simulated H200 (sim-h200.json, in-flight batching, wall clock):

- grouped: each job names its class, so the admission queue pops runs of one class;
- FIFO: the same jobs with no class, so they reach the engine in arrival order.

Hit rate = prefix-hit blocks / (16 x jobs): the share of shared-prefix blocks found in the
cache. Tail blocks are unique and can never hit, so they are left out of the denominator;
the engine's raw rate (hits / all full blocks) is shown too, and the rate over the blocks
that could hit at all (every class's first use must miss: 8 x 16 blocks, whatever the order).

A second table replays the same jobs straight into the engine (no Redis, virtual clock:
the hit rate depends on the order and batching, not on time) in three orders: FIFO,
grouped, and grouped with one leader per class sent first, which is what would close a
grouped miss (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
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
    save,
    table,
)
from bench.common import child as start_child
from engines.clock import VirtualClock
from engines.contract import EngineRequest
from engines.manifest import load_manifest
from engines.sim import SimEngine
from fabric_worker.broker.namespace import init_namespace
from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import Keys
from producers import FabricClient, Job

MANIFEST = MANIFESTS / "sim-h200.json"
NUM_CLASSES = 8
PREFIX_TOKENS = 512
TAIL_TOKENS = (64, 448)
MAX_NEW_TOKENS = 16
NAMESPACE = "bench-prefix"


def make_jobs(num_jobs: int, seed: int = 7) -> list[tuple[int, array[int]]]:
    """(class, prompt) pairs, shuffled."""
    rng = random.Random(seed)
    prefixes = [array("I", array("H", rng.randbytes(2 * PREFIX_TOKENS))) for _ in range(8)]
    jobs = []
    for i in range(num_jobs):
        cls = i % NUM_CLASSES
        tail = array("I", array("H", rng.randbytes(2 * rng.randint(*TAIL_TOKENS))))
        jobs.append((cls, prefixes[cls] + tail))
    rng.shuffle(jobs)
    return jobs


def prefix_blocks(num_jobs: int) -> int:
    block = load_manifest(MANIFEST).kv_block_tokens
    return num_jobs * (PREFIX_TOKENS // block)


def run_pipeline(server: RedisServer, jobs, grouped: bool, log_dir: Path) -> dict[str, Any]:
    client = redis.Redis.from_url(server.url)
    client.flushall()
    init_namespace(client, Keys(NAMESPACE), FleetConfig())
    FabricClient(client, NAMESPACE).submit(
        [
            Job(
                tokens=prompt,
                max_new_tokens=MAX_NEW_TOKENS,
                id=f"p{i}",
                prefix_class=f"sys{cls}" if grouped else None,
            )
            for i, (cls, prompt) in enumerate(jobs)
        ]
    )
    client.close()
    name = "grouped" if grouped else "fifo"
    log = (log_dir / f"{name}.log").open("wb")
    started = time.monotonic()
    worker = start_child(
        "bench.fabric_child",
        *["--url", server.url, "--namespace", NAMESPACE, "--manifest", str(MANIFEST)],
        *["--expect", str(len(jobs))],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    out, _ = worker.communicate(timeout=1800)
    if worker.returncode != 0:
        raise RuntimeError(f"worker exited {worker.returncode}; see {log.name}")
    engine = read_json_line(out)["engine"]
    return _row(name, engine, len(jobs), time.monotonic() - started)


def _row(name: str, engine: dict[str, Any], num_jobs: int, wall_s: float) -> dict[str, Any]:
    hits, misses = engine["prefix_hit_blocks"], engine["prefix_miss_blocks"]
    # The first use of each class's prefix must miss, whatever the order.
    compulsory = prefix_blocks(NUM_CLASSES)
    return {
        "order": name,
        "jobs": num_jobs,
        "hit_rate": ratio(hits, prefix_blocks(num_jobs)),
        "reusable_hit_rate": ratio(hits, prefix_blocks(num_jobs) - compulsory),
        "raw_hit_rate": ratio(hits, hits + misses),
        "hit_blocks": hits,
        "missed_prefix_blocks": prefix_blocks(num_jobs) - hits,
        "wall_s": wall_s,
    }


def run_engine_only(jobs, order: str) -> dict[str, Any]:
    """Hand the engine the jobs in ``order`` as fast as it takes them, one batch of 1000
    at a time as the worker's read does; virtual clock."""
    if order == "fifo":
        ordered = list(jobs)
        leaders: list = []
    else:
        ordered = []
        for start in range(0, len(jobs), 1000):  # the worker groups what one read brings
            chunk = jobs[start : start + 1000]
            ordered += sorted(chunk, key=lambda job: job[0])
        leaders = []
        if order == "grouped+leaders":
            seen: set[int] = set()
            for job in ordered:
                if job[0] not in seen:
                    seen.add(job[0])
                    leaders.append(job)
            ordered = [job for job in ordered if not any(job is lead for lead in leaders)]
    engine = SimEngine(load_manifest(MANIFEST), clock=VirtualClock(), batching="inflight")
    next_id = iter(range(1, len(jobs) + 1))

    def requests(batch):
        return [EngineRequest(next(next_id), prompt, MAX_NEW_TOKENS) for _, prompt in batch]

    num_done = 0
    if leaders:
        engine.submit(requests(leaders))
        while num_done < len(leaders):  # a leader is done prefilling when it has a token
            num_done += len(engine.poll(1.0))
    for start in range(0, len(ordered), 1000):
        engine.submit(requests(ordered[start : start + 1000]))
    while num_done < len(jobs):
        num_done += len(engine.poll(1.0))
    stats = engine.stats()
    engine_dict = {"prefix_hit_blocks": stats.prefix_hit_blocks}
    engine_dict["prefix_miss_blocks"] = stats.prefix_miss_blocks
    return _row(order, engine_dict, len(jobs), 0.0)


def _cells(r: dict[str, Any]) -> list[object]:
    rates = [f"{r[k]:.4f}" for k in ("hit_rate", "reusable_hit_rate", "raw_hit_rate")]
    return [r["order"], r["jobs"], *rates, r["missed_prefix_blocks"]]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args(argv)
    jobs = make_jobs(args.jobs)
    print(machine_line(), flush=True)
    log_dir = Path(tempfile.mkdtemp(prefix="bench-prefix-"))
    rows = []
    with RedisServer() as server:
        for grouped in (True, False):
            print(f"prefix: pipeline, {'grouped' if grouped else 'FIFO'} ...", flush=True)
            rows.append(run_pipeline(server, jobs, grouped, log_dir))
    engine_rows = [run_engine_only(jobs, order) for order in ("fifo", "grouped", "grouped+leaders")]
    headers = ["order", "jobs", "prefix hit rate", "excl. first use", "raw hit rate"]
    headers.append("missed prefix blocks")
    print()
    print(
        f"bench.prefix: {args.jobs} jobs, {NUM_CLASSES} classes x {PREFIX_TOKENS}-token prefix, "
        f"shuffled; fabric worker on sim-h200 (in-flight, wall clock)"
    )
    print(machine_line())
    print(
        table(
            headers,
            [_cells(r) for r in rows],
        )
    )
    print()
    print("engine only, same jobs, virtual clock (orders the worker could produce):")
    print(
        table(
            headers,
            [_cells(r) for r in engine_rows],
        )
    )
    grouped = rows[0]
    print(goal_line("prefix hit rate with class grouping", grouped["hit_rate"], 0.99))
    result = {"pipeline": rows, "engine_only": engine_rows}
    save("prefix", result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
