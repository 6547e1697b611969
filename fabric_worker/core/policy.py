"""The worker options that shape a dispatcher's decisions."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DispatchPolicy:
    """The worker options that shape its decisions.

    ``read_ahead_budgets``: how many budgets' worth of claimed entries the
    admission queue holds (None: one, two with ``max_tps``). Class grouping
    sees only what is read ahead, so where class prefixes together outgrow the
    KV cache a deeper read-ahead is what lets a class's jobs run while its
    prefix is resident. Its price: those entries stay leased to this worker
    (renewed with every lease) while they wait, so no other worker can take
    them; the class age bound still limits each one's wait.
    """

    max_tps: bool = False
    lane_max_wait_s: float = 2.0
    class_max_wait_s: float = 5.0
    read_ahead_budgets: int | None = None
    arrival_order: bool | None = None  # None: on engines that do not pad (core/reads.py)
    share_prefixes: bool | None = None  # None: on engines that do not pad (core/sharing.py)

    def __post_init__(self) -> None:
        if self.read_ahead_budgets is not None and self.read_ahead_budgets < 1:
            raise ValueError(
                f"read_ahead_budgets must be >= 1 or None, got {self.read_ahead_budgets!r}"
            )

    @property
    def read_ahead(self) -> int:
        """Budgets' worth of entries in the admission queue."""
        if self.read_ahead_budgets is not None:
            return self.read_ahead_budgets
        return 2 if self.max_tps else 1
