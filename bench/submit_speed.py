"""Submit speed alone: the producer client against a bare redis-py loop, and against another tree.

    python -m bench.submit_speed [--jobs 100000] [--repeat 3] [--baseline TREE] [--profile]

The submit half of ``bench.supply`` without the worker, so it can be repeated often:
``--jobs`` jobs of 256-token prompts (the same prompts, ids and chunks of 10,000 as
``bench.supply``) submitted with ``FabricClient.submit`` (validation, lane choice,
packing, the submit script) and, as the ceiling, XADDed in pipelines of 500 by redis-py.
With ``--baseline TREE`` the producer client of that source tree (for example a checkout
of main) runs as a third contender. Every contender runs in its own process on the same
private redis-server, flushed before each run, in turn, ``--repeat`` times; the best of
each is kept (the machine is shared: the best run is the least disturbed one) and the
ratios are of those bests. ``--tokens list`` hands the client Python lists, what
``fabric submit`` gets from a JSONL file, instead of arrays.

``--profile`` runs this tree's client once more under cProfile and prints where the
time goes, by stage.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
CHILD_PREFIX = "RESULT "

# cProfile functions, by the stage they belong to; the first pattern found in a
# function's "file:line(name)" wins, so narrower patterns come first.
STAGES = (
    ("validate + lane choice (producers/validation.py)", "validation.py"),
    ("encode header + pack tokens (wire/entries.py)", "entries.py"),
    ("build script calls (broker/scripts.py, submit.py)", "scripts.py"),
    ("redis-py: pack commands", "pack_command"),
    ("redis-py: socket send/receive, parse replies", "connection.py"),
    ("redis-py: pipeline, other", "redis/"),
    ("client: dedupe, lane split, report (producers/client.py)", "client.py"),
)


def _jobs(num_jobs: int, as_lists: bool) -> list[Any]:
    from bench.supply import MAX_NEW_TOKENS, prompts
    from producers import Job

    tokens = prompts(num_jobs)
    return [
        Job(tokens=t.tolist() if as_lists else t, max_new_tokens=MAX_NEW_TOKENS, id=f"j{i}")
        for i, t in enumerate(tokens)
    ]


def submit_fabric(url: str, jobs: list[Any]) -> float:
    import redis

    from bench.supply import NAMESPACE, SUBMIT_CHUNK
    from fabric_worker.broker.namespace import init_namespace
    from fabric_worker.wire.fleet_config import FleetConfig
    from fabric_worker.wire.keys import Keys
    from producers import FabricClient

    client = redis.Redis.from_url(url)
    client.flushall()
    init_namespace(client, Keys(NAMESPACE), FleetConfig())
    producer = FabricClient(client, NAMESPACE)
    producer.config  # noqa: B018 - loaded before the clock starts, as a long-lived client has it
    started = time.perf_counter()
    for i in range(0, len(jobs), SUBMIT_CHUNK):
        report = producer.submit(jobs[i : i + SUBMIT_CHUNK])
        if report.num_submitted != len(jobs[i : i + SUBMIT_CHUNK]):
            raise RuntimeError(f"submitted {report.num_submitted} of a chunk")
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed


def submit_ceiling(url: str, jobs: list[Any]) -> float:
    """What ``bench.supply``'s ceiling does: XADD the packed job, pipelines of 500."""
    from array import array

    import redis

    from bench.supply import ceiling_submit

    client = redis.Redis.from_url(url)
    client.flushall()
    tokens = [array("I", job.tokens) for job in jobs]
    elapsed = ceiling_submit(client, tokens)
    client.close()
    return elapsed


def run_child(kind: str, url: str, num_jobs: int, as_lists: bool, profile: bool) -> None:
    jobs = _jobs(num_jobs, as_lists)
    runner = submit_fabric if kind == "fabric" else submit_ceiling
    if not profile:
        print(CHILD_PREFIX + orjson.dumps({"submit_s": runner(url, jobs)}).decode(), flush=True)
        return
    profiler = cProfile.Profile()
    elapsed = profiler.runcall(runner, url, jobs)
    print(f"profiled submit of {num_jobs:,} jobs: {elapsed:.2f} s under cProfile")
    stats = pstats.Stats(profiler)
    by_stage: dict[str, float] = {}
    for (file, line, name), (_, _, own_s, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{file}:{line}({name})"
        stage = next((s for s, pattern in STAGES if pattern in where), "other (builtins, C)")
        by_stage[stage] = by_stage.get(stage, 0.0) + own_s
    total = sum(by_stage.values())
    print(f"{'stage (own time of its functions)':60} {'s':>7} {'share':>6}")
    for stage, own_s in sorted(by_stage.items(), key=lambda kv: -kv[1]):
        print(f"{stage:60} {own_s:7.2f} {own_s / total:6.1%}")
    print()
    stats.sort_stats("tottime").print_stats(18)


def _contender(tree: Path, kind: str, url: str, args: argparse.Namespace) -> float:
    # The script runs by path with the contender's tree first on the path, so
    # `producers` and `fabric_worker` are that tree's code.
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, url]
    command += ["--jobs", str(args.jobs), "--tokens", args.tokens]
    proc = subprocess.run(
        command, cwd=tree, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    for line in proc.stdout.splitlines():
        if line.startswith(CHILD_PREFIX):
            return float(orjson.loads(line[len(CHILD_PREFIX) :])["submit_s"])
    raise RuntimeError(f"{kind} in {tree} failed ({proc.returncode}): {proc.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tokens", choices=("array", "list"), default="array")
    parser.add_argument("--baseline", type=Path, help="another source tree's producer client")
    parser.add_argument("--profile", action="store_true", help="profile this tree's client")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "URL"), help="internal")
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.child[0], args.child[1], args.jobs, args.tokens == "list", args.profile)
        return {}
    from bench.common import machine_line, ratio, save, table
    from fabric_worker.dev.redis_server import RedisServer

    print(machine_line(), flush=True)
    contenders = [("fabric", ROOT, "fabric"), ("ceiling", ROOT, "ceiling")]
    if args.baseline is not None:
        contenders.insert(1, ("baseline", args.baseline.resolve(), "fabric"))
    tries: dict[str, list[float]] = {name: [] for name, _, _ in contenders}
    with RedisServer() as server:
        for attempt in range(args.repeat):
            for name, tree, kind in contenders:
                elapsed = _contender(tree, kind, server.url, args)
                tries[name].append(args.jobs / elapsed)
                print(f"  {attempt + 1}/{args.repeat} {name}: {args.jobs / elapsed:,.0f} jobs/s")
        if args.profile:
            run_child("fabric", server.url, args.jobs, args.tokens == "list", True)
    best = {name: max(rates) for name, rates in tries.items()}
    rows = [
        [
            name,
            f"{best[name]:,.0f}",
            ", ".join(f"{r:,.0f}" for r in tries[name]),
            f"{ratio(best[name], best['ceiling']):.3f}",
        ]
        for name, _, _ in contenders
    ]
    print()
    print(
        f"bench.submit_speed: {args.jobs:,} jobs of 256-token prompts as {args.tokens}s, "
        f"best of {args.repeat}, contenders in turn"
    )
    print(table(["contender", "best jobs/s", "tries jobs/s", "vs ceiling"], rows))
    summary = {"fabric_vs_ceiling": ratio(best["fabric"], best["ceiling"])}
    if args.baseline is not None:
        summary["fabric_vs_baseline"] = ratio(best["fabric"], best["baseline"])
        print(f"fabric / baseline ({args.baseline}): {summary['fabric_vs_baseline']:.3f}")
    result = {"tries": tries, "best": best, "summary": summary, "tokens": args.tokens}
    save("submit_speed", result)
    return result


if __name__ == "__main__":
    main()
