"""Dramatiq with its Redis broker and one no-op actor; broker URL from BENCH_REDIS_URL.

Settings are Dramatiq's defaults (its middleware stack, no results backend); the worker
command line chooses processes and threads (see run_peer.py).
"""

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=os.environ["BENCH_REDIS_URL"])
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0)
def noop() -> None:
    pass
