"""The ``fabric`` command group and its global options: the one place that
reads the environment (``FABRIC_REDIS_URL``, ``FABRIC_NAMESPACE``)."""

from __future__ import annotations

import click

from fabric_worker.broker.connection import DEFAULT_URL
from fabric_worker.cli.context import Context


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--redis-url",
    envvar="FABRIC_REDIS_URL",
    default=DEFAULT_URL,
    show_default=True,
    help="Redis URL (rediss:// for TLS). Env: FABRIC_REDIS_URL.",
)
@click.option(
    "--namespace",
    envvar="FABRIC_NAMESPACE",
    default="fabric",
    show_default=True,
    help="Key namespace of this fleet. Env: FABRIC_NAMESPACE.",
)
@click.pass_context
def cli(ctx: click.Context, redis_url: str, namespace: str) -> None:
    """Inference Fabric: feed a stock LLM engine from Redis Streams."""
    try:
        ctx.obj = Context(redis_url, namespace)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--namespace") from None
