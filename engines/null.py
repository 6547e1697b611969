"""``null``: an engine that costs nothing, for supply-chain benchmarks.

Every request submitted finishes on the next :meth:`NullEngine.poll` with
the same tokens the simulator would produce
(:func:`engines.sim.outputs.expected_output`, computed for the whole poll at
once by :func:`engines.sim.outputs.expected_outputs`), and no time passes. What is
left to measure is everything around the engine: Redis, admission, the
drain. Bad requests fail exactly as in ``sim``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from engines.base import EngineBase
from engines.contract import EngineOutput, EngineRequest, EngineStats, FinishReason
from engines.manifest import Manifest, ManifestError
from engines.sim.outputs import expected_outputs


class NullEngine(EngineBase):
    """The zero-cost :class:`~engines.contract.Engine`. Its manifest's device is ``cpu``."""

    name = "null"

    def __init__(self, manifest: Manifest) -> None:
        if manifest.device != "cpu":
            raise ManifestError(
                None, "device", f"{manifest.device!r}: the null engine runs on 'cpu' only"
            )
        super().__init__(manifest)
        self._pending: dict[int, EngineRequest] = {}  # submitted, not yet polled

    def poll(self, timeout_s: float) -> list[EngineOutput]:
        """Finish everything submitted; never waits."""
        self._owner.check()
        self._check_open()
        outputs = self._take_ready()
        requests = list(self._pending.values())
        if requests:
            self._stats.num_steps += 1
        finished = expected_outputs(
            [r.prompt for r in requests],
            [r.max_new_tokens for r in requests],
            [r.end_id for r in requests],
        )
        num_prompt = sum(len(r.prompt) for r in requests)
        num_generated = 0
        for request, (tokens, reason) in zip(requests, finished, strict=True):
            num_generated += len(tokens)
            outputs.append(EngineOutput(request.request_id, tokens, reason))
        self._stats.prompt_tokens += num_prompt
        self._stats.generated_tokens += num_generated
        self._stats.computed_tokens += num_prompt + num_generated
        self._pending.clear()
        return outputs

    def cancel(self, request_ids: Iterable[int]) -> None:
        """Cancelled requests come back from the next poll with no tokens."""
        self._owner.check()
        for request_id in request_ids:
            if self._pending.pop(request_id, None) is not None:
                self._ready.append(EngineOutput(request_id, [], FinishReason.CANCELLED))

    def stats(self) -> EngineStats:
        """A snapshot of the counters; ``busy_s`` stays 0."""
        self._owner.check()
        return replace(self._stats, extra={})

    def _holds(self, request_id: int) -> bool:
        return request_id in self._pending

    def _start(self, request: EngineRequest) -> None:
        self._pending[request.request_id] = request

    def _release(self) -> None:
        self._pending.clear()
