"""arq with one no-op job function; Redis from BENCH_REDIS_URL. arq's defaults
(max_jobs 10, results kept for an hour, poll delay 0.5 s), run with --burst."""

import os

from arq.connections import RedisSettings


async def noop(ctx: dict) -> None:
    pass


class WorkerSettings:
    functions = [noop]
    redis_settings = RedisSettings.from_dsn(os.environ["BENCH_REDIS_URL"])
