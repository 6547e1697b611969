"""``fabric worker``: serve the namespace's lanes with one engine."""

from __future__ import annotations

import sys

import click

from fabric_worker.cli.context import Context, pass_context
from fabric_worker.worker.options import (
    DEFAULT_GRACE_S,
    DEFAULT_LOG_EVERY_S,
    DEFAULT_OUTAGE_BUDGET_S,
)


@click.command()
@click.option(
    "--manifest",
    "manifest_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Engine manifest (JSON or TOML, nine required fields).",
)
@click.option("--consumer", default=None, help="Consumer name [default: host-pid-start time].")
@click.option(
    "--burst", is_flag=True, help="Exit 0 once every lane is empty and nothing is pending."
)
@click.option(
    "--max-tps", is_flag=True, help="Trade latency for throughput: fill deeper, wait longer."
)
@click.option(
    "--grace-s",
    type=float,
    default=DEFAULT_GRACE_S,
    show_default=True,
    help="On SIGTERM: how long in-flight work may take to finish.",
)
@click.option(
    "--outage-budget-s",
    type=float,
    default=DEFAULT_OUTAGE_BUDGET_S,
    show_default=True,
    help="How long to ride out a Redis outage before exiting with status 4.",
)
@click.option("--log-every-s", type=float, default=DEFAULT_LOG_EVERY_S, show_default=True)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve Prometheus metrics on this port (/metrics).",
)
@click.option(
    "--sim-batching",
    type=click.Choice(["inflight", "static"]),
    default="inflight",
    show_default=True,
    help="sim engine only: in-flight or static batching.",
)
@click.option(
    "--sim-clock",
    type=click.Choice(["wall", "virtual"]),
    default="wall",
    show_default=True,
    help="sim engine only: really sleep, or run on a virtual clock.",
)
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="NAME=VALUE",
    hidden=True,
    help="sim engine fault injection (poison_token, fatal_after_steps, hang_on_close_s).",
)
@pass_context
def worker(
    ctx: Context,
    manifest_path: str,
    consumer: str | None,
    burst: bool,
    max_tps: bool,
    grace_s: float,
    outage_budget_s: float,
    log_every_s: float,
    metrics_port: int | None,
    sim_batching: str,
    sim_clock: str,
    faults: tuple[str, ...],
) -> None:
    """Serve the namespace's lanes with one engine (one worker per GPU)."""
    from fabric_worker.worker.startup import run_worker

    code = run_worker(
        url=ctx.url,
        keys=ctx.keys,
        manifest_path=manifest_path,
        consumer=consumer,
        burst=burst,
        max_tps=max_tps,
        grace_s=grace_s,
        outage_budget_s=outage_budget_s,
        log_every_s=log_every_s,
        sim_batching=sim_batching,
        sim_clock=sim_clock,
        faults=faults,
        metrics_port=metrics_port,
    )
    sys.exit(int(code))
