"""HfEngine: the :class:`~engines.contract.Engine` contract over a transformers causal LM.

Each iteration is one forward pass, either:

- a prefill of the group the :class:`~engines.hf.scheduler.Scheduler` lets
  join (one lane, left-padded to the group's longest prompt); its rows'
  first tokens come from it, and the rows that are not done yet are stacked
  onto the running batch's KV cache; or
- a decode step of the running batch, one token for every row.

So requests join at step boundaries, and finished sequences leave the batch
at once (the cache drops their rows and any padding every remaining row has
in common). Time is real: ``busy_s`` is the wall time of the forward passes,
the device synchronised.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import torch

from engines.base import EngineBase
from engines.checkpoint import gpu_names, read_config
from engines.clock import Clock
from engines.contract import (
    EngineFatalError,
    EngineOutput,
    EngineRequest,
    EngineStats,
    FinishReason,
)
from engines.hf.checks import (
    check_against_checkpoint,
    check_model_dir,
    resolve_device,
    torch_dtype_name,
)
from engines.hf.runner import Runner, cache_length, load_model, select_rows, stack
from engines.hf.scheduler import Row, Scheduler, cache_len_needed
from engines.manifest import Manifest, ManifestError
from engines.requests import vocab_problem


class HfEngine(EngineBase):
    """A local transformers checkpoint, served with greedy decoding."""

    name = "hf"

    def __init__(self, manifest: Manifest, *, clock: Clock | None = None) -> None:
        # Field order, as the manifest loader reports: model, dtype, max_seq_len, device.
        path = check_model_dir(manifest.model)
        dtype_name = torch_dtype_name(manifest.dtype)
        config = read_config(path)
        check_against_checkpoint(manifest, config)
        device = resolve_device(manifest.device, gpu_names())
        try:
            model = load_model(path, dtype_name, device)
        except (OSError, ValueError) as exc:
            raise ManifestError(None, "model", f"{manifest.model!r}: cannot load: {exc}") from exc
        super().__init__(manifest, clock=clock)
        self._runner = Runner(model)
        self._scheduler = Scheduler(self._capacity)
        self._rows: list[Row] = []  # in cache row order
        self._cache: Any = None  # DynamicCache of self._rows, or None when no row runs
        self._held: set[int] = set()  # ids waiting, running, or in _ready
        self._fatal: str | None = None

    @property
    def device(self) -> str:
        return str(self._runner.device)

    def poll(self, timeout_s: float) -> list[EngineOutput]:
        """Run forward passes until a request finishes or ``timeout_s`` passed.

        Returns at once when outputs are waiting or nothing is held; always
        runs at least one pass when there is work, and never cuts one short.
        """
        self._owner.check()
        self._check_open()
        if self._fatal is not None:
            raise EngineFatalError(self._fatal)
        if not self._ready and self._has_work():
            deadline_s = self._clock.now_s() + max(timeout_s, 0.0)
            while True:
                self._iterate()
                if self._ready or not self._has_work() or self._clock.now_s() >= deadline_s:
                    break
        outputs = self._take_ready()
        self._held.difference_update(o.request_id for o in outputs)
        return outputs

    def cancel(self, request_ids: Iterable[int]) -> None:
        """Abort requests; each comes back from the next poll() as CANCELLED,
        with the tokens it had generated."""
        self._owner.check()
        cancelled = set(request_ids) & self._held
        for request_id in sorted(cancelled):
            request = self._scheduler.remove(request_id)
            if request is not None:
                self._ready.append(EngineOutput(request_id, [], FinishReason.CANCELLED))
        leaving = [row for row in self._rows if row.request_id in cancelled]
        for row in leaving:
            self._ready.append(row.output(FinishReason.CANCELLED))
        if leaving:
            self._keep([row for row in self._rows if row.request_id not in cancelled])

    def stats(self) -> EngineStats:
        """A snapshot. ``extra`` holds gauges: num_waiting, num_running,
        kv_tokens (rows x cache length), kv_real_tokens (columns rows own)."""
        self._owner.check()
        rows = self._rows
        extra = {
            "num_waiting": float(self._scheduler.num_waiting),
            "num_running": float(len(rows)),
            "kv_tokens": float(len(rows) * (cache_length(self._cache) if rows else 0)),
            "kv_real_tokens": float(sum(row.num_cached for row in rows)),
        }
        return replace(self._stats, extra=extra)

    # --- EngineBase -----------------------------------------------------------------

    def _holds(self, request_id: int) -> bool:
        return request_id in self._held

    def _extra_problem(self, request: EngineRequest) -> str | None:
        return vocab_problem(request, self._runner.vocab_size)

    def _start(self, request: EngineRequest) -> None:
        self._scheduler.add(request)
        self._held.add(request.request_id)

    def _release(self) -> None:
        """Drop every request, the KV cache and the model."""
        self._scheduler.clear()
        self._rows, self._cache = [], None
        self._held.clear()
        self._runner.release()
        if self._runner.device.type == "cuda":
            torch.cuda.empty_cache()

    # --- one iteration -----------------------------------------------------------

    def _iterate(self) -> None:
        cache_len = cache_length(self._cache) if self._rows else 0
        group = self._scheduler.plan_join(self._rows, cache_len)
        try:
            if group:
                self._prefill(group)
            elif self._rows:
                self._decode()
            else:
                raise RuntimeError("hf: invariant broken: requests wait but none can start")
        except Exception as exc:
            # A failed forward leaves the cache in an unknown state: the engine is done.
            self._fatal = f"hf: {type(exc).__name__}: {exc}"
            raise EngineFatalError(self._fatal) from exc

    def _prefill(self, group: list[EngineRequest]) -> None:
        prompts = [request.prompt for request in group]
        started_s = self._clock.now_s()
        joining, first_tokens = self._runner.prefill(prompts)
        self._count_step(started_s)
        width = max(len(p) for p in prompts)
        num_prompt = sum(len(p) for p in prompts)
        stats = self._stats
        stats.prompt_tokens += num_prompt
        stats.generated_tokens += len(group)
        stats.computed_tokens += len(group) * width
        stats.padded_tokens += len(group) * width - num_prompt
        new_rows = [
            Row(request, [token]) for request, token in zip(group, first_tokens, strict=True)
        ]
        staying = self._finish_done(new_rows)
        if not staying:
            return
        keep = [i for i, row in enumerate(new_rows) if row in staying]
        joining = select_rows(joining, keep, cache_len_needed(staying))
        self._cache = stack(self._cache if self._rows else None, joining)
        self._rows = self._rows + staying

    def _decode(self) -> None:
        rows = self._rows
        started_s = self._clock.now_s()
        tokens = self._runner.decode(
            self._cache, [row.tokens[-1] for row in rows], [row.num_cached for row in rows]
        )
        self._count_step(started_s)
        self._stats.computed_tokens += len(rows)
        self._stats.generated_tokens += len(rows)
        for row, token in zip(rows, tokens, strict=True):
            row.tokens.append(token)
        staying = self._finish_done(rows)
        if len(staying) < len(rows):
            self._keep(staying)

    def _finish_done(self, rows: list[Row]) -> list[Row]:
        """Emit the rows that are done; return the others, in order."""
        staying: list[Row] = []
        for row in rows:
            reason = row.finish_reason()
            if reason is None:
                staying.append(row)
            else:
                self._ready.append(row.output(reason))
        return staying

    def _keep(self, rows: list[Row]) -> None:
        """Shrink the batch to ``rows`` (a subsequence of the running rows)."""
        if not rows:
            self._rows, self._cache = [], None
            return
        position = {id(row): i for i, row in enumerate(self._rows)}
        keep = [position[id(row)] for row in rows]
        self._cache = select_rows(self._cache, keep, cache_len_needed(rows))
        self._rows = rows

    def _count_step(self, started_s: float) -> None:
        self._stats.busy_s += self._clock.now_s() - started_s
        self._stats.num_steps += 1

    # --- helpers -----------------------------------------------------------------

    def _has_work(self) -> bool:
        return bool(self._rows) or self._scheduler.num_waiting > 0
