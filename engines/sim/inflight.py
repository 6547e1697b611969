"""In-flight (continuous) batching with chunked prefill and a prefix cache.

Each iteration, every decoding sequence produces one token; the token budget
left (``max_num_tokens`` minus the decode tokens) goes to prompt chunks,
first to sequences already admitted, then to waiting ones in FIFO order. A
waiting sequence is admitted only while a batch slot is free and the KV
cache can hold its whole prompt + ``max_new_tokens`` (reserved up front, as
TensorRT-LLM's GUARANTEED_NO_EVICT policy does), so a running sequence never
stalls. The iteration that computes a prompt's last chunk also samples its
first token, as real engines do.

Per-iteration cost does not grow with the number of decoding sequences: a
sequence's finish iteration is known when it starts decoding (its output is
fixed), so finishes come off a heap and the KV context being read is kept as
a running sum. That keeps a calibration run with thousands of sequences fast.
"""

from __future__ import annotations

import heapq
from collections import deque
from itertools import count

from engines.contract import Capacity, EngineOutput, EngineStats
from engines.sim.cost import IterationWork
from engines.sim.prefix_cache import PrefixCache
from engines.sim.sequence import SimSequence


class InflightBatcher:
    """The in-flight :class:`~engines.sim.sequence.Batcher`."""

    def __init__(self, capacity: Capacity, cache: PrefixCache, stats: EngineStats) -> None:
        self._capacity = capacity
        self._cache = cache
        self._stats = stats
        # A decoding sequence needs one token of budget per iteration, so more
        # than max_num_tokens running sequences could never all make progress.
        self._max_running = min(capacity.max_batch_size, capacity.max_num_tokens)
        self._num_kv_blocks = capacity.kv_cache_tokens // capacity.kv_block_tokens
        self._num_free_blocks = self._num_kv_blocks
        self._waiting: deque[SimSequence] = deque()
        self._prefilling: list[SimSequence] = []  # admitted, prompt not done (FIFO)
        self._decoding: dict[int, SimSequence] = {}
        # (finish step, tie-breaker, sequence); entries of cancelled sequences
        # stay until they surface and are skipped then.
        self._finishes: list[tuple[int, int, SimSequence]] = []
        self._tie = count()
        # Sum over decoding sequences of (prompt_len - first_token_step): at
        # step k the KV they hold is this + (k - 1) x len(decoding).
        self._context_base = 0

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def num_running(self) -> int:
        return len(self._prefilling) + len(self._decoding)

    @property
    def num_used_blocks(self) -> int:
        return self._num_kv_blocks - self._num_free_blocks

    def add(self, seq: SimSequence) -> None:
        self._waiting.append(seq)

    def step(self, step: int) -> tuple[IterationWork, list[EngineOutput]]:
        num_decode = len(self._decoding)
        kv_read = self._context_base + num_decode * (step - 1)
        pairs = kv_read + num_decode  # each decode token also attends to itself
        budget = self._capacity.max_num_tokens - num_decode
        num_prefill = 0
        prefilled: list[SimSequence] = []
        for seq in self._schedule_prefill(budget):
            start = seq.num_prompt_done
            end = min(seq.prompt_len, start + budget)
            budget -= end - start
            num_prefill += end - start
            kv_read += start  # the chunk attends to the prompt's KV so far
            pairs += (end * (end + 1) - start * (start + 1)) // 2  # causal
            seq.num_prompt_done = end
            if end == seq.prompt_len:
                prefilled.append(seq)
        finished = self._finish_decoding(step)
        self._prefilling = [s for s in self._prefilling if s.num_prompt_done < s.prompt_len]
        for seq in prefilled:
            finished.extend(self._start_decoding(seq, step))
        stats = self._stats
        stats.generated_tokens += num_decode + len(prefilled)
        stats.computed_tokens += num_prefill + num_decode
        work = IterationWork(num_prefill, num_decode, pairs, kv_read)
        return work, finished

    def cancel(self, request_id: int, num_steps: int) -> EngineOutput | None:
        seq = self._decoding.pop(request_id, None)
        if seq is not None:
            self._context_base -= seq.prompt_len - seq.started_at()
            self._num_free_blocks += seq.num_blocks
            return seq.cancelled(num_steps - seq.started_at())
        for queue in (self._prefilling, self._waiting):
            for seq in queue:
                if seq.request_id == request_id:
                    queue.remove(seq)
                    if queue is self._prefilling:
                        self._num_free_blocks += seq.num_blocks
                    return seq.cancelled(0)
        return None

    def _schedule_prefill(self, budget: int) -> list[SimSequence]:
        """Sequences that get a prompt chunk this iteration, in order."""
        chosen: list[SimSequence] = []
        for seq in self._prefilling:
            if budget <= 0:
                return chosen
            chosen.append(seq)
            budget -= seq.prompt_len - seq.num_prompt_done
        while budget > 0 and self._waiting and self.num_running < self._max_running:
            seq = self._waiting[0]
            if seq.num_blocks > self._num_free_blocks:
                break  # FIFO: the head waits for KV rather than being overtaken
            self._waiting.popleft()
            self._admit(seq)
            chosen.append(seq)
            budget -= seq.prompt_len - seq.num_prompt_done
        return chosen

    def _admit(self, seq: SimSequence) -> None:
        self._num_free_blocks -= seq.num_blocks
        self._prefilling.append(seq)
        num_hits = self._cache.match(seq.block_hashes)
        self._stats.prefix_hit_blocks += num_hits
        self._stats.prefix_miss_blocks += len(seq.block_hashes) - num_hits
        self._stats.prompt_tokens += seq.prompt_len
        # A fully cached prompt still computes its last token: sampling the
        # first output token needs that token's logits.
        seq.num_prompt_done = min(num_hits * self._capacity.kv_block_tokens, seq.prompt_len - 1)

    def _start_decoding(self, seq: SimSequence, step: int) -> list[EngineOutput]:
        self._cache.insert(seq.block_hashes)
        seq.first_token_step = step
        if len(seq.output) == 1:
            self._num_free_blocks += seq.num_blocks
            return [seq.finished()]
        self._decoding[seq.request_id] = seq
        self._context_base += seq.prompt_len - step
        finish_step = step + len(seq.output) - 1
        heapq.heappush(self._finishes, (finish_step, next(self._tie), seq))
        return []

    def _finish_decoding(self, step: int) -> list[EngineOutput]:
        finished: list[EngineOutput] = []
        while self._finishes and self._finishes[0][0] <= step:
            _, _, seq = heapq.heappop(self._finishes)
            if self._decoding.get(seq.request_id) is not seq:
                continue  # cancelled earlier
            del self._decoding[seq.request_id]
            self._context_base -= seq.prompt_len - seq.started_at()
            self._num_free_blocks += seq.num_blocks
            finished.append(seq.finished())
        return finished
