"""The job commands: ``fabric init``, ``submit``, ``inspect`` and ``results``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import IO, Any

import click
import orjson

from fabric_worker.broker.connection import redact
from fabric_worker.broker.inspect import format_table, inspect_lanes
from fabric_worker.broker.memory import memory
from fabric_worker.broker.namespace import init_namespace, load_config
from fabric_worker.broker.result_groups import reader_groups
from fabric_worker.cli.batch import batch_name
from fabric_worker.cli.context import EXIT_CONFIG, Context, pass_context
from fabric_worker.wire.fleet_config import (
    DEFAULT_BACKLOG_CAP_TOKENS,
    DEFAULT_LANES,
    DEFAULT_LEASE_S,
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_REPLICA_ACK_TIMEOUT_MS,
    DEFAULT_RETENTION_S,
    DEFAULT_VOCAB_SIZE,
    FleetConfig,
    parse_lanes,
)
from producers.client import FabricClient
from producers.jsonl import iter_chunks, seekable_copy, validate_file


@click.command()
@click.option(
    "--lanes",
    default=",".join(map(str, DEFAULT_LANES)),
    show_default=True,
    help="Lane boundaries (prompt tokens), increasing.",
)
@click.option("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE, show_default=True)
@click.option(
    "--max-deliveries",
    type=int,
    default=DEFAULT_MAX_DELIVERIES,
    show_default=True,
    help="Deliveries before an entry is dead-lettered.",
)
@click.option(
    "--lease-s",
    type=float,
    default=DEFAULT_LEASE_S,
    show_default=True,
    help="Lease: how long a silent worker keeps its entries.",
)
@click.option(
    "--backlog-cap-tokens",
    type=int,
    default=DEFAULT_BACKLOG_CAP_TOKENS,
    show_default=True,
    help="Per-lane cap on queued padded tokens.",
)
@click.option(
    "--retention-s",
    type=int,
    default=DEFAULT_RETENTION_S,
    show_default=True,
    help="How long done/dead job states are kept for dedupe.",
)
@click.option(
    "--max-seq-len",
    type=int,
    default=None,
    help=f"Prompt lane + output limit [default: largest lane + {DEFAULT_MAX_NEW_TOKENS}].",
)
@click.option(
    "--replica-acks",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Replicas that must acknowledge each submit and completion (WAIT); 0: do not wait.",
)
@click.option(
    "--replica-ack-timeout-ms",
    type=click.IntRange(1),
    default=DEFAULT_REPLICA_ACK_TIMEOUT_MS,
    show_default=True,
    help="How long each write waits for those replicas.",
)
@pass_context
def init(
    ctx: Context,
    lanes: str,
    vocab_size: int,
    max_deliveries: int,
    lease_s: float,
    backlog_cap_tokens: int,
    retention_s: int,
    max_seq_len: int | None,
    replica_acks: int,
    replica_ack_timeout_ms: int,
) -> None:
    """Create or update the namespace's fleet config, streams and groups."""
    lane_tuple = parse_lanes(lanes)
    config = FleetConfig(
        lanes=lane_tuple,
        vocab_size=vocab_size,
        max_deliveries=max_deliveries,
        lease_s=lease_s,
        backlog_cap_tokens=backlog_cap_tokens,
        retention_s=retention_s,
        max_seq_len=max_seq_len or (lane_tuple[-1] if lane_tuple else 0) + DEFAULT_MAX_NEW_TOKENS,
        replica_acks=replica_acks,
        replica_ack_timeout_ms=replica_ack_timeout_ms,
    )
    result = init_namespace(ctx.redis, ctx.keys, config)
    click.echo(
        f"namespace {ctx.keys.namespace!r} {result.outcome.value} (config version "
        f"{result.config.version}, {len(result.config.lanes)} lanes: "
        f"{','.join(map(str, result.config.lanes))})"
    )


@click.command()
@click.argument("file", type=click.File("rb"))
@click.option(
    "--chunk-size",
    type=click.IntRange(1),
    default=10_000,
    show_default=True,
    help="Jobs validated and sent per round.",
)
@click.option(
    "--backpressure-timeout-s",
    type=float,
    default=60.0,
    show_default=True,
    help="How long to wait while a lane is at its backlog cap.",
)
@click.option(
    "--batch",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="NAME",
    callback=batch_name,
    help="Put every new job in batch NAME (a name is made and printed if NAME is left out).",
)
@pass_context
def submit(
    ctx: Context,
    file: IO[bytes],
    chunk_size: int,
    backpressure_timeout_s: float,
    batch: str | None,
) -> None:
    """Submit jobs from a JSONL FILE ('-' for stdin) and exit.

    One job per line: {"tokens": [...], "max_new_tokens": N, "id": ..., "class": ...,
    "end_id": ...}. Every line is validated first; any bad line means nothing is
    submitted and exit status 2.
    """
    client = FabricClient(
        ctx.redis, ctx.keys.namespace, backpressure_timeout_s=backpressure_timeout_s
    )
    config = client.config
    stream = seekable_copy(file)
    size = _size(stream)
    show = sys.stderr.isatty()
    with _progress(show, size, "validating") as bar:
        _num_jobs, errors = validate_file(stream, config, on_bytes=bar)
    if errors:
        for error in errors:
            click.echo(str(error), err=True)
        click.echo(f"{len(errors)} bad line(s); nothing submitted", err=True)
        sys.exit(EXIT_CONFIG)
    stream.seek(0)
    num_submitted = num_duplicates = 0
    with _progress(show, size, "submitting") as bar:
        for chunk, num_bytes in iter_chunks(stream, config, chunk_size, batch=batch):
            report = client.submit_laned(chunk)
            num_submitted += report.num_submitted
            num_duplicates += report.num_duplicates
            bar(num_bytes)
    in_batch = f" in batch {batch}" if batch is not None else ""
    click.echo(f"submitted {num_submitted}, duplicates {num_duplicates}{in_batch}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
@pass_context
def inspect(ctx: Context, as_json: bool) -> None:
    """Per lane: queued, in flight, backlog tokens, lag, consumers, dead letters, results;
    and any results reader group that lags past the retention."""
    config = load_config(ctx.redis, ctx.keys)
    views = inspect_lanes(ctx.redis, ctx.keys, config.lanes)
    groups = reader_groups(ctx.redis, ctx.keys, config.lanes, config.retention_s)
    usage = memory(ctx.redis)
    if as_json:
        doc = {
            "namespace": ctx.keys.namespace,
            "config_version": config.version,
            "lanes": [v.to_json() for v in views],
            "result_groups": [g.to_json() for g in groups],
            "redis_memory": (
                {"used_bytes": usage.used_bytes, "maxmemory_bytes": usage.max_bytes}
                if usage
                else None
            ),
        }
        click.echo(orjson.dumps(doc).decode())
    else:
        click.echo(
            f"namespace {ctx.keys.namespace!r} at {redact(ctx.url)}, config v{config.version}"
        )
        click.echo(f"Redis memory: {usage.describe() if usage else 'unknown (INFO denied)'}")
        click.echo(format_table(views))
        for group in (g for g in groups if g.is_lagging):
            click.echo(f"warning: {group.describe()}")


def _size(stream: IO[bytes]) -> int | None:
    try:
        here = stream.tell()
        end = stream.seek(0, 2)
        stream.seek(here)
        return end - here
    except OSError:
        return None


class _progress:
    """A progress bar on a terminal; a no-op callable otherwise."""

    def __init__(self, show: bool, length: int | None, label: str) -> None:
        self._bar: Any = (
            click.progressbar(length=length, label=label, file=sys.stderr)
            if show and length
            else None
        )

    def __enter__(self) -> Callable[[int], None]:
        if self._bar is None:
            return lambda _n: None
        bar = self._bar.__enter__()
        return bar.update  # type: ignore[no-any-return]

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
