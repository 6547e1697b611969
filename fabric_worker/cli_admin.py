"""Operator commands beyond the basics: dead letters and ACL rules."""

from __future__ import annotations

import click


@click.group()
def dlq() -> None:
    """Inspect, replay and purge dead letters."""


@click.command()
def acl() -> None:
    """Print least-privilege Redis ACL rules for the producer, worker and reader roles."""
    raise click.ClickException("not implemented yet")
