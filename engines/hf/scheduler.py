"""What the hf engine runs next: which waiting requests join the batch. No torch.

The running batch shares one KV cache in which every row is right-aligned:
row ``r`` owns the last ``num_cached`` columns, the columns to their left
are padding that the attention mask hides. A decode step appends one column
to every row, so a row never moves. A joining group is prefilled on its own
(left-padded to its longest prompt) and its cache is left-padded to the
batch's length, or the batch's to the group's, before the two are stacked.

Admission of a group is bounded three ways, the same each round:

- rows: running + joining <= ``max_batch_size``;
- step tokens: a group's padded prefill (rows x longest prompt) <=
  ``max_num_tokens`` (a single prompt longer than that is prefilled alone,
  in one pass: this engine has no chunked prefill);
- KV: rows x (cache length + the most tokens any row may still add) <=
  ``kv_cache_tokens``. Each decode step adds a column and takes one token off
  every row's remainder, and leaving rows only shrink the cache, so a batch
  admitted under this bound stays under it until it drains.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from engines.contract import Capacity, EngineOutput, EngineRequest, FinishReason


@dataclass(slots=True, eq=False)
class Row:
    """A running sequence: its request and the tokens generated so far.

    Its first token comes from the prefill, so a row always has one; the KV
    of the last generated token is written by the next decode step.
    """

    request: EngineRequest
    tokens: list[int] = field(default_factory=list)

    @property
    def request_id(self) -> int:
        return self.request.request_id

    @property
    def num_cached(self) -> int:
        """KV columns this row owns: its prompt and all but its last token."""
        return len(self.request.prompt) + len(self.tokens) - 1

    @property
    def num_remaining(self) -> int:
        """Tokens it may still generate."""
        return self.request.max_new_tokens - len(self.tokens)

    def finish_reason(self) -> FinishReason | None:
        """STOP right after end_id (included), LENGTH at max_new_tokens, else None."""
        end_id = self.request.end_id
        if end_id is not None and self.tokens and self.tokens[-1] == end_id:
            return FinishReason.STOP
        if len(self.tokens) >= self.request.max_new_tokens:
            return FinishReason.LENGTH
        return None

    def output(self, reason: FinishReason) -> EngineOutput:
        return EngineOutput(self.request_id, list(self.tokens), reason)


def cache_len_needed(rows: Iterable[Row]) -> int:
    """The shortest cache that holds every row (right-aligned): the rest is common padding."""
    return max((row.num_cached for row in rows), default=0)


class Scheduler:
    """The waiting queue (FIFO) and the join decision for each step boundary."""

    def __init__(self, capacity: Capacity) -> None:
        self._capacity = capacity
        self._waiting: deque[EngineRequest] = deque()

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def add(self, request: EngineRequest) -> None:
        """Queue a validated request."""
        self._waiting.append(request)

    def remove(self, request_id: int) -> EngineRequest | None:
        """Take a waiting request out (cancel); None when it is not waiting."""
        for request in self._waiting:
            if request.request_id == request_id:
                self._waiting.remove(request)
                return request
        return None

    def clear(self) -> None:
        self._waiting.clear()

    def plan_join(self, rows: Sequence[Row], cache_len: int) -> list[EngineRequest]:
        """Pop the group to prefill now; empty when nothing may join.

        The group is the oldest waiting request's lane (``pad_to``): the
        oldest requests of that lane, in order, as many as the three bounds
        allow. A later request that would break a bound ends the group, so a
        lane is served first come, first served.
        """
        cap = self._capacity
        if not self._waiting or len(rows) >= cap.max_batch_size:
            return []
        lane = self._waiting[0].pad_to
        running_remaining = max((row.num_remaining for row in rows), default=0)
        group: list[EngineRequest] = []
        group_len = group_remaining = 0
        for request in self._waiting:
            if request.pad_to != lane:
                continue
            num_rows = len(rows) + len(group) + 1
            new_len = max(group_len, len(request.prompt))
            new_remaining = max(group_remaining, request.max_new_tokens)
            if num_rows > cap.max_batch_size:
                break
            if group and (len(group) + 1) * new_len > cap.max_num_tokens:
                break
            kv_tokens = num_rows * (max(cache_len, new_len) + max(running_remaining, new_remaining))
            if kv_tokens > cap.kv_cache_tokens:
                break
            group.append(request)
            group_len, group_remaining = new_len, new_remaining
        if group:
            chosen = {request.request_id for request in group}
            self._waiting = deque(r for r in self._waiting if r.request_id not in chosen)
        return group
