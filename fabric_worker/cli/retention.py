"""``fabric trim``: trim results past the namespace's retention now.

Workers already do it, each lane every few seconds and at once when Redis is
full (worker/housekeeping.py); this is for an operator who wants the memory
back without waiting, or runs no worker. It keeps the same promise: a result
goes only once it is older than the retention by the server's clock.
"""

from __future__ import annotations

import click
import orjson

from fabric_worker.broker.namespace import load_config
from fabric_worker.broker.trim import trim_results
from fabric_worker.cli.context import Context, pass_context


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of lines.")
@pass_context
def trim(ctx: Context, as_json: bool) -> None:
    """Trim results older than the retention now (dead letters are kept)."""
    config = load_config(ctx.redis, ctx.keys)
    trimmed = trim_results(ctx.redis, ctx.keys, config.lanes, config.retention_s)
    if as_json:
        doc = {
            "namespace": ctx.keys.namespace,
            "retention_s": config.retention_s,
            "cutoff": str(trimmed.cutoff),
            "removed": {str(lane): n for lane, n in trimmed.num_removed.items()},
        }
        click.echo(orjson.dumps(doc).decode())
        return
    for lane, n in trimmed.num_removed.items():
        if n:
            click.echo(f"lane {lane}: trimmed {n} results")
    click.echo(
        f"trimmed {trimmed.num_removed_total} results older than the retention of "
        f"{config.retention_s} s (entry ids below {trimmed.cutoff})"
    )
