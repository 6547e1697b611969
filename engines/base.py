"""EngineBase: the part of the engine contract every adapter shares.

Each adapter extends it and supplies what differs: whether it holds a
request id (:meth:`EngineBase._holds`), how a checked request starts
(:meth:`EngineBase._start`), any check of its own
(:meth:`EngineBase._extra_problem`), and how its resources go
(:meth:`EngineBase._release`). The base owns the rest: the thread check on
every public call, the capacity, rejecting a bad request as its own ERROR
with the adapter's name in front, the list of outputs ready for the next
poll, and an idempotent close after which every call but close fails.
"""

from __future__ import annotations

from collections.abc import Sequence

from engines.clock import Clock, WallClock
from engines.contract import (
    Capacity,
    EngineFatalError,
    EngineOutput,
    EngineRequest,
    EngineStats,
    FinishReason,
    ThreadOwner,
)
from engines.manifest import Manifest
from engines.requests import duplicate_problem, request_problem


class EngineBase:
    """Shared skeleton of an :class:`~engines.contract.Engine`. Not an engine by itself."""

    name = "engine"  # prefixes every error this adapter reports

    def __init__(self, manifest: Manifest, *, clock: Clock | None = None) -> None:
        self._owner = ThreadOwner()
        self._capacity = manifest.capacity()
        self._clock: Clock = clock if clock is not None else WallClock()
        self._stats = EngineStats()
        self._ready: list[EngineOutput] = []  # finished, not yet returned by poll()
        self._is_closed = False

    @property
    def capacity(self) -> Capacity:
        self._owner.check()
        return self._capacity

    def submit(self, requests: Sequence[EngineRequest]) -> None:
        """Start requests; bad ones come back from the next poll() as ERROR."""
        self._owner.check()
        self._check_open()
        for request in requests:
            problem = self._problem(request)
            if problem is None:
                self._start(request)
            else:
                self._reject(request.request_id, problem)

    def close(self) -> None:
        """Release the engine. Idempotent."""
        self._owner.check()
        if self._is_closed:
            return
        self._is_closed = True
        self._ready.clear()
        self._release()

    # --- for the adapters ---------------------------------------------------------

    def _holds(self, request_id: int) -> bool:
        raise NotImplementedError

    def _start(self, request: EngineRequest) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def _extra_problem(self, request: EngineRequest) -> str | None:
        """The adapter's own check of a request that passed the common ones."""
        return None

    def _problem(self, request: EngineRequest) -> str | None:
        if self._holds(request.request_id):
            return duplicate_problem(request.request_id)
        problem = request_problem(request, self._capacity)
        return problem if problem is not None else self._extra_problem(request)

    def _reject(self, request_id: int, problem: str) -> None:
        self._ready.append(
            EngineOutput(request_id, [], FinishReason.ERROR, f"{self.name}: {problem}")
        )

    def _take_ready(self) -> list[EngineOutput]:
        outputs, self._ready = self._ready, []
        return outputs

    def _check_open(self) -> None:
        if self._is_closed:
            raise EngineFatalError(f"{self.name}: engine is closed")
