"""What every ``fabric`` subcommand needs: where Redis is and which namespace.

A leaf: the command modules import it, and it imports none of them.
"""

from __future__ import annotations

import click

from fabric_worker.broker.client import SyncRedis
from fabric_worker.broker.connection import connect, redact
from fabric_worker.wire.keys import Keys

EXIT_CONFIG = 2
EXIT_REDIS_FULL = 6  # submit: Redis stayed out of memory (worker exits 0-5 are taken)
EXIT_WAIT_TIMEOUT = 7  # batch wait: jobs still unfinished at --timeout


class Context:
    """What every subcommand needs: where Redis is and which namespace."""

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.keys = Keys(namespace)
        self._client: SyncRedis | None = None

    @property
    def redis(self) -> SyncRedis:
        if self._client is None:
            try:
                self._client = connect(self.url)
            except ValueError as exc:
                # Never echo the URL itself: it may hold a password.
                raise click.BadParameter(
                    f"{redact(self.url)} is not a usable Redis URL: {type(exc).__name__}",
                    param_hint="--redis-url",
                ) from None
        return self._client


pass_context = click.make_pass_decorator(Context)
