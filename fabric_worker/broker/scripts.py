"""Server-side scripts: loaded once from the package's ``.lua`` files."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript, Script


@cache
def source(name: str) -> str:
    """The text of ``fabric_worker/broker/lua/<name>.lua``."""
    return resources.files("fabric_worker.broker").joinpath("lua", f"{name}.lua").read_text()


def register(client: Any, name: str) -> Script | AsyncScript:
    """Register a script with a redis-py client (sync, async or cluster).

    redis-py runs it by EVALSHA and reloads it on NOSCRIPT, so a restarted
    server is handled without our help.
    """
    script: Script | AsyncScript = client.register_script(source(name))
    return script
