"""A prototype of a change proposed to the worker's ingress, to measure it here.

Found by bench/overhead.py: when the admission queue has room for less than one job
(0 < room < the job's cost), ``Worker._ingress`` reads one entry (COUNT is clamped to 1),
``_accept`` cannot push it and hands it back with the requeue script, and the loop goes
round again at once: a busy loop of MGET + XREADGROUP + requeue (XPENDING, XRANGE, XADD,
SET, XACK, XDEL) that runs until admission frees room, burns the event-loop thread and
the GIL the engine thread needs, and moves the requeued entries to the tail of their lane.
``_reclaim`` likewise walks the whole PEL with XAUTOCLAIM COUNT 1.

The proposed fix is to treat "room for less than one job" as full: wait on ``_room``
instead of reading. In worker.py that is, in ``_ingress``::

    room = self.queue.max_tokens - self.queue.queued_tokens
    if room < self._min_read_room():          # was: if room <= 0:
        ...wait on self._room...

with ``_min_read_room()`` the estimated cost of one job of the lane being read (the
``estimate`` of ``_read_count``), and the same test in ``_reclaim``. This module gets
the same effect without editing worker.py: the worker's admission queue reports itself
full while its free room is below that estimate. It is bench code, for measuring only.
"""

from __future__ import annotations

from collections.abc import Callable

from engines.contract import Capacity
from fabric_worker.core.classes import ClassQueue
from fabric_worker.core.dispatcher import Dispatcher
from fabric_worker.worker.service import Worker


class _RoomQueue(ClassQueue):  # type: ignore[type-arg]
    """A ClassQueue that looks full to the ingress while it has room for less than one job."""

    def __init__(self, max_tokens: int, max_wait_s: float, min_room: Callable[[], int]) -> None:
        super().__init__(max_tokens=max_tokens, max_wait_s=max_wait_s)
        self._min_room = min_room

    @property
    def queued_tokens(self) -> int:
        queued = self._queued_tokens
        if self._num_items and self.max_tokens - queued < self._min_room():
            return self.max_tokens
        return queued


class ProposedWorker(Worker):
    """The fabric Worker with the proposed ingress fix (see the module docstring)."""

    def make_dispatcher(self, capacity: Capacity) -> Dispatcher:
        dispatcher = super().make_dispatcher(capacity)
        reads = dispatcher.reads

        def one_job() -> int:
            current = reads.chooser.current
            return reads.estimate(current if current is not None else self.config.lanes[0])

        queue = _RoomQueue(dispatcher.queue.max_tokens, dispatcher.queue.max_wait_s, one_job)
        dispatcher.queue = reads.queue = queue
        return dispatcher
