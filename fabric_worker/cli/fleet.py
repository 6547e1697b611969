"""Fleet commands: ``fabric health``, ``fabric top``, ``fabric autoscale``."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import click

from engines.manifest import load_manifest
from fabric_worker.broker.heartbeat import backlogs as read_backlogs
from fabric_worker.broker.heartbeat import read_all, read_one
from fabric_worker.broker.namespace import load_config
from fabric_worker.broker.transient import is_transient, ride_out
from fabric_worker.cli.context import Context, pass_context
from fabric_worker.fleet.autoscale import Autoscaler, ScalePolicy

# How long the long-running tools wait out a Redis failover or restart at start.
OUTAGE_BUDGET_S = 30.0


@click.command()
@click.option("--consumer", required=True, help="The worker's consumer name.")
@click.option(
    "--outage-budget-s",
    type=float,
    default=5.0,
    show_default=True,
    help="How long to ride out a Redis failover or restart before giving up.",
)
@pass_context
def health(ctx: Context, consumer: str, outage_budget_s: float) -> None:
    """Exit 0 if the worker's heartbeat is fresh and it has not failed, else 1."""
    status = ride_out(lambda: read_one(ctx.redis, ctx.keys, consumer), budget_s=outage_budget_s)
    now = time.time()
    if status is None:
        click.echo(f"unhealthy: no heartbeat from {consumer!r}", err=True)
        sys.exit(1)
    if not status.is_healthy(now):
        click.echo(
            f"unhealthy: {consumer!r} is {status.state}, last heartbeat "
            f"{now - status.heartbeat_at:.1f} s ago",
            err=True,
        )
        sys.exit(1)
    click.echo(f"healthy: {consumer!r} is {status.state}, busy {status.busy_fraction:.2f}")


@click.command()
@click.option("--once", is_flag=True, help="Print one screen and exit.")
@click.option("--interval-s", type=float, default=1.0, show_default=True)
@pass_context
def top(ctx: Context, once: bool, interval_s: float) -> None:
    """A live view of lanes and workers, refreshed every second."""
    from rich.console import Console, RenderableType
    from rich.live import Live
    from rich.text import Text

    from fabric_worker.fleet.top import render

    config = ride_out(lambda: load_config(ctx.redis, ctx.keys), budget_s=OUTAGE_BUDGET_S)
    console = Console()
    if once:
        console.print(render(ctx.redis, ctx.keys, config))
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def screen() -> RenderableType:
        try:
            return render(ctx.redis, ctx.keys, config)
        except Exception as exc:  # a failover or restart: say so and keep refreshing
            if not is_transient(exc):
                raise
            return Text(f"Redis unreachable ({type(exc).__name__}: {exc}); retrying", style="red")

    try:
        with Live(screen(), console=console, screen=False) as live:
            while not stop.wait(interval_s):
                live.update(screen())
    except KeyboardInterrupt:
        pass


@click.command()
@click.option("--actuator", type=click.Choice(["local", "metrics"]), required=True)
@click.option(
    "--manifest",
    "manifest_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The workers' manifest (also the throughput guess until heartbeats arrive).",
)
@click.option("--min", "min_workers", type=click.IntRange(0), default=0, show_default=True)
@click.option("--max", "max_workers", type=click.IntRange(1), default=1, show_default=True)
@click.option("--gpus", default=None, help="local: GPU ids, one worker each (e.g. 0,1,2,3).")
@click.option(
    "--target-drain-s",
    type=float,
    default=60.0,
    show_default=True,
    help="Size the fleet to drain the backlog in this long.",
)
@click.option(
    "--cooldown-s",
    type=float,
    default=30.0,
    show_default=True,
    help="How long a lower count must be wanted before scaling down.",
)
@click.option("--interval-s", type=float, default=1.0, show_default=True)
@click.option(
    "--metrics-port",
    type=int,
    default=9100,
    show_default=True,
    help="metrics: serve /desired and /metrics here.",
)
@click.option(
    "--worker-arg",
    "worker_args",
    multiple=True,
    help="local: extra argument for each worker (repeatable).",
)
@click.option(
    "--log-dir",
    default=None,
    type=click.Path(file_okay=False),
    help="local: write each worker's log here.",
)
@pass_context
def autoscale(
    ctx: Context,
    actuator: str,
    manifest_path: str,
    min_workers: int,
    max_workers: int,
    gpus: str | None,
    target_drain_s: float,
    cooldown_s: float,
    interval_s: float,
    metrics_port: int,
    worker_args: tuple[str, ...],
    log_dir: str | None,
) -> None:
    """Set the worker count from lane backlog (tokens) and observed throughput."""
    from fabric_worker.fleet.actuators import LocalActuator, MetricsActuator

    manifest = load_manifest(manifest_path)
    config = ride_out(lambda: load_config(ctx.redis, ctx.keys), budget_s=OUTAGE_BUDGET_S)
    gpu_ids = [g.strip() for g in gpus.split(",")] if gpus else None
    if gpu_ids:
        max_workers = min(max_workers, len(gpu_ids))
    # A guess until heartbeats arrive: one full step of tokens every 50 ms.
    guess = manifest.max_num_tokens / 0.05
    policy = ScalePolicy(
        min_workers=min_workers,
        max_workers=max_workers,
        target_drain_s=target_drain_s,
        cooldown_s=cooldown_s,
        guess_tokens_per_s=guess,
    )
    scaler = Autoscaler(policy)

    def log(line: str) -> None:
        click.echo(line, err=True)

    act: LocalActuator | MetricsActuator
    if actuator == "local":
        # The URL travels in the environment, not argv: it may hold a password.
        command = [sys.executable, "-m", "fabric_worker", "worker", "--manifest", manifest_path]
        env = {**os.environ, "FABRIC_REDIS_URL": ctx.url, "FABRIC_NAMESPACE": ctx.keys.namespace}
        act = LocalActuator(
            [*command, *worker_args],
            gpus=gpu_ids,
            max_workers=max_workers,
            env=env,
            log=log,
            log_dir=log_dir,
        )
    else:
        act = MetricsActuator(metrics_port)
        log(f"autoscale: serving /desired and /metrics on port {act.port}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log(
        f"autoscale: {actuator} actuator, {min_workers}..{max_workers} workers, drain in "
        f"{target_drain_s:g} s, cooldown {cooldown_s:g} s, guess {guess:,.0f} tokens/s/worker"
    )
    last = None
    try:
        while not stop.is_set():
            try:
                backlogs = read_backlogs(ctx.redis, ctx.keys, config.lanes)
                statuses = read_all(ctx.redis, ctx.keys)
            except Exception as exc:
                # A failover or restart: keep the workers as they are and look
                # again next round (the workers ride it out themselves).
                if not is_transient(exc):
                    raise
                log(f"autoscale: Redis unreachable ({type(exc).__name__}: {exc}); holding")
                stop.wait(interval_s)
                continue
            now = time.time()
            observed = [
                s.tokens_per_s for s in statuses if s.is_fresh(now) and s.state == "running"
            ]
            desired = scaler.update(time.monotonic(), sum(backlogs.values()), observed)
            if isinstance(act, MetricsActuator):
                act.observe(backlogs)
            act.scale_to(desired)
            if desired != last:
                log(
                    f"autoscale: backlog {sum(backlogs.values()):,} tokens, "
                    f"{scaler.per_worker_tps:,.0f} tokens/s per worker -> {desired} workers"
                )
                last = desired
            stop.wait(interval_s)
    finally:
        act.close()
