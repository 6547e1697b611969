"""The fabric feeding a real engine (vLLM's CPU build) vs the engine fed directly.

One engine, started once, serves every contender in turn (bench.shared_engine),
its prefix cache emptied before each; one unmeasured direct run warms it up,
then rounds alternate the contenders' order and the best round of each counts.

- ragged: trace-shaped jobs (producers' trace sample, prompts and outputs capped):
  the fabric (a real worker, real redis-server) vs all jobs submitted to the engine
  at once in FIFO order (what ``LLM.generate`` does) vs the naive queue worker.
- classes: class-shared prompts (a long shared prefix per class plus a short own
  tail, interleaved): the fabric vs FIFO direct vs class-sorted direct (the oracle).

Every contender's outputs are checked token for token against the first direct run.

    .venv-vllm/bin/python -m bench.engine_feed [--quick] [--workload classes] [--out DIR]

``make demo-vllm`` is ``--quick --workload classes``: one engine start, then a
short fabric-vs-direct table.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import redis

from bench.common import MANIFESTS, ROOT
from bench.shared_engine import EngineHost, EngineProxy, run_direct
from engines.contract import EngineRequest

VOCAB = 1024
LANES = (64, 128, 256, 512, 1024)
NUM_CLASSES = 32
PREFIX_TOKENS = 768


@dataclass(frozen=True, slots=True)
class Run:
    contender: str
    wall_s: float
    outputs: dict[int, list[int]]  # job index -> tokens
    hit_rate: float


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


def class_jobs(per_class: int) -> list[EngineRequest]:
    rng = random.Random(5)
    prefixes = [[rng.randrange(VOCAB) for _ in range(PREFIX_TOKENS)] for _ in range(NUM_CLASSES)]
    classes = [c for c in range(NUM_CLASSES) for _ in range(per_class)]
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


def measured(host: EngineHost, name: str, serve: Callable[[], dict[int, list[int]]]) -> Run:
    assert host.call(lambda engine: engine.reset_prefix_cache()), "prefix cache not reset"
    before = host.call(lambda engine: engine.stats())
    started = time.monotonic()
    outputs = serve()
    wall_s = time.monotonic() - started
    return Run(name, wall_s, outputs, hit_rate(before, host.call(lambda engine: engine.stats())))


def direct(host: EngineHost, jobs: Sequence[EngineRequest]) -> dict[int, list[int]]:
    done = host.call(lambda engine: run_direct(engine, jobs))
    return {rid: out.tokens for rid, out in done.items()}


def fabric(host: EngineHost, url: str, jobs: Sequence[EngineRequest]) -> dict[int, list[int]]:
    """Submit every job, then a burst worker on the shared engine serves them all."""
    from fabric_worker.broker.connection import connect_async
    from fabric_worker.broker.namespace import init_namespace
    from fabric_worker.broker.streams import Broker
    from fabric_worker.wire.entries import decode_result
    from fabric_worker.wire.fleet_config import FleetConfig
    from fabric_worker.wire.keys import Keys
    from fabric_worker.worker.options import ExitCode, WorkerOptions
    from fabric_worker.worker.service import Worker
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

    async def serve() -> ExitCode:
        async_client = connect_async(url)
        options = WorkerOptions(consumer="feed", burst=True, log_every_s=3600.0)
        broker = Broker(async_client, keys, options.consumer, retention_s=600)
        worker = Worker(broker, config, lambda: EngineProxy(host), options, log=lambda _: None)
        try:
            return await worker.run()
        finally:
            await async_client.aclose()

    code = asyncio.run(serve())
    if code is not ExitCode.OK:
        raise RuntimeError(f"fabric worker exited {code}")
    outputs = {}
    for lane in LANES:
        for _, fields in client.xrange(keys.results(lane)):
            result = decode_result(fields)
            outputs[int(result.id)] = list(result.tokens)
    return outputs


def naive(host: EngineHost, url: str, jobs: Sequence[EngineRequest]) -> dict[int, list[int]]:
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
    host.call(lambda engine: loop.serve_engine(client, engine, len(jobs)))
    outputs = {}
    for _, fields in client.xrange(loop.RESULTS):
        tokens = array("I")
        tokens.frombytes(fields[b"t"])
        outputs[int(orjson.loads(fields[b"h"])["id"])] = list(tokens)
    return outputs


def contenders(workload: str, host: EngineHost, url: str, jobs: list[EngineRequest]) -> dict:
    table: dict[str, Callable[[], dict[int, list[int]]]] = {
        "fabric": lambda: fabric(host, url, jobs),
        "direct FIFO": lambda: direct(host, jobs),
    }
    if workload == "ragged":
        table["naive queue"] = lambda: naive(host, url, jobs)
    else:
        by_class = sorted(jobs, key=lambda j: (j.prefix_class or "", j.request_id))
        table["direct class-sorted"] = lambda: direct(host, by_class)
    return table


def bench(
    host: EngineHost, url: str, workload: str, jobs: list[EngineRequest], rounds: int
) -> list:
    table = contenders(workload, host, url, jobs)
    names = list(table)
    runs: dict[str, list[Run]] = {name: [] for name in names}
    direct(host, jobs)  # warm-up, not measured: the first batches of new shapes compile
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            runs[name].append(measured(host, name, table[name]))
    reference = runs["direct FIFO"][0].outputs
    num_new = sum(len(tokens) for tokens in reference.values())
    rows = []
    for name in names:
        best = min(runs[name], key=lambda run: run.wall_s)
        rows.append(
            {
                "workload": workload,
                "contender": name,
                "jobs": len(jobs),
                "wall_s": round(best.wall_s, 3),
                "output_tok_s": round(num_new / best.wall_s, 1),
                "jobs_s": round(len(jobs) / best.wall_s, 2),
                "prefix_hit_rate": round(best.hit_rate, 3),
                "tokens_match": all(run.outputs == reference for run in runs[name]),
            }
        )
    base = next(row for row in rows if row["contender"] == "direct FIFO")
    for row in rows:
        row["vs_direct_fifo"] = round(row["output_tok_s"] / base["output_tok_s"], 3)
    return rows


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
    type=click.Choice(["both", "ragged", "classes"]),
    default="both",
    show_default=True,
)
def main(quick: bool, out: Path | None, workload: str) -> None:
    from engines.manifest import parse_manifest
    from engines.vllm.engine import VllmEngine
    from fabric_worker.dev.redis_server import RedisServer

    out = out or Path(tempfile.mkdtemp(prefix="engine-feed-"))
    out.mkdir(parents=True, exist_ok=True)
    data = json.loads((MANIFESTS / "vllm-tiny-cpu.json").read_text())
    data["model"] = str(build_model(out))
    manifest = parse_manifest(data, "vllm-tiny-cpu.json")
    rounds = 2 if quick else 3
    ragged = ragged_jobs(48 if quick else 192, 32 if quick else 64)
    classes = class_jobs(2 if quick else 6)
    started = time.monotonic()
    host = EngineHost(lambda: VllmEngine(manifest))
    print(f"engine started in {time.monotonic() - started:.1f} s", file=sys.stderr)
    try:
        with RedisServer(Path(tempfile.mkdtemp(prefix="redis-", dir=out))) as server:
            rows = []
            if workload in ("both", "ragged"):
                rows += bench(host, server.url, "ragged", ragged, rounds)
            if workload in ("both", "classes"):
                rows += bench(host, server.url, "classes", classes, rounds)
    finally:
        host.close()
    (out / "engine_feed.json").write_text(json.dumps(rows, indent=2))
    for row in rows:
        print(json.dumps(row))
    print(table(rows))


def table(rows: list[dict]) -> str:
    """The rows as a fixed-width table, one line per contender."""
    head = f"{'workload':<8} {'contender':<20} {'jobs':>5} {'tok/s':>8} {'jobs/s':>7} "
    lines = [head + f"{'hit rate':>8} {'vs FIFO':>7} tokens"]
    for r in rows:
        lines.append(
            f"{r['workload']:<8} {r['contender']:<20} {r['jobs']:>5} {r['output_tok_s']:>8.0f} "
            f"{r['jobs_s']:>7.1f} {r['prefix_hit_rate']:>8.2f} {r['vs_direct_fifo']:>7.2f} "
            + ("match" if r["tokens_match"] else "DIFFER")
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
