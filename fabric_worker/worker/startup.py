"""Start a worker process: manifest, fleet config, broker, engine, event loop.

Everything that can be refused is refused here, before anything is claimed:
an invalid manifest or a namespace without config exits with status 2.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from types import FrameType
from typing import Any

from engines.manifest import ManifestError, load_manifest
from engines.registry import create_engine
from fabric_worker.broker.connection import connect, connect_async
from fabric_worker.broker.memory import eviction_policy
from fabric_worker.broker.namespace import load_config
from fabric_worker.broker.streams import Broker
from fabric_worker.broker.transient import is_transient, ride_out
from fabric_worker.wire.fleet_config import ConfigError, FleetConfig
from fabric_worker.wire.keys import Keys
from fabric_worker.worker.options import (
    DEFAULT_GRACE_S,
    DEFAULT_LOG_EVERY_S,
    DEFAULT_OUTAGE_BUDGET_S,
    ExitCode,
    WorkerOptions,
    default_consumer,
)
from fabric_worker.worker.service import Worker

FAULTS = {"poison_token": int, "fatal_after_steps": int, "hang_on_close_s": float}


def parse_faults(faults: tuple[str, ...]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for item in faults:
        name, _, value = item.partition("=")
        if name not in FAULTS or not value:
            raise ConfigError(f"fault {item!r}: expected one of {sorted(FAULTS)} as NAME=VALUE")
        parsed[name] = FAULTS[name](value)
    return parsed


def engine_options(
    backend: str, *, sim_batching: str, sim_clock: str, faults: dict[str, Any]
) -> dict[str, Any]:
    if backend != "sim":
        if faults:
            raise ConfigError("faults can only be injected into the sim engine")
        return {}
    from engines.clock import VirtualClock, WallClock
    from engines.sim import SimFaults

    return {
        "batching": sim_batching,
        "clock": VirtualClock() if sim_clock == "virtual" else WallClock(),
        "faults": SimFaults(**faults) if faults else None,
    }


def fetch_config(url: str, keys: Keys, outage_budget_s: float) -> FleetConfig:
    """The fleet config, riding out a Redis outage as the broker does: a worker
    started while Redis restarts waits for it, up to the outage budget. Past it
    the last connection error is raised (the worker exits 4, as when it loses
    Redis later); refused credentials are raised at once."""

    def load() -> FleetConfig:
        with connect(url) as client:
            return load_config(client, keys)

    return ride_out(load, budget_s=outage_budget_s)


def check_eviction_policy(url: str) -> None:
    """Refuse a Redis that may evict: it would drop jobs or results silently
    when full. Where CONFIG GET is denied (ACL), say so and go on."""
    with connect(url) as client:
        policy = eviction_policy(client)
    if policy is None:
        print(
            "warning: cannot read maxmemory-policy (CONFIG GET denied); "
            "it must be noeviction, or a full Redis drops jobs and results",
            file=sys.stderr,
            flush=True,
        )
    elif policy != "noeviction":
        raise ConfigError(
            f"Redis maxmemory-policy is {policy}; the fabric needs noeviction "
            "(a full Redis must refuse writes, not evict jobs or results)"
        )


def _stop_before_start(signum: int, _frame: FrameType | None) -> None:
    # os.write, not print: a signal handler may interrupt a print to stderr.
    os.write(2, f"stopped by {signal.Signals(signum).name} before serving\n".encode())
    raise SystemExit(int(ExitCode.OK))


def run_worker(
    *,
    url: str,
    keys: Keys,
    manifest_path: str,
    consumer: str | None,
    burst: bool = False,
    max_tps: bool = False,
    grace_s: float = DEFAULT_GRACE_S,
    outage_budget_s: float = DEFAULT_OUTAGE_BUDGET_S,
    log_every_s: float = DEFAULT_LOG_EVERY_S,
    sim_batching: str = "inflight",
    sim_clock: str = "wall",
    faults: tuple[str, ...] = (),
    metrics_port: int | None = None,
) -> ExitCode:
    """Run one worker until it stops; returns its exit code."""
    # Until the worker's own handlers take over, a stop has nothing to drain.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop_before_start)
    try:
        manifest = load_manifest(manifest_path)
        options = engine_options(
            manifest.backend,
            sim_batching=sim_batching,
            sim_clock=sim_clock,
            faults=parse_faults(faults),
        )
        config = fetch_config(url, keys, outage_budget_s)
        check_eviction_policy(url)
    except (ManifestError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return ExitCode.CONFIG
    except Exception as exc:
        if not is_transient(exc):  # refused credentials: the CLI says so (exit 1)
            raise
        print(
            f"error: cannot reach Redis for {outage_budget_s:g} s (broker lost): {exc}",
            file=sys.stderr,
            flush=True,
        )
        return ExitCode.BROKER
    worker_options = WorkerOptions(
        consumer=consumer or default_consumer(),
        burst=burst,
        max_tps=max_tps,
        grace_s=grace_s,
        outage_budget_s=outage_budget_s,
        log_every_s=log_every_s,
        metrics_port=metrics_port,
    )

    async def main() -> ExitCode:
        client = connect_async(url)
        broker = Broker(
            client,
            keys,
            worker_options.consumer,
            retention_s=config.retention_s,
            outage_budget_s=outage_budget_s,
            replica_acks=config.replica_acks,
            replica_ack_timeout_ms=config.replica_ack_timeout_ms,
        )
        worker = Worker(
            broker,
            config,
            lambda: create_engine(manifest, fleet_vocab_size=config.vocab_size, **options),
            worker_options,
        )
        try:
            return await worker.run()
        finally:
            await client.aclose()

    return asyncio.run(main())
