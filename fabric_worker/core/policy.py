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

    ``max_in_engine``: requests in the engine at once, its own waiting queue
    included (None: its ``max_batch_size`` and a quarter more). An in-flight
    engine takes whatever it is given and queues what it cannot run in its own
    first-come order, where no class or age rule reaches it; the token budget
    alone, sized for the KV cache, lets far more in than the engine runs. A
    few beyond the batch keep a freed slot filled while the worker refills.
    """

    max_tps: bool = False
    lane_max_wait_s: float = 2.0
    class_max_wait_s: float = 5.0
    read_ahead_budgets: int | None = None
    arrival_order: bool | None = None  # None: on engines that do not pad (core/reads.py)
    share_prefixes: bool | None = None  # None: on engines that do not pad (core/sharing.py)
    max_in_engine: int | None = None

    def __post_init__(self) -> None:
        if self.read_ahead_budgets is not None and self.read_ahead_budgets < 1:
            raise ValueError(
                f"read_ahead_budgets must be >= 1 or None, got {self.read_ahead_budgets!r}"
            )
        if self.max_in_engine is not None and self.max_in_engine < 1:
            raise ValueError(f"max_in_engine must be >= 1 or None, got {self.max_in_engine!r}")

    def engine_cap(self, max_batch_size: int) -> int:
        """Requests the worker keeps in an engine that runs ``max_batch_size`` at once."""
        if self.max_in_engine is not None:
            return self.max_in_engine
        return max_batch_size + max(1, max_batch_size // 4)

    @property
    def read_ahead(self) -> int:
        """Budgets' worth of entries in the admission queue."""
        if self.read_ahead_budgets is not None:
            return self.read_ahead_budgets
        return 2 if self.max_tps else 1
