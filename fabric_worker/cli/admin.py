"""``fabric dlq``: list, replay and purge dead letters.

Exit codes follow the rest of the CLI: 0 when everything asked for was done,
1 when something was left undone (reported on stderr) or Redis failed, 2 for
bad arguments or config.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click
import orjson

from fabric_worker.broker.dlq import (
    DeadLetter,
    DeadLetters,
    ReplayOutcome,
    count_dead_letters,
    format_dead_letters,
    iter_dead_letters,
)
from fabric_worker.broker.namespace import load_config
from fabric_worker.cli.context import Context, pass_context

DEFAULT_LIST_LIMIT = 100

F = TypeVar("F", bound=Callable[..., Any])


def _lanes(ctx: Context, lane: int | None) -> tuple[int, ...]:
    lanes = load_config(ctx.redis, ctx.keys).lanes
    if lane is None:
        return lanes
    if lane not in lanes:
        raise click.BadParameter(
            f"{lane} is not a lane of namespace {ctx.keys.namespace!r} "
            f"(lanes: {','.join(map(str, lanes))})",
            param_hint="--lane",
        )
    return (lane,)


def _name(letter: DeadLetter) -> str:
    if letter.job_id is None:
        return f"dead letter {letter.entry_id} (lane {letter.lane}, no job id in its header)"
    return f"job {letter.job_id} (lane {letter.lane}, dead letter {letter.entry_id})"


@click.group()
def dlq() -> None:
    """Inspect, replay and purge dead letters (all lanes unless --lane)."""


@dlq.command("list")
@click.option("--lane", type=int, default=None, help="Only this lane.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=DEFAULT_LIST_LIMIT,
    show_default=True,
    help="Show at most this many (oldest first, lane by lane).",
)
@pass_context
def dlq_list(ctx: Context, lane: int | None, as_json: bool, limit: int) -> None:
    """List dead letters: job id, reason, deliveries, last error, worker, time."""
    lanes = _lanes(ctx, lane)
    total = sum(count_dead_letters(ctx.redis, ctx.keys, lanes).values())
    letters: list[DeadLetter] = []
    for letter in iter_dead_letters(ctx.redis, ctx.keys, lanes, page_size=min(limit, 500)):
        if len(letters) == limit:
            break
        letters.append(letter)
    if as_json:
        doc = {
            "namespace": ctx.keys.namespace,
            "total": total,
            "dead_letters": [d.to_json() for d in letters],
        }
        click.echo(orjson.dumps(doc).decode())
        return
    if not letters:
        click.echo(f"no dead letters in namespace {ctx.keys.namespace!r}")
        return
    click.echo(format_dead_letters(letters))
    if total > len(letters):
        click.echo(f"showing {len(letters)} of {total} dead letters (--limit)", err=True)


def _select(
    ctx: Context, lane: int | None, ids: tuple[str, ...], entries: tuple[str, ...], every: bool
) -> tuple[Iterable[DeadLetter], set[str]]:
    """The dead letters named by --id/--entry, or every one with --all; and a
    set that the iteration empties of the names it found."""
    if every == bool(ids or entries):
        raise click.UsageError("name dead letters with --id/--entry, or pass --all (not both)")
    lanes = _lanes(ctx, lane)
    letters = iter_dead_letters(ctx.redis, ctx.keys, lanes)
    missing = {*ids, *entries}
    if every:
        return letters, missing

    def chosen() -> Iterable[DeadLetter]:
        for letter in letters:
            if letter.job_id in ids or letter.entry_id in entries:
                missing.discard(letter.job_id or "")
                missing.discard(letter.entry_id)
                yield letter

    return chosen(), missing


_select_options = [
    click.option("--lane", type=int, default=None, help="Only this lane."),
    click.option("--id", "ids", multiple=True, metavar="JOBID", help="A job id (repeatable)."),
    click.option(
        "--entry",
        "entries",
        multiple=True,
        metavar="ENTRYID",
        help="A dead letter's own entry id, as `dlq list` shows it (repeatable).",
    ),
    click.option("--all", "every", is_flag=True, help="Every dead letter of the lanes."),
]


def select_options(f: F) -> F:
    """The options that name dead letters, shared by replay and purge."""
    for option in reversed(_select_options):
        f = option(f)
    return f


@dlq.command()
@select_options
@click.option(
    "--force",
    is_flag=True,
    help="Also replay entries whose header does not parse (no job state, no backlog cost).",
)
@pass_context
def replay(
    ctx: Context,
    lane: int | None,
    ids: tuple[str, ...],
    entries: tuple[str, ...],
    every: bool,
    force: bool,
) -> None:
    """Put dead-lettered jobs back on their lanes after a fix.

    Each is re-added with its original header and tokens, its job state set
    back to queued and its padded cost added to the lane's backlog (past the
    backlog cap if need be: this is an operator's decision), and its dead
    letter deleted, in one atomic step. A job that was meanwhile completed or
    submitted again is left alone, as is an entry whose header does not parse
    (unless --force). Exit status 1 if anything named was left.
    """
    letters, missing = _select(ctx, lane, ids, entries, every)
    dead = DeadLetters(ctx.redis, ctx.keys)
    num_replayed = num_kept = 0
    for letter in letters:
        result = dead.replay(letter, force=force)
        if result.outcome is ReplayOutcome.REPLAYED:
            num_replayed += 1
            click.echo(f"replayed {_name(letter)} as entry {result.detail}")
        elif result.outcome is ReplayOutcome.NOT_REPLAYABLE:
            num_kept += 1
            click.echo(
                f"kept {_name(letter)}: its header does not give a job id and max_new_tokens, "
                f"so it is not replayable (--force replays it as is)",
                err=True,
            )
        else:
            num_kept += 1
            state = f" (job state {result.detail!r})" if result.detail else ""
            click.echo(f"kept {_name(letter)}: {result.outcome.value}{state}", err=True)
    for name in sorted(missing):
        click.echo(f"no dead letter for {name!r}", err=True)
    click.echo(f"replayed {num_replayed}, kept {num_kept}, not found {len(missing)}")
    if num_kept or missing:
        sys.exit(1)


@dlq.command()
@select_options
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_context
def purge(
    ctx: Context,
    lane: int | None,
    ids: tuple[str, ...],
    entries: tuple[str, ...],
    every: bool,
    yes: bool,
) -> None:
    """Delete dead letters for good.

    The jobs' states stay 'dead' until the namespace's retention expires, so
    submitting the same job id again is still deduped (reported as a
    duplicate) until then. Exit status 1 if a named dead letter was not found.
    """
    letters, missing = _select(ctx, lane, ids, entries, every)
    chosen = list(letters)
    if chosen and not yes:
        if not sys.stdin.isatty():
            raise click.UsageError(
                f"this deletes {len(chosen)} dead letter(s); pass --yes to confirm "
                f"(stdin is not a terminal)"
            )
        click.confirm(
            f"delete {len(chosen)} dead letter(s) of namespace {ctx.keys.namespace!r}?",
            abort=True,
        )
    deleted = DeadLetters(ctx.redis, ctx.keys).purge(chosen)
    for name in sorted(missing):
        click.echo(f"no dead letter for {name!r}", err=True)
    click.echo(f"purged {sum(deleted)}, not found {len(missing) + deleted.count(False)}")
    if missing or not all(deleted):
        sys.exit(1)
