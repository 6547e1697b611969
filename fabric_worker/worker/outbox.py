"""The engine thread's outbox: finished outputs on their way to the drain.

One put per engine poll, of everything that poll finished, and one take per
drain round, of up to a result batch: two lock round trips per batch instead
of one ``queue.Queue`` put and get per output. Bounded by a count of outputs
(level 7 of DESIGN section 5): a put waits while the batch would not fit,
unless the outbox is empty, so a poll larger than the bound still goes, alone.
Order is kept: outputs come out as they went in, batches split where a take
ends.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from engines.contract import EngineOutput

RECHECK_S = 0.1  # how often a waiting put looks whether the worker is stopping


class Outbox:
    """A bounded, ordered hand-off of output batches from one thread to another."""

    def __init__(self, max_outputs: int) -> None:
        if max_outputs < 1:
            raise ValueError(f"max_outputs must be >= 1, got {max_outputs!r}")
        self.max_outputs = max_outputs
        self._batches: deque[list[EngineOutput]] = deque()
        self._num_outputs = 0
        self._cond = threading.Condition()

    def qsize(self) -> int:
        """Outputs waiting (a gauge: read without the lock)."""
        return self._num_outputs

    def empty(self) -> bool:
        return self._num_outputs == 0

    def put(self, outputs: list[EngineOutput], *, is_stopping: Callable[[], bool]) -> bool:
        """Add a batch, waiting while it would overfill the outbox; False (and
        the batch dropped) if the worker stops meanwhile: reclaim redoes those jobs."""
        if not outputs:
            return True
        with self._cond:
            while self._num_outputs and self._num_outputs + len(outputs) > self.max_outputs:
                if is_stopping():
                    return False
                self._cond.wait(RECHECK_S)
            self._batches.append(outputs)
            self._num_outputs += len(outputs)
            self._cond.notify_all()
        return True

    def take(self, max_outputs: int, timeout_s: float = 0.0) -> list[EngineOutput]:
        """Up to ``max_outputs`` outputs, oldest first; waits up to ``timeout_s``
        for the first one (0: never waits; the drain is woken by a callback)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._batches:
                left_s = deadline - time.monotonic()
                if left_s <= 0:
                    return []
                self._cond.wait(left_s)
            taken: list[EngineOutput] = []
            while self._batches and len(taken) < max_outputs:
                batch = self._batches.popleft()
                room = max_outputs - len(taken)
                if len(batch) > room:
                    self._batches.appendleft(batch[room:])
                    batch = batch[:room]
                taken += batch
            self._num_outputs -= len(taken)
            self._cond.notify_all()
        return taken
