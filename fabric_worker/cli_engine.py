"""``fabric engine ...``: engine tooling (building a local test model)."""

from __future__ import annotations

import click


@click.group()
def engine() -> None:
    """Engine tooling."""
