"""Token budget for admission: in-flight tokens under high/low-water hysteresis.

Admission counts tokens, not requests (DESIGN section 4). Every admitted job reserves the
most KV it can ever hold until it completes: its padded cost (lane boundary + max_new_tokens)
on an engine that pads, its prompt + max_new_tokens on one that does not.
The gate closes when the budget is full and reopens only once in-flight work has fallen below
the low-water mark, so the engine is refilled in bursts of many jobs rather than one job per
completion: bursts read from one lane keep batches shape-pure, amortise the ingress round trip,
and stop a trickle of small jobs from starving a large one at the head of the queue.
"""

from __future__ import annotations

from dataclasses import dataclass

# Fill to 90% of the KV cache in latency mode: padded costs are worst cases, and even when every
# job runs to max_new_tokens the engine must hold them all without preempting (a preempted
# request recomputes its prefill). The other 10% absorbs rounding up to whole KV blocks.
_FILL_PERCENT = 90
# Max-TPS mode fills the whole cache with worst-case reservations. Real use stays below it
# (prompts are shorter than their lane boundary, most outputs stop at end_id before
# max_new_tokens), so the engine keeps its batch full at the price of an occasional preemption.
_MAX_TPS_FILL_PERCENT = 100
# The gap is at least 10% of high water so that the gate does not flap on every completion.
_MIN_GAP_PERCENT = 10


@dataclass(frozen=True, slots=True)
class BudgetMarks:
    """High and low water marks of the in-flight token budget; 0 < low < high."""

    high_water_tokens: int
    low_water_tokens: int

    def __post_init__(self) -> None:
        if self.high_water_tokens < 2:
            raise ValueError(f"high_water_tokens must be >= 2, got {self.high_water_tokens!r}")
        if not 0 < self.low_water_tokens < self.high_water_tokens:
            raise ValueError(
                f"low_water_tokens must be > 0 and < high_water_tokens "
                f"({self.high_water_tokens}), got {self.low_water_tokens!r}"
            )

    @classmethod
    def from_capacity(
        cls, *, kv_cache_tokens: int, max_num_tokens: int, max_tps: bool = False
    ) -> BudgetMarks:
        """Derive the marks from the engine's KV capacity and per-step token limit.

        high = 90% of ``kv_cache_tokens`` (100% with ``max_tps``), see the module constants.
        low = high - gap, where gap = max(max_num_tokens, 10% of high): a reopened gate then
        admits at least one engine step's worth of prefill tokens at once, which is what makes
        a refill worth a round trip. On a cache too small to hold two steps the gap is capped
        at half of high: the KV cache, not the step limit, bounds such an engine anyway.

        Raises ValueError if either argument is not positive or the cache is too small to
        derive two distinct marks.
        """
        if kv_cache_tokens < 1:
            raise ValueError(f"kv_cache_tokens must be >= 1, got {kv_cache_tokens!r}")
        if max_num_tokens < 1:
            raise ValueError(f"max_num_tokens must be >= 1, got {max_num_tokens!r}")
        fill_percent = _MAX_TPS_FILL_PERCENT if max_tps else _FILL_PERCENT
        high = kv_cache_tokens * fill_percent // 100
        if high < 2:
            raise ValueError(f"kv_cache_tokens too small for a token budget: {kv_cache_tokens!r}")
        gap = max(max_num_tokens, high * _MIN_GAP_PERCENT // 100)
        gap = min(gap, high // 2)
        return cls(high_water_tokens=high, low_water_tokens=high - gap)


def admission_cost(
    *, lane: int, prompt_tokens: int, max_new_tokens: int, pads_prompts: bool
) -> int:
    """Tokens one job reserves in the budget: the most KV it can ever hold.

    An engine that pads holds the lane boundary for the prompt; one that does
    not (in-flight batching over paged KV) holds the prompt itself. Either way
    the job may run to ``max_new_tokens``. Raises ValueError on a prompt
    longer than its lane or a count below 1.
    """
    if not 1 <= prompt_tokens <= lane:
        raise ValueError(f"prompt_tokens must be 1..lane ({lane}), got {prompt_tokens!r}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
    return (lane if pads_prompts else prompt_tokens) + max_new_tokens


def _check_cost(cost_tokens: int) -> None:
    if cost_tokens < 1:
        raise ValueError(f"cost_tokens must be >= 1, got {cost_tokens!r}")


class TokenBudget:
    """In-flight padded tokens against :class:`BudgetMarks`, with a hysteresis gate.

    Contract:
    - ``in_flight_tokens`` never exceeds ``high_water_tokens``.
    - A job is admitted only while the gate is open and in_flight + cost <= high.
    - The gate closes when in_flight reaches high, or when an admission is refused because
      it would cross high while in_flight >= low. Closed, it admits nothing until a release
      brings in_flight below low. Hence a closed gate always has in_flight >= low. (A refusal
      below low leaves the gate open: closing it would only reopen at the next release.)
    - A job whose cost exceeds high water never fits; ``fits_ever`` lets the caller
      dead-letter it, and trying to admit it raises ValueError instead of blocking forever.

    The admission loop should call ``try_admit``: ``can_admit`` is a pure query and does not
    close the gate on refusal.
    """

    __slots__ = ("_in_flight_tokens", "_is_open", "_marks")

    def __init__(self, marks: BudgetMarks) -> None:
        self._marks = marks
        self._in_flight_tokens = 0
        self._is_open = True

    @property
    def marks(self) -> BudgetMarks:
        return self._marks

    @property
    def in_flight_tokens(self) -> int:
        """Padded tokens admitted and not yet released."""
        return self._in_flight_tokens

    @property
    def is_open(self) -> bool:
        """Whether the gate admits jobs at all."""
        return self._is_open

    @property
    def free_tokens(self) -> int:
        """Tokens that may still be admitted now: 0 while closed, else high - in_flight."""
        if not self._is_open:
            return 0
        return max(0, self._marks.high_water_tokens - self._in_flight_tokens)

    def fits_ever(self, cost_tokens: int) -> bool:
        """Whether a job of this cost could be admitted on an idle budget."""
        _check_cost(cost_tokens)
        return cost_tokens <= self._marks.high_water_tokens

    def can_admit(self, cost_tokens: int) -> bool:
        """Whether ``try_admit(cost_tokens)`` would admit now. Changes nothing."""
        _check_cost(cost_tokens)
        return (
            self._is_open and self._in_flight_tokens + cost_tokens <= self._marks.high_water_tokens
        )

    def try_admit(self, cost_tokens: int) -> bool:
        """Reserve ``cost_tokens`` if the gate admits them; on refusal maybe close the gate.

        Returns whether the tokens were reserved. Raises ValueError if the cost never fits.
        """
        if not self.fits_ever(cost_tokens):
            raise ValueError(
                f"cost_tokens {cost_tokens} exceeds high_water_tokens "
                f"{self._marks.high_water_tokens}: it can never be admitted"
            )
        if not self._is_open:
            return False
        if self._in_flight_tokens + cost_tokens > self._marks.high_water_tokens:
            if self._in_flight_tokens >= self._marks.low_water_tokens:
                self._is_open = False
            return False
        self._in_flight_tokens += cost_tokens
        if self._in_flight_tokens >= self._marks.high_water_tokens:
            self._is_open = False
        return True

    def admit(self, cost_tokens: int) -> None:
        """Reserve ``cost_tokens``; raises ValueError if ``try_admit`` would refuse them."""
        if not self.try_admit(cost_tokens):
            raise ValueError(
                f"cannot admit cost_tokens {cost_tokens}: in flight {self._in_flight_tokens}, "
                f"high water {self._marks.high_water_tokens}, gate open {self._is_open}"
            )

    def release(self, cost_tokens: int) -> None:
        """Return the tokens of a finished (or cancelled) job; reopens the gate below low.

        Raises ValueError if more tokens are released than are in flight.
        """
        _check_cost(cost_tokens)
        if cost_tokens > self._in_flight_tokens:
            raise ValueError(
                f"cost_tokens {cost_tokens} exceeds in_flight_tokens {self._in_flight_tokens}"
            )
        self._in_flight_tokens -= cost_tokens
        if self._in_flight_tokens < self._marks.low_water_tokens:
            self._is_open = True
