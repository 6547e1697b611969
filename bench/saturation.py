"""Saturation: can the fabric keep a simulated H200 busy on a real trace, against a naive worker?

    python -m bench.saturation [--jobs 600] [--variants steady,bursty]

Input: the first ``--jobs`` requests of the Azure conversation trace (prompt and output
lengths as given, the output length as max_new_tokens), arriving with the trace's own
spacing compressed to 1.2x the engine's capacity (``steady``), and the same arrivals
squeezed into the first 2 s of every 5 s (``bursty``: the same mean rate, 3x during a
burst, idle gaps between).

Capacity is the in-flight engine's own throughput on these jobs when it is handed all of
them at once (measured first, on a virtual clock, in-process): the most this GPU does on
this mix. Both engine modes get the same arrivals, so the static engine, which does less,
is overloaded more.

Each run: a fresh private redis-server, a worker process (the fabric's, bench.fabric_child
with the default fleet config and sim-h200.json; or the naive one, bench.naive), a
producer process that submits each request at its arrival time, and the simulated H200 on
the WALL clock. The worker is the thing measured, and its time is real: Redis round trips,
decoding, admission, the GIL. A virtual clock would move only when the engine sleeps, so
an engine starved by a slow worker would look busy; the whole pipeline cannot run on it.
Time is compressed instead: arrivals come as fast as 1.2x what this engine does, and a run
takes the jobs' real GPU time.

Reported per run, from the engine's counters and each job's result header:
- busy: engine busy seconds / the time work was outstanding (the union of every job's
  [submitted, finished] interval; with the steady arrivals that is the whole run);
- padding waste: padded prompt tokens and idle decode slots / all computed token slots;
- output tokens/s: generated tokens / (last finish - first submit);
- p50, p99 job latency: finished_at - submitted_at.

For the fabric's runs the engine is wrapped in bench.gaps.GapEngine, which splits the rest
of the time: inside poll() but not iterating (the simulator's own Python; the sleep
overrunning and GIL waits after it), between polls while holding work (the engine
thread's loop), and holding nothing while jobs were outstanding (the worker had not
handed them over).

Last, bench.bounds replays the same jobs straight into the engine (virtual clock): the
most any worker could reach in each mode, and how static padding moves with grouping.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import redis

from bench import bounds
from bench.common import (
    MANIFESTS,
    goal_line,
    machine_line,
    percentile,
    ratio,
    read_json_line,
    save,
    table,
)
from bench.common import (
    child as start_child,
)
from bench.naive import GROUP as NAIVE_GROUP
from bench.naive import RESULTS as NAIVE_RESULTS
from bench.naive import STREAM as NAIVE_STREAM
from bench.trace import TraceRow, bursty_schedule, load_trace, prompt_tokens, steady_schedule
from engines.clock import VirtualClock
from engines.contract import EngineRequest
from engines.manifest import load_manifest
from engines.sim import SimEngine
from fabric_worker.broker.namespace import init_namespace
from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.wire.entries import decode_result
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import Keys

MANIFEST = MANIFESTS / "sim-h200.json"
LOAD = 1.2
NAMESPACE = "bench-sat"
MODES = ("static", "inflight")


def capacity_req_per_s(rows: list[TraceRow]) -> float:
    """Requests/s of the in-flight engine given every job at once, on a virtual clock."""
    clock = VirtualClock()
    engine = SimEngine(load_manifest(MANIFEST), clock=clock, batching="inflight")
    engine.submit(
        [
            EngineRequest(i + 1, prompt_tokens(r.index, r.prompt_tokens), r.output_tokens)
            for i, r in enumerate(rows)
        ]
    )
    num_done = 0
    while num_done < len(rows):
        num_done += len(engine.poll(1.0))
    return len(rows) / clock.now_s()


# --- producer (a child process) ------------------------------------------------------


def produce(spec_path: str) -> None:
    """Submit each job at its arrival time; the spec is a JSON file written by the parent."""
    spec = json.loads(Path(spec_path).read_text())
    client = redis.Redis.from_url(spec["url"])
    arrivals = spec["arrivals"]  # [offset_s, index, prompt_tokens, output_tokens]
    tokens = [prompt_tokens(index, p) for _, index, p, _ in arrivals]
    if spec["target"] == "fabric":
        from producers import FabricClient, Job

        producer = FabricClient(client, spec["namespace"])
        producer.config  # noqa: B018 - load the fleet config before the clock starts
        jobs = [
            Job(tokens=t, max_new_tokens=o, id=f"r{index}")
            for t, (_, index, _, o) in zip(tokens, arrivals, strict=True)
        ]

        def send(first: int, last: int) -> None:
            producer.submit(jobs[first:last])
    else:

        def send(first: int, last: int) -> None:
            pipe = client.pipeline(transaction=False)
            now = time.time()
            for k in range(first, last):
                _, index, _, out = arrivals[k]
                header = {"v": 1, "id": f"r{index}", "max_new_tokens": out, "submitted_at": now}
                pipe.xadd(NAIVE_STREAM, {"h": orjson.dumps(header), "t": tokens[k].tobytes()})
            pipe.execute()

    start = time.monotonic() + (spec["start_at"] - time.time())
    k = 0
    while k < len(arrivals):
        now = time.monotonic() - start
        due = arrivals[k][0]
        if due > now:
            time.sleep(min(due - now, 0.05))
            continue
        last = k
        while last < len(arrivals) and arrivals[last][0] <= now:
            last += 1
        send(k, last)
        k = last


# --- one run -------------------------------------------------------------------------


def run_one(
    server: RedisServer,
    contender: str,
    mode: str,
    rows: list[TraceRow],
    offsets: list[float],
    log_dir: Path,
) -> dict[str, Any]:
    client = redis.Redis.from_url(server.url)
    client.flushall()
    expect = len(rows)
    is_fabric = contender.startswith("fabric")
    if is_fabric:
        keys = Keys(NAMESPACE)
        config = init_namespace(client, keys, FleetConfig()).config
        worker_args = ["--url", server.url, "--namespace", NAMESPACE, "--manifest", str(MANIFEST)]
        worker_args += ["--expect", str(expect), "--batching", mode]
        worker_args.append("--gaps")
        if contender == "fabric-proposed":
            worker_args.append("--proposed")
        module = "bench.fabric_child"
    else:
        client.xgroup_create(NAIVE_STREAM, NAIVE_GROUP, id="0", mkstream=True)
        worker_args = ["--url", server.url, "--manifest", str(MANIFEST)]
        worker_args += ["--expect", str(expect), "--batching", mode]
        module = "bench.naive"
    log = (log_dir / f"{contender}-{mode}.log").open("wb")
    worker = start_child(module, *worker_args, stdout=subprocess.PIPE, stderr=log)
    assert worker.stdout is not None
    line = worker.stdout.readline()
    if not line.startswith(b"READY"):
        raise RuntimeError(f"{contender} worker did not start: {line!r}; see {log.name}")
    spec = {
        "url": server.url,
        "target": "fabric" if is_fabric else "naive",
        "namespace": NAMESPACE,
        "start_at": time.time() + 0.5,
        "arrivals": [
            [t, r.index, r.prompt_tokens, r.output_tokens]
            for t, r in zip(offsets, rows, strict=True)
        ],
    }
    spec_path = log_dir / f"{contender}-{mode}.spec.json"
    spec_path.write_text(json.dumps(spec))
    producer = start_child("bench.saturation", "--produce", str(spec_path), stderr=log)
    out, _ = worker.communicate(timeout=3600)
    if producer.wait(60) != 0:
        raise RuntimeError(f"producer failed; see {log.name}")
    if worker.returncode != 0:
        raise RuntimeError(f"{contender} worker exited {worker.returncode}; see {log.name}")
    result = read_json_line(out)
    if is_fabric:
        spans = _fabric_spans(client, Keys(NAMESPACE), config.lanes)
    else:
        spans = _naive_spans(client)
    client.close()
    return _metrics(contender, mode, result, spans, expect)


def _fabric_spans(client: redis.Redis, keys: Keys, lanes: tuple[int, ...]) -> dict[str, tuple]:
    spans = {}
    for lane in lanes:
        for _, fields in client.xrange(keys.results(lane)):
            r = decode_result(fields)
            spans[r.id] = (r.submitted_at, r.finished_at)
    return spans


def _naive_spans(client: redis.Redis) -> dict[str, tuple]:
    spans = {}
    for _, fields in client.xrange(NAIVE_RESULTS):
        h = orjson.loads(fields[b"h"])
        spans[h["id"]] = (h["submitted_at"], h["finished_at"])
    return spans


def outstanding_s(spans: list[tuple[float, float]]) -> float:
    """Length of the union of [submitted, finished] intervals: when work existed."""
    total = 0.0
    end = float("-inf")
    start = end
    for a, b in sorted(spans):
        if a > end:
            total += max(0.0, end - start)
            start, end = a, b
        else:
            end = max(end, b)
    return total + max(0.0, end - start)


def _metrics(contender, mode, result, spans, expect) -> dict[str, Any]:
    engine = result["engine"]
    intervals = list(spans.values())
    latencies = [b - a for a, b in intervals]
    first = min(a for a, _ in intervals)
    last = max(b for _, b in intervals)
    makespan = last - first
    busy_window = outstanding_s(intervals)
    gaps = result.get("gaps")
    idle = {}
    if gaps is not None:
        held_s = gaps["in_poll_s"] + gaps["outside_held_s"]
        not_busy = gaps["in_poll_s"] - engine["busy_s"]
        idle = {
            "sim_python": ratio(gaps["in_poll_cpu_s"], busy_window),
            "sleep_overrun_gil": ratio(not_busy - gaps["in_poll_cpu_s"], busy_window),
            "between_polls_holding": ratio(gaps["outside_held_s"], busy_window),
            "empty_with_work_outstanding": ratio(max(0.0, busy_window - held_s), busy_window),
        }
    return {
        "idle": idle,
        "contender": contender,
        "mode": mode,
        "jobs": expect,
        "results": len(spans),
        "busy": ratio(engine["busy_s"], busy_window),
        "padding": ratio(engine["padded_tokens"], engine["computed_tokens"]),
        "tokens_per_s": ratio(engine["generated_tokens"], makespan),
        "jobs_per_s": ratio(len(spans), makespan),
        "p50_s": percentile(latencies, 0.5),
        "p99_s": percentile(latencies, 0.99),
        "makespan_s": makespan,
        "outstanding_s": busy_window,
        "engine": engine,
    }


IDLE_KEYS = (
    "sim_python",
    "sleep_overrun_gil",
    "between_polls_holding",
    "empty_with_work_outstanding",
)


def _times(value: float) -> str:
    return "-" if value != value else f"{value:.2f}x"


# --- main ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--variants", default="steady,bursty")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument(
        "--proposed-variants",
        default="",
        help="variants that also run the fabric worker with bench.proposed's fix",
    )
    parser.add_argument("--produce", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.produce:
        produce(args.produce)
        return {}
    manifest = load_manifest(MANIFEST)
    rows = load_trace(args.jobs, max_seq_len=manifest.max_seq_len)
    capacity = capacity_req_per_s(rows)
    rate = LOAD * capacity
    print(machine_line(), flush=True)
    print(
        f"saturation: {len(rows)} trace requests; in-flight capacity {capacity:.1f} req/s; "
        f"arrivals at {rate:.1f} req/s ({LOAD}x)",
        flush=True,
    )
    runs: list[dict[str, Any]] = []
    log_dir = Path(tempfile.mkdtemp(prefix="bench-saturation-"))
    with RedisServer() as server:
        for variant in args.variants.split(","):
            schedule = steady_schedule if variant == "steady" else bursty_schedule
            offsets = schedule(rows, rate)
            contenders = ["fabric", "naive"]
            if variant in args.proposed_variants.split(","):
                contenders.append("fabric-proposed")
            for mode in args.modes.split(","):
                for contender in contenders:
                    print(f"saturation: {variant} {mode} {contender} ...", flush=True)
                    started = time.monotonic()
                    run = run_one(server, contender, mode, rows, offsets, log_dir)
                    run["variant"] = variant
                    run["wall_s"] = time.monotonic() - started
                    runs.append(run)
                    print(
                        f"  busy {run['busy']:.3f} padding {run['padding']:.4f} "
                        f"tokens/s {run['tokens_per_s']:,.0f} p50 {run['p50_s']:.1f} s "
                        f"p99 {run['p99_s']:.1f} s ({run['wall_s']:.0f} s)",
                        flush=True,
                    )
    headers = ["variant", "mode", "worker", "busy", "padding waste", "output tok/s", "jobs/s"]
    headers += ["p50 s", "p99 s", "makespan s"]
    out_rows = [
        [
            r["variant"],
            r["mode"],
            r["contender"],
            f"{r['busy']:.3f}",
            f"{r['padding']:.4f}",
            r["tokens_per_s"],
            r["jobs_per_s"],
            r["p50_s"],
            r["p99_s"],
            r["makespan_s"],
        ]
        for r in runs
    ]
    idle_rows = [
        [r["variant"], r["mode"], r["contender"], f"{r['busy']:.4f}"]
        + [f"{r['idle'][k]:.4f}" for k in IDLE_KEYS]
        for r in runs
        if r["idle"]
    ]
    ratio_rows = []
    goals = []
    for variant in args.variants.split(","):
        for mode in args.modes.split(","):
            pair = {
                r["contender"]: r for r in runs if r["variant"] == variant and r["mode"] == mode
            }
            nai = pair["naive"]
            for name in ("fabric", "fabric-proposed"):
                if name not in pair:
                    continue
                fab = pair[name]
                ratio_rows.append(
                    [
                        variant,
                        mode,
                        f"{name} / naive",
                        *(
                            _times(ratio(fab[key], nai[key]))
                            for key in ("tokens_per_s", "busy", "padding", "p50_s", "p99_s")
                        ),
                    ]
                )
                tag = f"{name}, {variant} {mode}"
                goals.append(goal_line(f"busy ({tag})", fab["busy"], 0.97))
                goals.append(
                    goal_line(
                        f"throughput vs naive ({tag})",
                        ratio(fab["tokens_per_s"], nai["tokens_per_s"]),
                        2.0,
                    )
                )
                if mode == "static":
                    goals.append(goal_line(f"padding ({tag})", fab["padding"], 0.005, at_most=True))
    print()
    print(
        f"bench.saturation: {len(rows)} Azure-trace jobs, sim-h200 on the wall clock, "
        f"arrivals {rate:.1f} req/s = {LOAD}x in-flight capacity ({capacity:.1f} req/s)"
    )
    print(machine_line())
    print(table(headers, out_rows))
    print()
    print(table(["variant", "mode", "ratio", "tok/s", "busy", "padding", "p50", "p99"], ratio_rows))
    print()
    print("where the fabric engine's time went, as fractions of the time work was outstanding:")
    headers = ["variant", "mode", "worker", "busy", "poll: sim Python", "poll: sleep+GIL"]
    print(table([*headers, "between polls", "engine empty"], idle_rows))
    for line in goals:
        print(line)
    # The engine's own bounds on the same jobs: what any worker could reach (bench.bounds).
    engine_bounds = bounds.main(["--jobs", str(args.jobs)])
    result = {
        "jobs": len(rows),
        "capacity_req_per_s": capacity,
        "arrival_req_per_s": rate,
        "runs": runs,
        "goals": goals,
        "bounds": engine_bounds,
    }
    save("saturation", result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
