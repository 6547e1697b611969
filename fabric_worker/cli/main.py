"""The ``fabric`` entry point: every command group on the root, and expected
failures turned into one clear line and an exit code."""

from __future__ import annotations

import sys

import click

from fabric_worker.broker.client import AuthError, RefusedError
from fabric_worker.broker.submit import BatchCancelledError
from fabric_worker.broker.transient import TRANSIENT_ERRORS, ReplicationShortfall
from fabric_worker.cli.acl import acl
from fabric_worker.cli.admin import dlq
from fabric_worker.cli.batch import batch
from fabric_worker.cli.context import EXIT_CONFIG, EXIT_REDIS_FULL
from fabric_worker.cli.engine import engine
from fabric_worker.cli.fleet import autoscale, health, top
from fabric_worker.cli.jobs import init, inspect, submit
from fabric_worker.cli.results import result, results
from fabric_worker.cli.retention import trim
from fabric_worker.cli.root import cli
from fabric_worker.cli.worker import worker
from fabric_worker.wire.fleet_config import ConfigError
from producers.client import BackpressureError, RedisMemoryError

for command in (
    init,
    submit,
    inspect,
    result,
    results,
    worker,
    health,
    top,
    autoscale,
    dlq,
    batch,
    trim,
    acl,
    engine,
):
    cli.add_command(command)


def main() -> None:
    """Entry point: turns expected failures into one clear line and an exit code."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except RedisMemoryError as exc:  # before BackpressureError, its base
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_REDIS_FULL)
    except BatchCancelledError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except BackpressureError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except AuthError as exc:
        # Before TRANSIENT_ERRORS: redis-py's AuthenticationError is a ConnectionError.
        click.echo(f"error: Redis refused the credentials: {exc}", err=True)
        sys.exit(1)
    except ReplicationShortfall as exc:  # before TRANSIENT_ERRORS, which holds it
        click.echo(f"error: Redis replication fell short: {exc}", err=True)
        sys.exit(1)
    except TRANSIENT_ERRORS as exc:
        click.echo(f"error: cannot reach Redis: {exc}", err=True)
        sys.exit(1)
    except RefusedError as exc:
        click.echo(f"error: Redis refused a command: {exc}", err=True)
        sys.exit(1)
