"""The simulated GPU engine: the :class:`~engines.contract.Engine` contract
over a batcher and a cost model, on an injectable clock.

Each iteration is: the batcher plans it (which tokens run), the cost model
prices it, the clock spends that time. On the wall clock the engine really
blocks for the iteration's duration, like a GPU step; on a virtual clock it
returns at once and only the clock's reading moves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from engines.base import EngineBase
from engines.clock import Clock
from engines.contract import EngineFatalError, EngineOutput, EngineRequest, EngineStats
from engines.manifest import Manifest, ManifestError
from engines.requests import blocks_for
from engines.sim.cost import CostModel
from engines.sim.inflight import InflightBatcher
from engines.sim.prefix_cache import PrefixCache, block_hashes
from engines.sim.profiles import GPUS, MODELS
from engines.sim.sequence import Batcher, SimSequence
from engines.sim.static import StaticBatcher

BATCHING_MODES = ("inflight", "static")


@dataclass(frozen=True, slots=True)
class SimFaults:
    """Failures to inject; None means the fault is off."""

    poison_token: int | None = None  # requests whose prompt holds it fail (ERROR)
    fatal_after_steps: int | None = None  # poll() raises EngineFatalError after this many
    hang_on_close_s: float | None = None  # close() blocks this long (clock time)


class SimEngine(EngineBase):
    """A GPU by cost model. See :mod:`engines.sim` for what it models."""

    name = "sim"

    def __init__(
        self,
        manifest: Manifest,
        *,
        clock: Clock | None = None,
        batching: str = "inflight",
        faults: SimFaults | None = None,
    ) -> None:
        if manifest.device not in GPUS:
            raise ManifestError(
                None,
                "device",
                f"{manifest.device!r} is not a GPU the simulator knows ({_known(GPUS)})",
            )
        if manifest.model not in MODELS:
            raise ManifestError(
                None,
                "model",
                f"{manifest.model!r} is not a model the simulator knows ({_known(MODELS)})",
            )
        if batching not in BATCHING_MODES:
            raise ValueError(f"batching: {batching!r} is not one of {', '.join(BATCHING_MODES)}")
        super().__init__(manifest, clock=clock)
        self._faults = faults if faults is not None else SimFaults()
        self._cost = CostModel(GPUS[manifest.device], MODELS[manifest.model], manifest.dtype)
        self._cache = PrefixCache(manifest.kv_cache_tokens // manifest.kv_block_tokens)
        self._is_inflight = batching == "inflight"
        self._batcher: Batcher = (
            InflightBatcher(self._capacity, self._cache, self._stats)
            if self._is_inflight
            else StaticBatcher(self._capacity, self._stats)
        )
        self._active: set[int] = set()  # ids the batcher holds
        self._ready_ids: set[int] = set()  # ids of held requests among _ready
        self._fatal: str | None = None

    def poll(self, timeout_s: float) -> list[EngineOutput]:
        """Run iterations until a request finishes or ``timeout_s`` of clock time passed.

        Returns at once when outputs are waiting or the engine holds nothing.
        An iteration is never cut short, so a poll can overrun its timeout by
        up to one iteration; it always runs at least one when there is work.
        """
        self._owner.check()
        self._check_open()
        if self._fatal is not None:
            raise EngineFatalError(self._fatal)
        if not self._ready and self._active:
            deadline_s = self._clock.now_s() + max(timeout_s, 0.0)
            while True:
                self._run_iteration()
                if self._ready or not self._active or self._clock.now_s() >= deadline_s:
                    break
        self._ready_ids.clear()
        return self._take_ready()

    def cancel(self, request_ids: Iterable[int]) -> None:
        """Abort requests; each comes back from the next poll() as CANCELLED."""
        self._owner.check()
        for request_id in request_ids:
            if request_id not in self._active:
                continue  # unknown, or already finished and waiting in _ready
            output = self._batcher.cancel(request_id, self._stats.num_steps)
            if output is not None:
                self._finish(output)

    def stats(self) -> EngineStats:
        """A snapshot. ``extra`` holds gauges: num_waiting, num_running,
        kv_used_blocks, prefix_cache_blocks."""
        self._owner.check()
        extra = {
            "num_waiting": float(self._batcher.num_waiting),
            "num_running": float(self._batcher.num_running),
            "kv_used_blocks": float(self._batcher.num_used_blocks),
            "prefix_cache_blocks": float(len(self._cache)),
        }
        return replace(self._stats, extra=extra)

    def _release(self) -> None:
        """Drop every request; may hang if a fault says so."""
        if self._faults.hang_on_close_s is not None:
            self._clock.sleep(self._faults.hang_on_close_s)
        self._active.clear()
        self._ready_ids.clear()

    def _run_iteration(self) -> None:
        fatal_after = self._faults.fatal_after_steps
        if fatal_after is not None and self._stats.num_steps >= fatal_after:
            self._fatal = f"sim: injected fatal error after {fatal_after} iterations"
            raise EngineFatalError(self._fatal)
        work, finished = self._batcher.step(self._stats.num_steps)
        if work.num_tokens == 0:
            raise RuntimeError("sim: invariant broken: an iteration with work scheduled none")
        seconds = self._cost.iteration_s(work)
        self._clock.sleep(seconds)
        self._stats.busy_s += seconds
        self._stats.num_steps += 1
        for output in finished:
            self._finish(output)

    def _finish(self, output: EngineOutput) -> None:
        self._active.discard(output.request_id)
        self._ready_ids.add(output.request_id)
        self._ready.append(output)

    def _holds(self, request_id: int) -> bool:
        return request_id in self._active or request_id in self._ready_ids

    def _extra_problem(self, request: EngineRequest) -> str | None:
        poison = self._faults.poison_token
        if poison is not None and poison in request.prompt:
            return f"poison token {poison} in prompt"
        return None

    def _start(self, request: EngineRequest) -> None:
        self._batcher.add(self._sequence(request))
        self._active.add(request.request_id)

    def _sequence(self, request: EngineRequest) -> SimSequence:
        block_tokens = self._capacity.kv_block_tokens
        return SimSequence(
            request=request,
            num_blocks=blocks_for(len(request.prompt) + request.max_new_tokens, block_tokens),
            block_hashes=block_hashes(request.prompt, block_tokens) if self._is_inflight else [],
        )


def _known(names: Iterable[str]) -> str:
    return "known: " + ", ".join(sorted(names))
