"""Reading results back: a reader group's stream of results, or jobs by id."""

from __future__ import annotations

import sys

import click
import orjson

from fabric_worker.broker.namespace import load_config
from fabric_worker.broker.results import ensure_result_groups, read_results
from fabric_worker.broker.transient import ride_out
from fabric_worker.cli.context import Context, pass_context
from fabric_worker.wire.entries import EntryError, result_json
from fabric_worker.wire.fleet_config import FleetConfig
from producers.client import FabricClient


@click.command()
@click.option("--follow", is_flag=True, help="Keep waiting for new results.")
@click.option("--from-start", is_flag=True, help="Rewind this group to the first result.")
@click.option(
    "--group",
    default="results",
    show_default=True,
    help="Reader group: each group sees every result once.",
)
@pass_context
def results(ctx: Context, follow: bool, from_start: bool, group: str) -> None:
    """Print results as JSONL, continuing where this group last stopped."""

    def open_group() -> FleetConfig:
        config = load_config(ctx.redis, ctx.keys)
        ensure_result_groups(ctx.redis, ctx.keys, config.lanes, group, from_start=from_start)
        return config

    # A follower started during a failover waits for the new master.
    config = ride_out(open_group, budget_s=30.0)
    out = sys.stdout.buffer
    items = read_results(
        ctx.redis,
        ctx.keys,
        config.lanes,
        group=group,
        follow=follow,
        log=lambda line: click.echo(line, err=True),
    )
    for item in items:
        if isinstance(item, EntryError):
            click.echo(f"skipped a malformed result: {item.reason}", err=True)
            continue
        out.write(orjson.dumps(result_json(item)) + b"\n")
        if follow:
            out.flush()
    out.flush()


# Why a lookup holds no result, where the state alone does not say.
LOOKUP_NOTES = {
    "trimmed": "finished, but its result was trimmed: older than the retention of {} s",
    "unknown": "never submitted here, or finished longer ago than the retention of {} s",
}


@click.command()
@click.argument("ids", nargs=-1, required=True)
@pass_context
def result(ctx: Context, ids: tuple[str, ...]) -> None:
    """Look jobs up by id: one JSON line each, the result or the job's state."""
    client = FabricClient(ctx.redis, ctx.keys.namespace)
    for found in client.results(ids):
        doc = result_json(found.result) if found.result else {"id": found.id}
        doc |= {"state": found.state, "lane": found.lane}
        if found.state in LOOKUP_NOTES:
            doc["note"] = LOOKUP_NOTES[found.state].format(client.config.retention_s)
        click.echo(orjson.dumps(doc).decode())
