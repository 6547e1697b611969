"""``make demo``: the main job end to end on the embedded defaults.

Uses the Redis at FABRIC_REDIS_URL if one answers, else starts a private
redis-server on a free port. Inits a fresh namespace, submits ragged jobs drawn
from the production trace sample, runs one worker on the simulated H200 in
burst mode, and prints what happened, with an exactly-once check.
"""

from __future__ import annotations

import asyncio
import collections
import os
import sys
import time
from importlib import resources

import click

from engines.clock import WallClock
from engines.manifest import load_manifest
from engines.registry import create_engine
from fabric_worker.broker.client import RedisError, SyncRedis
from fabric_worker.broker.connection import DEFAULT_URL, connect, connect_async, redact
from fabric_worker.broker.inspect import format_table, inspect_lanes
from fabric_worker.broker.namespace import init_namespace
from fabric_worker.broker.streams import Broker
from fabric_worker.dev.redis_server import INSTALL_HINT, RedisServer, RedisServerMissing
from fabric_worker.telemetry.rates import hit_rate, ratio
from fabric_worker.wire.entries import decode_result
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import Keys
from fabric_worker.worker.options import ExitCode, WorkerOptions, default_consumer
from fabric_worker.worker.service import Worker
from producers import FabricClient
from producers.workload import trace_jobs


def _reachable(url: str) -> bool:
    try:
        with connect(url, socket_timeout_s=1.0) as client:
            return bool(client.ping())
    except (RedisError, OSError):
        return False


def _count_results(
    client: SyncRedis, keys: Keys, lanes: tuple[int, ...]
) -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()
    for lane in lanes:
        last = "-"
        while True:
            entries = client.xrange(keys.results(lane), min=last, count=5000)
            entries = [e for e in entries if e[0] != last.encode()] if last != "-" else entries
            if not entries:
                break
            for _, fields in entries:
                seen[decode_result(fields).id] += 1
            last = entries[-1][0].decode()
    return seen


async def _run_worker(
    url: str, keys: Keys, config: FleetConfig, manifest_name: str
) -> tuple[ExitCode, Worker]:
    path = resources.files("engines").joinpath("manifests", manifest_name)
    manifest = load_manifest(str(path))
    options = WorkerOptions(consumer=default_consumer(), burst=True, log_every_s=5.0)
    client = connect_async(url)
    try:
        broker = Broker(client, keys, options.consumer, retention_s=config.retention_s)
        worker = Worker(broker, config, lambda: create_engine(manifest, clock=WallClock()), options)
        return await worker.run(), worker
    finally:
        await client.aclose()


@click.command()
@click.option("--jobs", "num_jobs", type=click.IntRange(1), default=1000, show_default=True)
@click.option(
    "--manifest",
    "manifest_name",
    default="sim-h200.json",
    show_default=True,
    help="A manifest shipped in engines/manifests/.",
)
def main(num_jobs: int, manifest_name: str) -> None:
    """Submit a ragged trace-shaped workload and serve it with one simulated-H200 worker."""
    url = os.environ.get("FABRIC_REDIS_URL", DEFAULT_URL)
    server = None
    if not _reachable(url):
        try:
            server = RedisServer().start()
        except RedisServerMissing:
            click.echo(
                f"no Redis at {redact(url)} and no redis-server binary; {INSTALL_HINT}", err=True
            )
            sys.exit(1)
        url = server.url
        click.echo(f"no Redis at the configured URL; started a private redis-server on {url}")
    else:
        click.echo(f"using Redis at {redact(url)}")
    try:
        _demo(url, num_jobs, manifest_name)
    finally:
        if server is not None:
            server.close()


def _demo(url: str, num_jobs: int, manifest_name: str) -> None:
    keys = Keys(f"demo-{int(time.time())}-{os.getpid()}")
    client = connect(url)
    config = init_namespace(client, keys, FleetConfig()).config
    lanes = config.lanes
    click.echo(f"namespace {keys.namespace!r}: {len(lanes)} lanes {lanes[0]}..{lanes[-1]}")
    producer = FabricClient(client, keys.namespace)
    started = time.monotonic()
    report = producer.submit(trace_jobs(num_jobs, vocab_size=config.vocab_size))
    click.echo(f"submitted {report.num_submitted} jobs in {time.monotonic() - started:.2f} s")
    click.echo(format_table(inspect_lanes(client, keys, config.lanes)))
    click.echo(f"running one worker ({manifest_name}, wall clock, burst mode) ...")
    started = time.monotonic()
    code, worker = asyncio.run(_run_worker(url, keys, config, manifest_name))
    wall_s = time.monotonic() - started
    stats = worker.engine_stats
    seen = _count_results(client, keys, config.lanes)
    missing = [job_id for job_id in report.ids if seen[job_id] == 0]
    doubled = [job_id for job_id, n in seen.items() if n > 1]
    rows = [
        ("jobs", f"{worker.counts.completed}"),
        ("output tokens/s", f"{ratio(stats.generated_tokens, wall_s):,.0f}"),
        ("engine busy fraction", f"{ratio(stats.busy_s, wall_s):.3f}"),
        ("padding waste", f"{ratio(stats.padded_tokens, stats.computed_tokens):.4f}"),
        ("prefix-cache hit rate", f"{hit_rate(stats):.3f}"),
        ("wall time", f"{wall_s:.1f} s"),
        (
            "exactly one result per id",
            "yes"
            if not missing and not doubled and len(seen) == len(report.ids)
            else f"NO: {len(missing)} missing, {len(doubled)} duplicated",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    click.echo("")
    for name, value in rows:
        click.echo(f"{name.ljust(width)}  {value}")
    click.echo(format_table(inspect_lanes(client, keys, config.lanes)))
    if code is not ExitCode.OK or missing or doubled:
        sys.exit(1)


if __name__ == "__main__":
    main()
