"""The fabric feeding a real engine (vLLM's CPU build) vs the engine fed directly.

One engine, started once, serves every contender in turn (bench.shared_engine),
its prefix cache emptied before each; one unmeasured direct run warms it up,
then rounds alternate the contenders' order and the best round of each counts.

- ragged: trace-shaped jobs (producers' trace sample, prompts and outputs capped):
  the fabric (a real worker, real redis-server) vs all jobs submitted to the engine
  at once in FIFO order (what ``LLM.generate`` does) vs the naive queue worker.
- classes: class-shared prompts (a long shared prefix per class plus a short own
  tail, interleaved): the fabric vs FIFO direct vs class-sorted direct (the oracle).
- arrivals: the ragged mix arriving over time at 1.2x the engine's measured capacity,
  the fabric vs the naive queue worker (bench.feed_arrivals).

Every contender's outputs are checked token for token against the first direct run.

    .venv-vllm/bin/python -m bench.engine_feed [--quick] [--workload classes] [--out DIR]

``make demo-vllm`` is ``--quick --workload classes``: one engine start, then a
short fabric-vs-direct table.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from bench.common import MANIFESTS, ROOT
from bench.feed_arrivals import arrivals
from bench.feed_contenders import LANES, VOCAB, Served, direct, fabric, naive
from bench.feed_plot import save_plot
from bench.feed_tables import arrivals_table, table
from bench.feed_timeline import Timeline, summarise
from bench.feed_waits import passed_over, queue_waits, wait_figures
from bench.shared_engine import EngineHost
from engines.contract import EngineRequest

NUM_CLASSES = 32
PREFIX_TOKENS = 768


@dataclass(frozen=True, slots=True)
class Run:
    contender: str
    wall_s: float  # the contender's own clock (bench.feed_contenders)
    call_s: float  # the whole call: queueing the jobs, serving, a burst worker's exit
    outputs: dict[int, list[int]]  # job index -> tokens
    hit_rate: float
    timeline: dict[str, float]
    recorded: Timeline  # the calls themselves, for the plots


def ragged_jobs(num: int, max_new: int) -> list[EngineRequest]:
    from producers.workload import trace_lengths

    rng = random.Random(3)
    lengths = trace_lengths()
    jobs = []
    for i in range(num):
        prompt_len, output_len = lengths[i % len(lengths)]
        prompt = [rng.randrange(VOCAB) for _ in range(max(1, min(prompt_len, LANES[-1])))]
        jobs.append(EngineRequest(i, prompt, max(1, min(output_len, max_new))))
    return jobs


def class_jobs(
    per_class: int, num_classes: int = NUM_CLASSES, prefix_tokens: int = PREFIX_TOKENS
) -> list[EngineRequest]:
    rng = random.Random(5)
    prefixes = [[rng.randrange(VOCAB) for _ in range(prefix_tokens)] for _ in range(num_classes)]
    classes = [c for c in range(num_classes) for _ in range(per_class)]
    rng.shuffle(classes)
    jobs = []
    for i, c in enumerate(classes):
        own = [rng.randrange(VOCAB) for _ in range(rng.randint(32, 96))]
        jobs.append(EngineRequest(i, prefixes[c] + own, 16, prefix_class=f"c{c}"))
    return jobs


def hit_rate(before: Any, after: Any) -> float:
    hits = after.prefix_hit_blocks - before.prefix_hit_blocks
    misses = after.prefix_miss_blocks - before.prefix_miss_blocks
    return hits / (hits + misses) if hits + misses else 0.0


Serve = Callable[[Timeline], Served]


def measured(host: EngineHost, name: str, serve: Serve, jobs: list[EngineRequest]) -> Run:
    num_jobs = len(jobs)
    assert host.call(lambda engine: engine.reset_prefix_cache()), "prefix cache not reset"
    before = host.call(lambda engine: engine.stats())
    # CPU seconds of the engine's thread: what the neighbours on a shared machine
    # cannot inflate the way they inflate the wall clock.
    cpu_before = host.call(lambda _: time.thread_time())
    timeline = Timeline()
    called = time.monotonic()
    served = serve(timeline)
    call_s = time.monotonic() - called
    engine_cpu_s = host.call(lambda _: time.thread_time()) - cpu_before
    after = host.call(lambda engine: engine.stats())
    max_running = host.call(lambda engine: engine.capacity.max_batch_size)
    figures = summarise(
        timeline, start=served.start, end=served.end, num_jobs=num_jobs, max_running=max_running
    )
    wall_s = served.end - served.start
    figures["num_steps"] = after.num_steps - before.num_steps
    figures["engine_cpu_s"] = round(engine_cpu_s, 3)
    if served.driver_cpu_s is not None:
        figures["worker_cpu_us_per_job"] = round(1e6 * served.driver_cpu_s / num_jobs)
    if served.claimed_at:
        waits = queue_waits(timeline, jobs, served.claimed_at)
        figures |= wait_figures(waits, passed_over(timeline, jobs))
    figures["ms_per_step"] = round(1000 * figures["busy_s"] / max(1, figures["num_steps"]), 2)
    return Run(name, wall_s, call_s, served.outputs, hit_rate(before, after), figures, timeline)


def contenders(
    workload: str, host: EngineHost, url: str, jobs: list[EngineRequest], variants: dict
) -> dict:
    """Name -> serve; ``variants``: more fabric contenders, name -> fabric() keywords."""
    table: dict[str, Serve] = {
        "fabric": lambda t: fabric(host, url, jobs, t),
        "direct FIFO": lambda t: direct(host, jobs, t),
    }
    for name, kw in variants.items():
        table[name] = lambda t, kw=kw: fabric(host, url, jobs, t, **kw)
    if workload == "ragged":
        table["naive queue"] = lambda t: naive(host, url, jobs, t)
        # The order a lane-by-lane reader hands the engine, without the fabric.
        by_lane = sorted(jobs, key=lambda j: (-lane_of(len(j.prompt)), j.request_id))
        table["direct lane-sorted"] = lambda t: direct(host, by_lane, t)
    else:
        by_class = sorted(jobs, key=lambda j: (j.prefix_class or "", j.request_id))
        table["direct class-sorted"] = lambda t: direct(host, by_class, t)
    return table


def bench(
    host: EngineHost,
    url: str,
    workload: str,
    jobs: list[EngineRequest],
    rounds: int,
    variants: dict | None = None,
    plots: dict[str, dict[str, Timeline]] | None = None,
) -> list:
    table = contenders(workload, host, url, jobs, variants or {})
    names = list(table)
    runs: dict[str, list[Run]] = {name: [] for name in names}
    direct(host, jobs, Timeline())  # warm-up, not measured: the first batches of new shapes compile
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            runs[name].append(measured(host, name, table[name], jobs))
    reference = runs["direct FIFO"][0].outputs
    num_new = sum(len(tokens) for tokens in reference.values())
    rows = []
    for name in names:
        best = min(runs[name], key=lambda run: run.wall_s)
        if plots is not None:
            plots.setdefault(workload, {})[name] = best.recorded
        rows.append(
            {
                "workload": workload,
                "contender": name,
                "jobs": len(jobs),
                "wall_s": round(best.wall_s, 3),
                "call_s": round(best.call_s, 3),
                "output_tok_s": round(num_new / best.wall_s, 1),
                "jobs_s": round(len(jobs) / best.wall_s, 2),
                "prefix_hit_rate": round(best.hit_rate, 3),
                "tokens_match": all(run.outputs == reference for run in runs[name]),
                "walls_s": [round(run.wall_s, 3) for run in runs[name]],
                **best.timeline,
            }
        )
    base = next(row for row in rows if row["contender"] == "direct FIFO")
    for row in rows:
        row["vs_direct_fifo"] = round(row["output_tok_s"] / base["output_tok_s"], 3)
    return rows


def lane_of(prompt_tokens: int) -> int:
    return next(lane for lane in LANES if prompt_tokens <= lane)


def build_model(out: Path) -> Path:
    model = out / "model"
    if not (model / "config.json").exists():
        command = [sys.executable, "-m", "fabric_worker", "engine", "make-model", "--out"]
        command += [str(model), "--size", "tiny128", "--vocab-size", str(VOCAB), "--seed", "0"]
        subprocess.run(command, check=True, cwd=ROOT, capture_output=True, timeout=600)
    return model


@click.command()
@click.option("--quick", is_flag=True, help="Fewer jobs and rounds: about two minutes.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Model and results.")
@click.option(
    "--workload",
    type=click.Choice(["both", "ragged", "classes", "arrivals"]),
    default="both",
    show_default=True,
)
@click.option("--rounds", type=int, default=None, help="Rounds per contender [2 quick, else 3].")
@click.option("--duration", type=float, default=None, help="Arrivals for S seconds [2 quick, 10].")
# build/ is ignored by git: a demo or quick run never rewrites the plots docs/ shows.
@click.option("--plot-dir", type=click.Path(path_type=Path), default=ROOT / "build" / "plots")
@click.option("--kv-tokens", type=int, default=None, help="The manifest's kv_cache_tokens.")
@click.option("--classes", "num_classes", type=int, default=NUM_CLASSES, show_default=True)
@click.option("--prefix-tokens", type=int, default=PREFIX_TOKENS, show_default=True)
@click.option("--per-class", type=int, default=None, help="Jobs per class [2 quick, else 6].")
@click.option("--with-proxy", is_flag=True, help="Also the fabric with a thread hop per call.")
@click.option("--with-lane-by-lane", is_flag=True, help="Also the fabric reading lane by lane.")
@click.option("--with-unshared", is_flag=True, help="Also each read-ahead, prefixes unshared.")
@click.option("--with-uncapped", is_flag=True, help="Also each fabric, max_in_engine lifted.")
@click.option("--age-bound", type=float, default=None, help="Also each read-ahead, age bound S.")
@click.option(
    "--read-ahead", type=int, multiple=True, help="Also the fabric reading N budgets ahead."
)
def main(
    quick: bool,
    out: Path | None,
    workload: str,
    rounds: int | None,
    duration: float | None,
    plot_dir: Path,
    kv_tokens: int | None,
    num_classes: int,
    prefix_tokens: int,
    per_class: int | None,
    with_proxy: bool,
    with_lane_by_lane: bool,
    with_unshared: bool,
    with_uncapped: bool,
    age_bound: float | None,
    read_ahead: tuple[int, ...],
) -> None:
    """Every contender on one engine; one manifest (kv_cache_tokens optionally set) for all."""
    from engines.manifest import parse_manifest
    from engines.vllm.engine import VllmEngine
    from fabric_worker.dev.redis_server import RedisServer

    out = out or Path(tempfile.mkdtemp(prefix="engine-feed-"))
    out.mkdir(parents=True, exist_ok=True)
    data = json.loads((MANIFESTS / "vllm-tiny-cpu.json").read_text())
    data["model"] = str(build_model(out))
    if kv_tokens is not None:
        data["kv_cache_tokens"] = kv_tokens
    manifest = parse_manifest(data, "vllm-tiny-cpu.json")
    rounds = rounds or (2 if quick else 3)
    variants: dict[str, dict] = {"fabric via proxy": {"hosted": False}} if with_proxy else {}
    if with_lane_by_lane:
        variants["fabric lane-by-lane"] = {"policy": {"arrival_order": False}}
    for depth in read_ahead:
        variants[f"fabric read-ahead {depth}"] = {"policy": {"read_ahead_budgets": depth}}
        if with_unshared:
            policy = {"read_ahead_budgets": depth, "share_prefixes": False}
            variants[f"fabric read-ahead {depth} unshared"] = {"policy": policy}
        if age_bound is not None:
            policy = {"read_ahead_budgets": depth, "class_max_wait_s": age_bound}
            variants[f"fabric read-ahead {depth} age {age_bound:g}s"] = {"policy": policy}
    if with_uncapped:  # how the fabric fed the engine before max_in_engine (section 7.4)
        for name, kw in [("fabric", {}), *variants.items()]:
            policy = {**kw.get("policy", {}), "max_in_engine": 10**6}
            variants[f"{name} uncapped"] = {**kw, "policy": policy}
    ragged = ragged_jobs(48 if quick else 192, 32 if quick else 64)
    classes = class_jobs(per_class or (2 if quick else 6), num_classes, prefix_tokens)
    started = time.monotonic()
    host = EngineHost(lambda: VllmEngine(manifest))
    print(f"engine started in {time.monotonic() - started:.1f} s: {manifest}", file=sys.stderr)
    try:
        with RedisServer(Path(tempfile.mkdtemp(prefix="redis-", dir=out))) as server:
            rows: list = []
            plots: dict[str, dict[str, Timeline]] = {}
            if workload in ("both", "ragged"):
                rows += bench(host, server.url, "ragged", ragged, rounds, variants, plots)
            if workload in ("both", "classes"):
                rows += bench(host, server.url, "classes", classes, rounds, variants, plots)
            if workload == "arrivals":
                rows += arrivals(host, server.url, ragged_jobs, quick, duration, rounds, plots)
    finally:
        host.close()
    (out / "engine_feed.json").write_text(json.dumps(rows, indent=2))
    for row in rows:
        print(json.dumps(row))
    print((arrivals_table if workload == "arrivals" else table)(rows))
    for name, timelines in plots.items():
        print(save_plot(plot_dir / f"engine_feed_{name}.png", f"engine_feed: {name}", timelines))


if __name__ == "__main__":
    main()
