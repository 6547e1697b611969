"""Worker and Redis CPU per job, and where the worker's goes, stage by stage.

    python -m bench.cpu_per_job [--jobs 50000] [--repeat 2] [--tree PATH ...] [--quick]

One ``fabric worker`` on the ``null`` engine serves ``--jobs`` jobs (bench.supply's
fabric run: 256-token prompts, max_new_tokens 16, burst mode), on a private
redis-server. Worker and redis-server CPU come from /proc (utime + stime over the
serving window), per job served. Then the same run again under py-spy (a sampling
profiler from PyPI, installed in bench/.venv-peers; ``--gil``: only the thread that
holds the GIL is sampled, so a thread waiting for it is not counted twice) and each
sample goes to one stage; a stage's share of the samples times the worker's CPU per
job (of the unprofiled runs) is that stage's microseconds per job.

``--tree`` runs the worker from another checkout of this repository (e.g. the main
branch's) as a contender: trees alternate, ``--repeat`` runs each, the best kept
(the least disturbed on a shared machine). Compare the trees' ratios, not absolute
figures.
"""

from __future__ import annotations

import argparse
import collections
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, machine_line, ratio, save, table
from bench.supply import prompts, run_fabric
from bench.venvs import PEERS
from fabric_worker.dev.redis_server import RedisServer

# Stages, in order of priority: a sample goes to the first stage whose pattern matches
# any frame of its stack (the engine's frames sit under the engine thread's loop, the
# encoding under the drain's), so the more specific stages come first. Frames read
# "Class.method (path:line)", as py-spy prints them; a renamed function shows up as
# "other", which is the hint to update these.
STAGES: tuple[tuple[str, str], ...] = (
    (
        "engine (null: checks, outputs)",
        r"^((NullEngine|EngineBase)\.\w+|request_problem|expected_output|prompt_seed"
        r"|null_outputs) \(",
    ),
    ("encode results", r"^(Dispatcher\._completion|Dispatcher\._completions|encode_results?) \("),
    ("complete (script call, replies)", r"^Broker\.complete \("),
    (
        "ack/renew/settle (lease, dead letters, requeues)",
        r"^(Broker\.(renew|settle)|Serving\._lease) \(",
    ),
    ("engine thread hand-off (inbox, outbox, loop)", r"^(EngineThread|Outbox)\.\w+ \("),
    (
        "admission/dispatch (budget, queue, requests)",
        r"^(Dispatcher\.(admit|finish|committed)|Serving\.admit) \(",
    ),
    (
        "claim+decode (XREADGROUP, decode, intake)",
        r"^(Broker\.(read|backlogs|stream_lengths)|Dispatcher\.accept"
        r"|Serving\.(accept|_ingress)) \(",
    ),
    ("drain loop (outbox take)", r"^Serving\.(_drain|handle_outputs) \("),
)
OTHER = "other (asyncio loop, telemetry, GC)"
# Samples outside these frames are start-up (imports, connecting, building the engine)
# and are left out, as is the one full collection before serving (tune_gc): the CPU
# figures cover the serving window only.
SERVING = re.compile(r"^(Runner\.run|EngineThread\._loop) \(")
NOT_SERVING = re.compile(r"^tune_gc \(")


def is_serving(frames: list[str]) -> bool:
    """Whether a sampled stack is the worker serving (not starting up)."""
    return any(SERVING.search(f) for f in frames) and not any(NOT_SERVING.search(f) for f in frames)


def stage_of(frames: list[str]) -> str:
    """The stage a sampled stack belongs to."""
    for name, pattern in STAGES:
        if any(re.search(pattern, frame) for frame in frames):
            return name
    return OTHER


def serving_samples(path: Path) -> Iterator[tuple[list[str], int]]:
    """(frames, count) of each serving stack in a py-spy ``--format raw`` file."""
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        frames = stack.split(";")
        if is_serving(frames):
            yield frames, int(count_text)


def stage_samples(path: Path) -> tuple[collections.Counter[str], int]:
    """(samples per stage, total) of the serving samples in a py-spy ``--format raw`` file."""
    stages: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, count in serving_samples(path):
        stages[stage_of(frames)] += count
        total += count
    return stages, total


def _per_job_us(run: dict[str, Any], name: str) -> float:
    served = run["jobs_per_s"] * run["serve_s"]
    return run["cpu_s"][name] / served * 1e6


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=2, help="unprofiled runs per tree")
    parser.add_argument("--tree", action="append", default=[], help="another checkout to run")
    parser.add_argument("--quick", action="store_true", help="20,000 jobs, one run per tree")
    parser.add_argument("--no-profile", action="store_true", help="CPU per job only")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.repeat = min(args.jobs, 20_000), 1
    trees = [ROOT, *(Path(t).resolve() for t in args.tree)]
    if not args.no_profile:
        PEERS.ensure()
    print(machine_line(), flush=True)
    tokens = prompts(args.jobs)
    runs: dict[Path, list[dict[str, Any]]] = {tree: [] for tree in trees}
    profiles: dict[Path, tuple[collections.Counter[str], int]] = {}
    with RedisServer() as server:
        assert server.process is not None
        redis_pid = server.process.pid
        for attempt in range(args.repeat):
            for tree in trees:
                print(f"cpu_per_job: {tree.name} ({attempt + 1}/{args.repeat}) ...", flush=True)
                run = run_fabric(server.url, tokens, redis_pid, tree=tree)
                if not run["exactly_once"]:
                    raise RuntimeError(f"{tree}: not exactly one result per job")
                runs[tree].append(run)
                print(f"  worker {_per_job_us(run, 'worker'):.1f} us/job", flush=True)
        if not args.no_profile:
            RESULTS.mkdir(exist_ok=True)
            for i, tree in enumerate(trees):
                raw = RESULTS / f"cpu_per_job-{i}.pyspy.txt"
                print(f"cpu_per_job: profiling {tree.name} under py-spy ...", flush=True)
                run_fabric(
                    server.url, tokens, redis_pid, profile_to=raw, tree=tree, profile_rate=1000
                )
                profiles[tree] = stage_samples(raw)
    summary: dict[str, Any] = {"jobs": args.jobs, "trees": {}}
    print()
    print(f"bench.cpu_per_job: {args.jobs:,} jobs, null engine, best of {args.repeat} per tree")
    print(machine_line())
    base_us = None
    for tree in trees:
        best = min(runs[tree], key=lambda r: _per_job_us(r, "worker"))
        worker_us, redis_us = _per_job_us(best, "worker"), _per_job_us(best, "redis")
        base_us = worker_us if base_us is None else base_us
        tries = ", ".join(f"{_per_job_us(r, 'worker'):.1f}" for r in runs[tree])
        print(
            f"\n{tree}: worker {worker_us:.1f} us/job (tries {tries}), redis {redis_us:.1f} "
            f"us/job, serve {best['jobs_per_s']:,.0f} jobs/s; worker vs this tree "
            f"{ratio(worker_us, base_us):.3f}x"
        )
        entry: dict[str, Any] = {
            "worker_us_per_job": worker_us,
            "redis_us_per_job": redis_us,
            "serve_jobs_per_s": best["jobs_per_s"],
            "tries_worker_us": [_per_job_us(r, "worker") for r in runs[tree]],
        }
        if tree in profiles:
            stages, total = profiles[tree]
            rows = []
            for name in [*(s for s, _ in STAGES), OTHER]:
                share = ratio(stages[name], total)
                rows.append([name, stages[name], f"{share:.1%}", share * worker_us])
            rows.append(["total", total, "100%", worker_us])
            print(table(["stage", "samples", "share", "us/job"], rows))
            entry["stages"] = {r[0]: {"samples": r[1], "us_per_job": r[3]} for r in rows}
        summary["trees"][str(tree)] = entry
    save("cpu_per_job", summary)
    return summary


if __name__ == "__main__":
    main()
