"""One request inside the simulator, and the interface its batchers share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from engines.contract import EngineOutput, EngineRequest, FinishReason
from engines.sim.cost import IterationWork
from engines.sim.outputs import expected_output


@dataclass(slots=True, eq=False)
class SimSequence:
    """A request the simulator holds.

    Its output is a pure function of the job (:func:`expected_output`),
    computed when the batcher first asks for it, so the batcher knows how
    many iterations a request will decode as soon as it starts.
    """

    request: EngineRequest
    num_blocks: int  # KV blocks reserved while it runs: prompt + max_new_tokens
    block_hashes: list[int]  # chained hashes of the prompt's full blocks
    num_prompt_done: int = 0  # prompt tokens whose KV exists (cached or computed)
    first_token_step: int | None = None  # the iteration that produced token 1
    _expected: tuple[list[int], FinishReason] | None = field(default=None, init=False, repr=False)

    @property
    def output(self) -> list[int]:
        """Every token it will generate, in order."""
        return self._result()[0]

    @property
    def request_id(self) -> int:
        return self.request.request_id

    @property
    def prompt_len(self) -> int:
        return len(self.request.prompt)

    def started_at(self) -> int:
        """The iteration that produced its first token (it must have one)."""
        if self.first_token_step is None:
            raise RuntimeError(f"sim: request {self.request_id} has not started decoding")
        return self.first_token_step

    def finished(self) -> EngineOutput:
        """Its output when it ran to the end."""
        tokens, reason = self._result()
        return EngineOutput(self.request_id, list(tokens), reason)

    def cancelled(self, num_generated: int) -> EngineOutput:
        """Its output when cancelled after ``num_generated`` tokens."""
        return EngineOutput(self.request_id, self.output[:num_generated], FinishReason.CANCELLED)

    def _result(self) -> tuple[list[int], FinishReason]:
        if self._expected is None:
            request = self.request
            self._expected = expected_output(request.prompt, request.max_new_tokens, request.end_id)
        return self._expected


class Batcher(Protocol):
    """Decides what each iteration computes (in-flight or static batching).

    A batcher owns the waiting and running requests and the KV accounting; it
    knows nothing of clocks or threads. It updates the engine's token counters
    (all of :class:`~engines.contract.EngineStats` but ``busy_s`` and
    ``num_steps``) as it schedules.
    """

    @property
    def num_waiting(self) -> int: ...

    @property
    def num_running(self) -> int: ...

    @property
    def num_used_blocks(self) -> int:
        """KV blocks reserved by the requests it runs."""
        ...

    def add(self, seq: SimSequence) -> None:
        """Queue a validated request (FIFO)."""
        ...

    def step(self, step: int) -> tuple[IterationWork, list[EngineOutput]]:
        """Plan and complete iteration number ``step`` (0, 1, ...).

        Returns the work done and the requests that finished with it. Only
        called while the batcher holds requests; every call makes progress.
        """
        ...

    def cancel(self, request_id: int, num_steps: int) -> EngineOutput | None:
        """Remove a request after ``num_steps`` iterations ran; its CANCELLED
        output, or None when the batcher does not hold it."""
        ...
