"""Soak: a million jobs through a Redis with maxmemory set; memory must stay flat.

    python -m bench.soak [--jobs 1000000] [--maxmemory-mb 64] [--retention-s 30]

A private redis-server on a free port with ``maxmemory`` and ``noeviction``, a
namespace whose retention is ``--retention-s`` (30 s by default: short, so that
a run of a few minutes sees many retention periods go by), one ``fabric
worker`` on the null engine, and this process as producer and reader at once:

- the producer submits tiny jobs (8 tokens, 2 new) in chunks of ``--chunk``
  while fewer than ``--max-queued`` are waiting, so the job stream stays short
  and what grows, if anything, is what retention is meant to bound: results
  and finished jobs' states;
- a reader thread follows the results in a consumer group of its own and keeps
  the ids it has seen in a set (a million short strings fit easily), so every
  job is checked for exactly one result although the streams are trimmed
  behind it;
- ``used_memory`` is sampled every ``--sample-every-s`` and printed with the
  progress.

At the end: every job read exactly once, no job left queued or dead, and the
memory table: min and max after warm-up (the first ``2 x retention`` seconds,
while results accumulate up to one retention's worth), and the drift, the mean
of the last quarter of the samples against the mean of the second quarter.
The worker's trims run in its housekeeping step (worker/housekeeping.py): this
benchmark trims nothing itself.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import tempfile
import threading
import time
from array import array
from pathlib import Path
from typing import Any

import orjson
import redis

from bench.common import MANIFESTS, RESULTS, child, machine_line, save, stop, table
from fabric_worker.broker.namespace import init_namespace
from fabric_worker.dev.redis_server import RedisServer
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import Keys
from producers import FabricClient, Job

NAMESPACE = "soak"
LANES = (64,)
READER_GROUP = "soak-reader"


class Reader(threading.Thread):
    """Follows every lane's results in its own group; counts ids once and twice."""

    def __init__(self, url: str, keys: Keys) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url)
        self.keys = keys
        self.seen: set[str] = set()
        self.num_doubled = 0
        self.stopped = threading.Event()
        for lane in LANES:
            self.client.xgroup_create(keys.results(lane), READER_GROUP, id="0", mkstream=True)

    def run(self) -> None:
        streams = {self.keys.results(lane): ">" for lane in LANES}
        while not self.stopped.is_set():
            reply = self.client.xreadgroup(READER_GROUP, "r", streams, count=5000, block=500)
            for stream, entries in reply or []:
                for _, fields in entries:
                    job_id = orjson.loads(fields[b"h"])["id"]
                    if job_id in self.seen:
                        self.num_doubled += 1
                    self.seen.add(job_id)
                if entries:
                    self.client.xack(stream, READER_GROUP, *[e for e, _ in entries])


def sample(client: redis.Redis, keys: Keys, t_s: float, submitted: int, read: int) -> dict:
    info = client.info("memory")
    return {
        "t_s": round(t_s, 1),
        "submitted": submitted,
        "read": read,
        "used_mib": int(info["used_memory"]) / 2**20,
        "results": sum(client.xlen(keys.results(lane)) for lane in LANES),
        "queued": sum(client.xlen(keys.jobs(lane)) for lane in LANES),
        "keys": int(client.dbsize()),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="fabric-soak-"))
    server = RedisServer(
        directory,
        extra_args=[
            *("--maxmemory", f"{args.maxmemory_mb}mb"),
            *("--maxmemory-policy", "noeviction"),
        ],
    )
    server.start()
    worker = None
    try:
        client = redis.Redis.from_url(server.url)
        keys = Keys(NAMESPACE)
        config = FleetConfig(lanes=LANES, vocab_size=1000, retention_s=args.retention_s)
        init_namespace(client, keys, config)
        reader = Reader(server.url, keys)
        reader.start()
        worker = child(
            "fabric_worker",
            *("--redis-url", server.url, "--namespace", NAMESPACE, "worker"),
            *("--manifest", str(MANIFESTS / "null.json"), "--log-every-s", "3600"),
            stderr=(directory / "worker.log").open("wb"),
        )
        producer = FabricClient(client, NAMESPACE, backpressure_timeout_s=600.0)
        prompt = array("I", range(1, 9))
        samples: list[dict] = []
        started = time.monotonic()
        next_sample = started
        submitted = num_reported_duplicates = 0
        while len(reader.seen) < args.jobs:
            now = time.monotonic()
            if now >= next_sample:
                s = sample(client, keys, now - started, submitted, len(reader.seen))
                samples.append(s)
                print(
                    f"t {s['t_s']:7.1f} s  submitted {submitted:9,}  read {s['read']:9,}  "
                    f"used {s['used_mib']:6.1f} MiB  results {s['results']:8,}  "
                    f"queued {s['queued']:7,}  keys {s['keys']:8,}",
                    flush=True,
                )
                next_sample += args.sample_every_s
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited {worker.returncode}: see {directory}")
            queued = sum(client.xlen(keys.jobs(lane)) for lane in LANES)
            if submitted < args.jobs and queued < args.max_queued:
                n = min(args.chunk, args.jobs - submitted)
                jobs = [
                    Job(tokens=prompt, max_new_tokens=2, id=f"s{submitted + i}") for i in range(n)
                ]
                report = producer.submit(jobs)
                # A chunk cut short by OOM is sent again; jobs of its first try
                # that a worker finished meanwhile come back "duplicate" (their
                # state is done, no longer queued with this submit's nonce).
                # Whether each got its result once is the reader's to check.
                assert report.num_submitted + report.num_duplicates == n, "lost in submit"
                num_reported_duplicates += report.num_duplicates
                submitted += n
            else:
                time.sleep(0.05)
        wall_s = time.monotonic() - started
        samples.append(sample(client, keys, wall_s, submitted, len(reader.seen)))
        reader.stopped.set()
        reader.join(5)
        worker.send_signal(signal.SIGTERM)
        worker_exit = worker.wait(60)
        left = sum(client.xlen(keys.jobs(lane)) for lane in LANES)
        dead = sum(client.xlen(keys.dlq(lane)) for lane in LANES)
        expected = {f"s{i}" for i in range(args.jobs)}
        exactly_once = reader.seen == expected and reader.num_doubled == 0 and left == dead == 0
        client.close()
        worker_log = (directory / "worker.log").read_text(errors="replace")
    finally:
        if worker is not None:
            stop(worker)
        server.stop()
    return {
        "jobs": args.jobs,
        "maxmemory_mb": args.maxmemory_mb,
        "retention_s": args.retention_s,
        "wall_s": wall_s,
        "jobs_per_s": args.jobs / wall_s,
        "worker_exit": worker_exit,
        "exactly_once": exactly_once,
        "num_read": len(reader.seen),
        "num_doubled": reader.num_doubled,
        "left_queued": left,
        "dead": dead,
        "submit_reported_duplicates": num_reported_duplicates,
        "worker_oom_retries_logged": worker_log.count("OutOfMemoryError"),
        "worker_oom_trims_logged": worker_log.count("Redis is out of memory; trimmed"),
        "samples": samples,
    }


def report(result: dict[str, Any], warm_up_s: float) -> str:
    samples = result["samples"]
    warm = [s for s in samples if s["t_s"] >= warm_up_s]
    lines = [
        f"{result['jobs']:,} jobs in {result['wall_s']:.0f} s "
        f"({result['jobs_per_s']:,.0f} jobs/s), "
        f"maxmemory {result['maxmemory_mb']} MiB noeviction, retention {result['retention_s']} s; "
        f"exactly once: {result['exactly_once']} (read {result['num_read']:,}, doubled "
        f"{result['num_doubled']}, left queued {result['left_queued']}, dead {result['dead']}); "
        f"worker exit {result['worker_exit']}; out of memory: "
        f"{result['worker_oom_retries_logged']} retry lines (at most one per 5 s) and "
        f"{result['worker_oom_trims_logged']} trims at once in the worker's log, "
        f"{result['submit_reported_duplicates']:,} jobs reported duplicate by submit",
    ]
    if len(warm) >= 4:
        used = [s["used_mib"] for s in warm]
        quarter = len(warm) // 4
        second = statistics.fmean(used[quarter : 2 * quarter])
        last = statistics.fmean(used[-quarter:])
        per_key = [_bytes_per_key(s) for s in warm]
        lines.append(
            f"after warm-up ({warm_up_s:g} s, {len(warm)} samples): used memory min "
            f"{min(used):.1f} MiB, max {max(used):.1f} MiB; last quarter / second quarter "
            f"{last / second:.3f}; bytes per live key (what one finished job costs while "
            f"retained) min {min(per_key):.0f}, max {max(per_key):.0f}"
        )
    else:
        lines.append(f"fewer than 4 samples after the warm-up of {warm_up_s:g} s: no drift figure")
    step = max(1, len(samples) // 20)
    shown = samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else [])
    rows = [
        (
            f"{s['t_s']:.0f}",
            f"{s['submitted']:,}",
            f"{s['read']:,}",
            f"{s['used_mib']:.1f}",
            f"{s['results']:,}",
            f"{s['keys']:,}",
            f"{_bytes_per_key(s):.0f}",
        )
        for s in shown
    ]
    headers = ("t (s)", "submitted", "read", "used MiB", "results kept", "keys", "bytes/key")
    lines.append(table(headers, rows))
    return "\n".join(lines)


def _bytes_per_key(s: dict) -> float:
    # Memory above an empty server's, per key: nearly every key is a finished
    # job's state, and each has one result beside it until both are trimmed.
    return (s["used_mib"] - 1.1) * 2**20 / max(s["keys"], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--maxmemory-mb", type=int, default=64)
    parser.add_argument("--retention-s", type=int, default=30)
    parser.add_argument("--chunk", type=int, default=5000)
    parser.add_argument("--max-queued", type=int, default=20_000)
    parser.add_argument("--sample-every-s", type=float, default=5.0)
    parser.add_argument("--report", action="store_true", help="Print the last run's report.")
    args = parser.parse_args()
    if args.report:
        last = json.loads((RESULTS / "soak.json").read_text())
        print(report(last, warm_up_s=2.0 * last["retention_s"]))
        return
    print(machine_line(), flush=True)
    result = run(args)
    save("soak", result)
    print(report(result, warm_up_s=2.0 * args.retention_s))
    if not result["exactly_once"]:
        raise SystemExit("soak: not every job got exactly one result")


if __name__ == "__main__":
    main()
