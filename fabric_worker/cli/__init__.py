"""The ``fabric`` command line (entry point ``fabric_worker.cli:main``)."""

from fabric_worker.cli.main import main
from fabric_worker.cli.root import cli

__all__ = ["cli", "main"]
