"""Supply-chain throughput: the fabric on a zero-cost engine vs a bare Redis loop vs peers.

    python -m bench.supply [--jobs 200000] [--peer-jobs 20000] [--profile] [--tree PATH]

Contenders, each on a freshly flushed private redis-server, one after the other:

- fabric: ``--jobs`` jobs of 256-token prompts (max_new_tokens 16) submitted with the
  producer client (validation, the submit script: dedupe, backlog cap, XADD, INCRBY), then
  served by one ``fabric worker`` process on the ``null`` engine (null.json) in burst mode:
  claim, admission, engine thread, the complete script (result XADD, state, XACK, XDEL,
  backlog), exactly one result per job (checked).
- ceiling: the same Redis work and nothing else, from a bare redis-py loop: XADD of the
  packed job in pipelined chunks of 500, then one consumer process doing XREADGROUP
  COUNT 500 and, per chunk, one pipeline of 500 result XADDs plus one XACK.
- peers: Dramatiq, Celery (prefork and solo) and arq, ``--peer-jobs`` no-op jobs each,
  one worker process (bench/peers/run_peer.py has the settings and why), installed in
  their own venvs from bench/requirements*.txt.

fabric and ceiling run ``--repeat`` times, interleaved, and the best of each is kept:
the machine is shared, and the best run is the one least disturbed. Every drain is timed
the same way (bench.common.measure_drain): from the first poll that
sees a job taken to the first that sees none left, polling every 5 ms. Submit is timed
separately. ``--profile`` repeats the fabric worker run under py-spy and summarises
where its time goes. ``--tree PATH`` adds the worker of another checkout of this
repository (main's, say) as a contender, interleaved with this one's.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import re
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import orjson
import redis

from bench.common import (
    MANIFESTS,
    RESULTS,
    ROOT,
    child,
    goal_line,
    machine_line,
    measure_drain,
    ratio,
    read_json_line,
    save,
    stop,
    table,
)
from bench.venvs import ARQ, PEERS
from fabric_worker.broker.namespace import init_namespace
from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import Keys
from producers import FabricClient, Job

PROMPT_TOKENS = 256
MAX_NEW_TOKENS = 16
SUBMIT_CHUNK = 10_000  # what `fabric submit` sends per round
CEILING_CHUNK = 500
NAMESPACE = "bench-supply"
PEERS_RUN = ("dramatiq", "celery-prefork", "celery-solo", "arq")


def prompts(num_jobs: int, seed: int = 0) -> list[array[int]]:
    """Deterministic 256-token prompts (ids below 65,536, inside any vocabulary here)."""
    rng = random.Random(seed)
    return [array("I", array("H", rng.randbytes(2 * PROMPT_TOKENS))) for _ in range(num_jobs)]


# --- fabric ----------------------------------------------------------------------------


def run_fabric(
    url: str,
    tokens: list[array[int]],
    redis_pid: int,
    profile_to: Path | None = None,
    tree: Path = ROOT,
    profile_rate: int = 250,
) -> dict:
    """Submit the jobs, serve them with one worker run from ``tree`` (a checkout of
    this repository; another one's worker is a contender), check exactly once."""
    client = redis.Redis.from_url(url)
    client.flushall()
    keys = Keys(NAMESPACE)
    config = init_namespace(client, keys, FleetConfig()).config
    lane = config.lane_for(PROMPT_TOKENS)
    assert lane is not None
    jobs = [Job(tokens=t, max_new_tokens=MAX_NEW_TOKENS, id=f"j{i}") for i, t in enumerate(tokens)]
    producer = FabricClient(client, NAMESPACE)
    started = time.monotonic()
    for i in range(0, len(jobs), SUBMIT_CHUNK):
        report = producer.submit(jobs[i : i + SUBMIT_CHUNK])
        assert report.num_submitted == len(jobs[i : i + SUBMIT_CHUNK]), report
    submit_s = time.monotonic() - started
    command = [
        "--redis-url",
        url,
        "--namespace",
        NAMESPACE,
        "worker",
        "--manifest",
        str(MANIFESTS / "null.json"),
        "--burst",
        "--log-every-s",
        "3600",
    ]
    prefix: list[str] = []
    if profile_to is not None:
        prefix = [str(PEERS.bin("py-spy")), "record", "--rate", str(profile_rate)]
        prefix += ["--format", "raw"]
        prefix += ["--output", str(profile_to), "--threads", "--gil", "--nonblocking", "--"]
    worker = subprocess.Popen(
        [*prefix, sys.executable, "-m", "fabric_worker", *command],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL if profile_to is not None else None,
    )
    results_key = keys.results(lane)
    num_jobs = len(jobs)
    try:
        pids = {"redis": redis_pid} | ({"worker": worker.pid} if profile_to is None else {})
        drain = measure_drain(
            lambda: num_jobs - client.xlen(results_key), num_jobs, worker, 900, pids=pids
        )
        exit_code = worker.wait(60)
    finally:
        stop(worker)
    left_in_stream = client.xlen(keys.jobs(lane))
    ids = _result_ids(client, results_key)
    exactly_once = len(ids) == num_jobs and len(set(ids)) == num_jobs and left_in_stream == 0
    client.close()
    return {
        "name": "fabric",
        "jobs": num_jobs,
        "submit_s": submit_s,
        "submit_jobs_per_s": num_jobs / submit_s,
        "exit_code": exit_code,
        "exactly_once": exactly_once,
        **drain,
    }


def _result_ids(client: redis.Redis, key: str) -> list[str]:
    ids: list[str] = []
    last = "-"
    while True:
        entries = client.xrange(key, min=last, count=10_000)
        if last != "-":
            entries = entries[1:]
        if not entries:
            return ids
        ids += [orjson.loads(fields[b"h"])["id"] for _, fields in entries]
        last = entries[-1][0].decode()


# --- ceiling ---------------------------------------------------------------------------

CEILING_STREAM = "ceiling:jobs"
CEILING_RESULTS = "ceiling:results"
CEILING_GROUP = "g"


def ceiling_submit(client: redis.Redis, tokens: list[array[int]]) -> float:
    """Seconds the bare redis-py loop takes to XADD every job: the submit ceiling."""
    now = time.time()
    started = time.monotonic()
    for start in range(0, len(tokens), CEILING_CHUNK):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(start + CEILING_CHUNK, len(tokens))):
            header = {"v": 1, "id": f"j{i}", "max_new_tokens": MAX_NEW_TOKENS}
            header |= {"class": None, "end_id": None, "submitted_at": now}
            pipe.xadd(CEILING_STREAM, {"h": orjson.dumps(header), "t": tokens[i].tobytes()})
        pipe.execute()
    return time.monotonic() - started


def run_ceiling(url: str, tokens: list[array[int]], redis_pid: int) -> dict:
    client = redis.Redis.from_url(url)
    client.flushall()
    client.xgroup_create(CEILING_STREAM, CEILING_GROUP, id="0", mkstream=True)
    submit_s = ceiling_submit(client, tokens)
    num_jobs = len(tokens)
    consumer = child(
        "bench.supply", "--ceiling-consumer", url, str(num_jobs), stdout=subprocess.DEVNULL
    )
    try:
        drain = measure_drain(
            lambda: num_jobs - client.xlen(CEILING_RESULTS),
            num_jobs,
            consumer,
            900,
            pids={"redis": redis_pid, "worker": consumer.pid},
        )
        consumer.wait(30)
    finally:
        stop(consumer)
    client.close()
    return {
        "name": "ceiling",
        "jobs": num_jobs,
        "submit_s": submit_s,
        "submit_jobs_per_s": num_jobs / submit_s,
        **drain,
    }


def ceiling_consumer(url: str, num_jobs: int) -> None:
    """XREADGROUP COUNT 500; per chunk, one round trip: 500 result XADDs and one XACK."""
    client = redis.Redis.from_url(url)
    # A result the size of the fabric's: a ~200-byte header and 16 packed tokens.
    header = b'{"v":1,"finish_reason":"length","deliveries":1,"worker":"ceiling-0",' + (
        b'"submitted_at":1700000000.0,"started_at":1700000000.0,"finished_at":1700000000.0,'
        b'"error":null,"id":"'
    )
    result_tokens = array("I", range(MAX_NEW_TOKENS)).tobytes()
    done = 0
    while done < num_jobs:
        reply = client.xreadgroup(
            CEILING_GROUP, "c", {CEILING_STREAM: ">"}, count=CEILING_CHUNK, block=100
        )
        if not reply:
            continue
        entries = reply[0][1]
        pipe = client.pipeline(transaction=False)
        for entry_id, _fields in entries:
            pipe.xadd(CEILING_RESULTS, {"h": header + entry_id + b'"}', "t": result_tokens})
        pipe.xack(CEILING_STREAM, CEILING_GROUP, *[entry_id for entry_id, _ in entries])
        pipe.execute()
        done += len(entries)


# --- peers -----------------------------------------------------------------------------


def run_peer(url: str, peer: str, num_jobs: int, redis_pid: int) -> dict:
    venv = ARQ if peer == "arq" else PEERS
    python = venv.ensure()
    args = ["--url", url, "--jobs", str(num_jobs), "--redis-pid", str(redis_pid)]
    proc = subprocess.run(
        [str(python), "-m", "bench.peers.run_peer", peer, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=1200,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{peer} failed ({proc.returncode}): {proc.stderr[-2000:]!r}")
    result = read_json_line(proc.stdout)
    result["name"] = peer
    result["submit_s"] = result.pop("enqueue_s")
    result["submit_jobs_per_s"] = result.pop("enqueue_jobs_per_s")
    return result


# --- profile summary -------------------------------------------------------------------


def summarise_profile(path: Path, top: int = 14) -> list[tuple[str, int, float]]:
    """(stage, samples, share of the serving samples) from py-spy raw output, in
    bench.cpu_per_job's stages, then the functions with the most self time."""
    from bench.cpu_per_job import OTHER, STAGES, serving_samples, stage_of  # it imports us

    stages: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    total = 0
    for frames, count in serving_samples(path):
        total += count
        stages[stage_of(frames)] += count
        functions[_leaf(frames)] += count
    names = [*(name for name, _ in STAGES), OTHER]
    rows = [(name, stages[name], ratio(stages[name], total)) for name in names]
    rows.append(("-- top self-time functions --", 0, float("nan")))
    rows += [(name, n, ratio(n, total)) for name, n in functions.most_common(top)]
    return rows


def _leaf(frames: list[str]) -> str:
    leaf = frames[-1]
    match = re.match(r"(\S+) \(([^:]+)", leaf)
    if not match:
        return leaf[:80]
    func, file = match.groups()
    parts = Path(file).parts
    return f"{func} ({'/'.join(parts[-2:])})"


def _per_job_us(row: dict, name: str) -> str:
    """CPU microseconds per job served, of the worker or of redis-server, while serving."""
    cpu = row.get("cpu_s", {}).get(name)
    if cpu is None:
        return "-"
    return f"{cpu / (row['jobs_per_s'] * row['serve_s']) * 1e6:.0f}"


# --- main ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--peer-jobs", type=int, default=20_000)
    parser.add_argument("--peers", default=",".join(PEERS_RUN), help="comma list, or none")
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="fabric and ceiling runs, interleaved; the best of each is reported",
    )
    parser.add_argument("--profile", action="store_true", help="profile the fabric worker")
    parser.add_argument(
        "--tree", action="append", default=[], help="also run the worker of this checkout"
    )
    parser.add_argument("--ceiling-consumer", nargs=2, metavar=("URL", "JOBS"), help="internal")
    args = parser.parse_args(argv)
    if args.ceiling_consumer:
        ceiling_consumer(args.ceiling_consumer[0], int(args.ceiling_consumer[1]))
        return {}
    peers = [p for p in args.peers.split(",") if p and p != "none"]
    for venv in {ARQ if p == "arq" else PEERS for p in peers} | (
        {PEERS} if args.profile else set()
    ):
        venv.ensure()
    print(machine_line(), flush=True)
    tokens = prompts(args.jobs)
    rows: list[dict] = []
    # Other checkouts' workers as contenders ("fabric@<dir>"), interleaved with ours.
    trees = {f"fabric@{Path(t).resolve().name}": Path(t).resolve() for t in args.tree}
    tries: dict[str, list[dict]] = {"fabric": [], **{n: [] for n in trees}, "ceiling": []}
    with RedisServer() as server:
        assert server.process is not None
        redis_pid = server.process.pid
        for attempt in range(args.repeat):
            for run in tries:
                print(f"supply: running {run} ({attempt + 1}/{args.repeat}) ...", flush=True)
                if run == "ceiling":
                    tried = run_ceiling(server.url, tokens, redis_pid)
                else:
                    tried = run_fabric(server.url, tokens, redis_pid, tree=trees.get(run, ROOT))
                    tried["name"] = run
                tries[run].append(tried)
                print(f"  serve {tries[run][-1]['jobs_per_s']:,.0f} jobs/s", flush=True)
        for results in tries.values():
            best = max(results, key=lambda r: r["jobs_per_s"])
            best["tries_jobs_per_s"] = [r["jobs_per_s"] for r in results]
            best["exactly_once"] = all(r.get("exactly_once", True) for r in results)
            rows.append(best)
        for run in peers:
            print(f"supply: running {run} ...", flush=True)
            rows.append(run_peer(server.url, run, args.peer_jobs, redis_pid))
        profile_rows = None
        if args.profile:
            print("supply: profiling the fabric worker under py-spy ...", flush=True)
            RESULTS.mkdir(exist_ok=True)
            raw = RESULTS / "supply-worker.pyspy.txt"
            profiled = run_fabric(server.url, tokens, redis_pid, profile_to=raw)
            profile_rows = summarise_profile(raw)
    by_name = {r["name"]: r for r in rows}
    fabric, ceiling = by_name["fabric"], by_name["ceiling"]
    peer_rows = [r for r in rows if r["name"] in peers]
    fastest = max(peer_rows, key=lambda r: r["jobs_per_s"], default=None)
    headers = ["contender", "jobs", "submit jobs/s", "serve jobs/s", "end-to-end jobs/s"]
    headers += ["serve vs fabric", "worker CPU us/job", "redis CPU us/job", "settings"]
    out_rows = []
    for r in rows:
        e2e = r["jobs"] / (r["jobs"] / r["submit_jobs_per_s"] + r["serve_s"])
        r["end_to_end_jobs_per_s"] = e2e
        settings = r.get("settings", "")
        if r["name"].startswith("fabric"):
            settings = "1 worker process, null engine, burst; producer client, chunks of 10k"
        elif r["name"] == "ceiling":
            settings = "redis-py (hiredis), pipelines of 500, 1 consumer process"
        out_rows.append(
            [
                r["name"],
                r["jobs"],
                r["submit_jobs_per_s"],
                r["jobs_per_s"],
                e2e,
                f"{ratio(r['jobs_per_s'], fabric['jobs_per_s']):.3f}x",
                *(_per_job_us(r, name) for name in ("worker", "redis")),
                settings,
            ]
        )
    print()
    print(
        f"bench.supply: {args.jobs:,} jobs of {PROMPT_TOKENS}-token prompts "
        f"(fabric and ceiling: best of {args.repeat}, interleaved; "
        f"{args.peer_jobs:,} no-op jobs per peer)"
    )
    print(machine_line())
    print(table(headers, out_rows))
    summary = {
        "fabric_vs_ceiling_serve": ratio(fabric["jobs_per_s"], ceiling["jobs_per_s"]),
        "fabric_vs_ceiling_submit": ratio(
            fabric["submit_jobs_per_s"], ceiling["submit_jobs_per_s"]
        ),
        "fabric_vs_ceiling_end_to_end": ratio(
            fabric["end_to_end_jobs_per_s"], ceiling["end_to_end_jobs_per_s"]
        ),
        "exactly_once": fabric["exactly_once"],
    }
    for name in tries:
        tries_text = ", ".join(f"{x:,.0f}" for x in by_name[name]["tries_jobs_per_s"])
        print(f"{name} serve jobs/s per try: {tries_text}")
    print(f"fabric exactly one result per job: {'yes' if fabric['exactly_once'] else 'NO'}")
    print(goal_line("fabric/ceiling, serve", summary["fabric_vs_ceiling_serve"], 0.8))
    print(goal_line("fabric/ceiling, submit", summary["fabric_vs_ceiling_submit"], 0.8))
    print(goal_line("fabric/ceiling, end to end", summary["fabric_vs_ceiling_end_to_end"], 0.8))
    if fastest is not None:
        summary["fastest_peer"] = fastest["name"]
        summary["fabric_vs_fastest_peer"] = ratio(fabric["jobs_per_s"], fastest["jobs_per_s"])
        print(
            goal_line(
                f"fabric/fastest peer ({fastest['name']}), serve",
                summary["fabric_vs_fastest_peer"],
                10.0,
            )
        )
    if profile_rows is not None:
        print()
        print(f"fabric worker profile (py-spy, all threads; {profiled['jobs_per_s']:,.0f} jobs/s)")
        print(table(["where", "samples", "share"], profile_rows))
    result = {"rows": rows, "summary": summary, "profile": profile_rows}
    save("supply", result)
    return result


if __name__ == "__main__":
    main()
