"""Celery with its Redis broker and one no-op task; broker URL from BENCH_REDIS_URL.

Defaults throughout (prefetch multiplier 4, early ack) except that results are ignored:
no result backend is configured, as in Celery's own "first steps".
"""

import os

from celery import Celery

app = Celery("bench", broker=os.environ["BENCH_REDIS_URL"])
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task
def noop() -> None:
    pass
