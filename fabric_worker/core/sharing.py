"""Shared prefixes in the token budget: a class's common prefix charged once.

An engine with a prefix cache (vLLM) keeps one copy of the KV blocks that
running requests share. Charging every job of a class its whole prompt then
counts the shared prefix once per job, and the budget admits a fraction of what
the engine holds (docs/benchmarks.md, section 7.2: 17 jobs where 32 fit).

So, per class with jobs in flight: the first job admitted is charged in full
and its prompt becomes the class's reference. A later job of the class is
discounted by its common prefix with the reference, in whole KV blocks (what
the engine can share), capped by the class's pin. At the first discount the
pin is set: that many tokens move from the first job's charge to the class,
where they stay until the class's last job in flight finishes, since the
shared blocks live as long as any job holding them. The total in flight is
never below the prompt tokens the engine can hold for the class's jobs.

Pure: prompts and counts in, token amounts out. The dispatcher applies them
to the budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token sequences."""
    low, high = 0, min(len(a), len(b))
    while low < high:  # slice comparisons run in C: log2(n) of them, not n in Python
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


@dataclass(slots=True)
class _Class:
    reference: Sequence[int]  # the first job's prompt
    first: object | None  # the first job while in flight: its charge holds the prefix
    num_in_flight: int = 0
    pin_tokens: int = 0  # moved from the first job's charge at the first discount


class SharedPrefixes:
    """Discounts for jobs whose class already has jobs in flight (see the module)."""

    def __init__(self, block_tokens: int) -> None:
        if block_tokens < 1:
            raise ValueError(f"block_tokens must be >= 1, got {block_tokens!r}")
        self._block_tokens = block_tokens
        self._classes: dict[str, _Class] = {}

    @property
    def pinned_tokens(self) -> int:
        """Tokens the classes' pins hold in the budget."""
        return sum(c.pin_tokens for c in self._classes.values())

    def discount(self, cls: str | None, prompt: Sequence[int]) -> int:
        """Tokens a job of ``cls`` with this prompt would not be charged if admitted now."""
        record = None if cls is None else self._classes.get(cls)
        if record is None or (record.first is None and not record.pin_tokens):
            return 0  # nothing in flight holds the class's prefix in the budget any more
        # The engine's last prompt token is always computed: never a shared block.
        shared = min(common_prefix(record.reference, prompt), len(prompt) - 1)
        blocks = shared // self._block_tokens * self._block_tokens
        return min(blocks, record.pin_tokens) if record.pin_tokens else blocks

    def admitted(self, cls: str | None, job: object, prompt: Sequence[int], discount: int) -> int:
        """Record an admission made with ``discount``; returns the tokens to move from
        the class's first job's charge to its pin (the caller lowers that job's charge)."""
        if cls is None:
            return 0
        record = self._classes.get(cls)
        if record is None:
            record = self._classes[cls] = _Class(reference=prompt, first=job)
        record.num_in_flight += 1
        if discount and not record.pin_tokens:
            record.pin_tokens = discount
            return discount
        return 0

    def first_of(self, cls: str | None) -> object | None:
        """The class's first job, while it is in flight."""
        record = None if cls is None else self._classes.get(cls)
        return None if record is None else record.first

    def finished(self, cls: str | None, job: object) -> int:
        """A job of ``cls`` left the engine; returns pin tokens to release (the last one)."""
        record = None if cls is None else self._classes.get(cls)
        if cls is None or record is None:
            return 0
        if record.first is job:
            record.first = None
        record.num_in_flight -= 1
        if record.num_in_flight > 0:
            return 0
        del self._classes[cls]
        return record.pin_tokens
