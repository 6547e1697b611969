"""``fabric acl``: least-privilege ACL rules for the producer, worker and reader roles.

Exit codes follow the rest of the CLI: 0 done, 1 Redis failed, 2 bad arguments.
"""

from __future__ import annotations

import os

import click

from fabric_worker.broker.client import AuthError, RefusedError
from fabric_worker.broker.connection import redact
from fabric_worker.broker.transient import TRANSIENT_ERRORS
from fabric_worker.cli.context import Context, pass_context
from fabric_worker.fleet.acl import (
    Role,
    parse_server_version,
    passwords_from_env,
    role_rules,
    setuser_line,
)


def _passwords(specs: tuple[str, ...]) -> dict[Role, str]:
    try:
        return passwords_from_env(specs, os.environ)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--password-env") from None


def _server_version(ctx: Context, given: str) -> tuple[int, int]:
    if given != "auto":
        try:
            return parse_server_version(given)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--server-version") from None
    try:
        info = ctx.redis.info("server")
    except (*TRANSIENT_ERRORS, AuthError, RefusedError) as exc:
        raise click.ClickException(
            f"cannot ask Redis at {redact(ctx.url)} for its version ({exc}); "
            f"pass --server-version MAJOR.MINOR"
        ) from None
    return parse_server_version(str(info["redis_version"]))


@click.command()
@click.option(
    "--user-prefix",
    default="fabric",
    show_default=True,
    help="Users are named PREFIX-producer, PREFIX-worker, PREFIX-reader.",
)
@click.option(
    "--password-env",
    "password_envs",
    multiple=True,
    metavar="ROLE=ENV_VAR",
    help="Take ROLE's password from ENV_VAR (repeatable). Only its SHA-256 is printed. "
    "A role without one is created 'off'.",
)
@click.option(
    "--server-version",
    default="auto",
    show_default=True,
    help="Redis version the rules are for (MAJOR.MINOR); 'auto' asks the server.",
)
@pass_context
def acl(
    ctx: Context, user_prefix: str, password_envs: tuple[str, ...], server_version: str
) -> None:
    """Print least-privilege Redis ACL rules for the producer, worker and reader roles.

    One `ACL SETUSER` line per role, limited to the namespace's keys, for
    `redis-cli` (`fabric acl ... | redis-cli -u ADMIN_URL`). Each line starts
    with `reset`, so applying it again replaces what the user had. Producer:
    `fabric submit`; worker: `fabric worker`; reader: `fabric results`,
    `inspect`, `health`, `top`. `fabric init`, `dlq` and `autoscale` are
    operator commands and need an admin user.
    """
    passwords = _passwords(password_envs)
    version = _server_version(ctx, server_version)
    try:
        rules = role_rules(ctx.keys.namespace, user_prefix=user_prefix, server_version=version)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--user-prefix") from None
    for rule in rules:
        click.echo(setuser_line(rule, passwords.get(rule.role)))
        if rule.role not in passwords:
            click.echo(
                f"note: {rule.username} has no password (--password-env "
                f"{rule.role.value}=ENV_VAR), so it is created 'off'",
                err=True,
            )
