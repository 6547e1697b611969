"""``fabric batch``: status, wait, results, cancel, list and delete of batches."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from fabric_worker.cli.context import EXIT_CONFIG, EXIT_WAIT_TIMEOUT, Context, pass_context
from fabric_worker.wire.batch_record import BatchCounts
from producers.client import FabricClient
from producers.validation import check_batch, new_batch_name
from producers.waiting import WaitTimeout


@click.group()
def batch() -> None:
    """Batches: jobs submitted together under one name (`fabric submit --batch`)."""


def batch_name(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """``submit --batch``'s value: checked, or made up when left empty."""
    if value == "":
        return new_batch_name(time.time())
    if value is not None:
        try:
            check_batch(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _client(ctx: Context) -> FabricClient:
    return FabricClient(ctx.redis, ctx.keys.namespace)


def _when(unix: float | None) -> str:
    if unix is None:
        return "-"
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _line(c: BatchCounts) -> str:
    cancelled = " (cancelled)" if c.is_cancelled else ""
    return (
        f"batch {c.name}{cancelled}: total {c.num_total}, done {c.num_done}, dead {c.num_dead}, "
        f"cancelled {c.num_cancelled}, left {c.num_left}; created {_when(c.created)}, "
        f"finished {_when(c.finished if c.is_finished else None)}"
    )


def _known(client: FabricClient, name: str) -> BatchCounts:
    try:
        counts = client.batch(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    if counts is None:
        click.echo(f"error: batch {name!r} is not known (never made, expired or deleted)", err=True)
        sys.exit(EXIT_CONFIG)
    return counts


@batch.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a line.")
@pass_context
def status(ctx: Context, name: str, as_json: bool) -> None:
    """The batch's jobs: total, done, dead, cancelled, left; created and finished."""
    counts = _known(_client(ctx), name)
    click.echo(orjson.dumps(counts.to_json()).decode() if as_json else _line(counts))


@batch.command()
@click.argument("name")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0),
    default=None,
    help="Give up after S seconds with exit status 7 [default: wait for ever].",
)
@pass_context
def wait(ctx: Context, name: str, timeout_s: float | None) -> None:
    """Wait until every job of the batch is done, dead or cancelled.

    Exit 0 then, 7 if some were still queued or running at --timeout; the
    counts are printed either way. A progress bar on a terminal, one count
    line per change otherwise."""
    client = _client(ctx)
    first = _known(client, name)
    with _Shown(sys.stderr.isatty(), first) as show:
        try:
            counts = client.wait(batch=name, timeout_s=timeout_s, on_poll=show)
        except WaitTimeout as exc:
            click.echo(_line(exc.last))
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_WAIT_TIMEOUT)
    click.echo(_line(counts))


class _Shown:
    """Progress while waiting: a rich bar on a terminal, else a line per change."""

    def __init__(self, is_terminal: bool, first: BatchCounts) -> None:
        self._last: tuple[int, int] | None = None
        self._bar: Progress | None = None
        if is_terminal:
            self._bar = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._task = self._bar.add_task(f"batch {first.name}", total=first.num_total)

    def __enter__(self) -> _Shown:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)

    def __call__(self, counts: BatchCounts) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=counts.num_terminal, total=counts.num_total)
            return
        now = (counts.num_terminal, counts.num_total)
        if now != self._last:
            self._last = now
            click.echo(f"{counts.num_terminal}/{counts.num_total} finished", err=True)


@batch.command()
@click.argument("name")
@pass_context
def results(ctx: Context, name: str) -> None:
    """Every result of the batch once, as JSONL, in finish order; dead letters
    included (state dead, with their reason), cancelled jobs as results with
    finish_reason cancelled."""
    client = _client(ctx)
    _known(client, name)
    out = sys.stdout.buffer
    for doc in client.batch_results(name):
        out.write(orjson.dumps(doc) + b"\n")
    out.flush()


@batch.command()
@click.argument("name")
@pass_context
def cancel(ctx: Context, name: str) -> None:
    """Cancel the batch: queued jobs are not started, running ones are aborted
    in their engine, each gets a result with finish_reason cancelled. The
    batch takes no new jobs afterwards."""
    client = _client(ctx)
    _known(client, name)
    outcome = client.cancel_batch(name)
    click.echo(f"cancelled {outcome.num_cancelled} job(s)")
    for entry in outcome.malformed:
        click.echo(
            f"left entry {entry.entry_id} of lane {entry.lane}: {entry.reason} "
            "(a worker dead-letters it)",
            err=True,
        )
    click.echo(_line(_known(client, name)))


@batch.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSONL instead of lines.")
@pass_context
def list_(ctx: Context, as_json: bool) -> None:
    """Every batch still kept (until its results' retention), oldest first."""
    for counts in _client(ctx).batches():
        click.echo(orjson.dumps(counts.to_json()).decode() if as_json else _line(counts))


@batch.command()
@click.argument("name")
@pass_context
def delete(ctx: Context, name: str) -> None:
    """Remove a finished batch's counts (its results stay until their retention).
    A batch with jobs still queued or running is refused: exit 2."""
    client = _client(ctx)
    try:
        gone: Any = client.delete_batch(name)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    if gone is None:
        click.echo(f"error: batch {name!r} is not known (never made, expired or deleted)", err=True)
        sys.exit(EXIT_CONFIG)
    click.echo(f"deleted batch {name}")
