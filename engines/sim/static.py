"""Static batching: the baseline in-flight batching is measured against.

A batch is formed from the waiting requests (FIFO, up to the batch size and
as many as the KV cache holds at the padded shape), every prompt is padded
to the batch's longest, and the batch runs until its longest output ends.
Nothing joins a running batch; rows that finished early keep their slot and
are computed anyway. That waste is what ``padded_tokens`` counts: prompt
padding plus idle decode slots. Results come back when the batch ends, as
from a padded ``generate()`` call. No prefix cache: padding makes the
prompt's KV depend on the batch it landed in.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field

from engines.contract import Capacity, EngineOutput, EngineStats
from engines.requests import blocks_for
from engines.sim.cost import IterationWork
from engines.sim.sequence import SimSequence


@dataclass(slots=True, eq=False)
class _Batch:
    rows: list[SimSequence]  # fixed shape: cancelled rows keep their slot
    padded_len: int
    num_blocks: int  # KV for every row at the padded shape
    # output lengths of the rows still wanted (not cancelled), sorted
    lengths: list[int]
    cancelled: set[int] = field(default_factory=set)
    num_prefill_done: int = 0  # padded prompt slots computed
    num_generated: int = 0  # tokens each row has generated (rows move in lockstep)

    @property
    def num_prefill_slots(self) -> int:
        return len(self.rows) * self.padded_len

    def is_done(self) -> bool:
        return not self.lengths or self.num_generated >= self.lengths[-1]


class StaticBatcher:
    """The static-batching :class:`~engines.sim.sequence.Batcher`."""

    def __init__(self, capacity: Capacity, stats: EngineStats) -> None:
        self._capacity = capacity
        self._stats = stats
        self._max_rows = min(capacity.max_batch_size, capacity.max_num_tokens)
        self._num_kv_blocks = capacity.kv_cache_tokens // capacity.kv_block_tokens
        self._waiting: deque[SimSequence] = deque()
        self._batch: _Batch | None = None

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def num_running(self) -> int:
        if self._batch is None:
            return 0
        return len(self._batch.rows) - len(self._batch.cancelled)

    @property
    def num_used_blocks(self) -> int:
        return 0 if self._batch is None else self._batch.num_blocks

    def add(self, seq: SimSequence) -> None:
        self._waiting.append(seq)

    def step(self, step: int) -> tuple[IterationWork, list[EngineOutput]]:
        batch = self._batch if self._batch is not None else self._form_batch()
        stats = self._stats
        num_rows = len(batch.rows)
        if batch.num_prefill_done < batch.num_prefill_slots:
            num_slots = min(
                batch.num_prefill_slots - batch.num_prefill_done, self._capacity.max_num_tokens
            )
            batch.num_prefill_done += num_slots
            stats.computed_tokens += num_slots
            # each slot attends causally within its row: (padded_len + 1) / 2 keys on average
            work = IterationWork(num_slots, 0, num_slots * (batch.padded_len + 1) // 2, 0)
            if batch.num_prefill_done == batch.num_prefill_slots:
                stats.padded_tokens += sum(batch.padded_len - s.prompt_len for s in batch.rows)
                self._generate(batch)
        else:
            kv_read = num_rows * (batch.padded_len + batch.num_generated - 1)
            work = IterationWork(0, num_rows, kv_read + num_rows, kv_read)
            stats.computed_tokens += num_rows
            stats.padded_tokens += num_rows - self._generate(batch)
        if not batch.is_done():
            return work, []
        self._batch = None
        return work, [s.finished() for s in batch.rows if s.request_id not in batch.cancelled]

    def cancel(self, request_id: int, num_steps: int) -> EngineOutput | None:
        batch = self._batch
        if batch is not None and request_id not in batch.cancelled:
            for seq in batch.rows:
                if seq.request_id == request_id:
                    if batch.num_generated >= len(seq.output):
                        return None  # done; it comes back, finished, with its batch
                    batch.cancelled.add(request_id)
                    batch.lengths.remove(len(seq.output))
                    if not batch.lengths:
                        self._batch = None  # nothing left worth computing
                    return seq.cancelled(batch.num_generated)
        for seq in self._waiting:
            if seq.request_id == request_id:
                self._waiting.remove(seq)
                return seq.cancelled(0)
        return None

    def _generate(self, batch: _Batch) -> int:
        """One token for every row still generating; returns how many there were."""
        num_done = bisect.bisect_right(batch.lengths, batch.num_generated)
        num_active = len(batch.lengths) - num_done
        batch.num_generated += 1
        self._stats.generated_tokens += num_active
        return num_active

    def _form_batch(self) -> _Batch:
        rows: list[SimSequence] = []
        padded_len = max_new = num_blocks = 0
        while self._waiting and len(rows) < self._max_rows:
            seq = self._waiting[0]
            new_len = max(padded_len, seq.prompt_len)
            new_max_new = max(max_new, seq.request.max_new_tokens)
            # every row is allocated at the padded shape
            new_blocks = (len(rows) + 1) * blocks_for(
                new_len + new_max_new, self._capacity.kv_block_tokens
            )
            if rows and new_blocks > self._num_kv_blocks:
                break
            self._waiting.popleft()
            rows.append(seq)
            padded_len, max_new, num_blocks = new_len, new_max_new, new_blocks
        self._stats.prompt_tokens += sum(s.prompt_len for s in rows)
        self._batch = _Batch(rows, padded_len, num_blocks, sorted(len(s.output) for s in rows))
        return self._batch
