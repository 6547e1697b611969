"""A batch's counts, as each lane keeps them and as a reader sums them.

A batch spans lanes (and so cluster slots): every lane keeps its own record
of the batch's jobs there, moved only by the scripts that change a job's
state (DESIGN section 11), and a reader adds them up. Pure code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class BatchCounts:
    """A batch's jobs by state, summed over the lanes that hold some.

    ``created`` is the earliest lane's, ``finished`` the latest lane's and
    set only once every lane is finished. Unix seconds.
    """

    name: str
    num_total: int = 0
    num_done: int = 0
    num_dead: int = 0
    num_cancelled: int = 0
    created: float | None = None
    finished: float | None = None
    is_cancelled: bool = False

    @property
    def num_terminal(self) -> int:
        return self.num_done + self.num_dead + self.num_cancelled

    @property
    def num_left(self) -> int:
        """Jobs still queued or running."""
        return self.num_total - self.num_terminal

    @property
    def is_finished(self) -> bool:
        return self.num_left <= 0

    def to_json(self) -> dict[str, Any]:
        return {
            "batch": self.name,
            "total": self.num_total,
            "done": self.num_done,
            "dead": self.num_dead,
            "cancelled": self.num_cancelled,
            "left": self.num_left,
            "created": self.created,
            "finished": self.finished if self.is_finished else None,
            "is_cancelled": self.is_cancelled,
        }


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _int(fields: Mapping[str, str], name: str) -> int:
    try:
        return int(fields.get(name, "0"))
    except ValueError:
        raise ValueError(f"batch record field {name}={fields[name]!r} is not an integer") from None


def _time(fields: Mapping[str, str], name: str) -> float | None:
    raw = fields.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"batch record field {name}={raw!r} is not a time") from None


def lane_counts(name: str, raw: Mapping[Any, Any]) -> BatchCounts | None:
    """One lane's record (an HGETALL reply), or None where the lane has none."""
    if not raw:
        return None
    fields = {_text(k): _text(v) for k, v in raw.items()}
    return BatchCounts(
        name=name,
        num_total=_int(fields, "total"),
        num_done=_int(fields, "done"),
        num_dead=_int(fields, "dead"),
        num_cancelled=_int(fields, "cancelled"),
        created=_time(fields, "created"),
        finished=_time(fields, "finished"),
        is_cancelled="cancelled_at" in fields,
    )


def sum_lanes(name: str, lanes: Iterable[BatchCounts | None]) -> BatchCounts | None:
    """The batch over all lanes; None if no lane knows it (never made, or expired)."""
    known = [c for c in lanes if c is not None]
    if not known:
        return None
    created = [c.created for c in known if c.created is not None]
    finished = [c.finished for c in known]
    return BatchCounts(
        name=name,
        num_total=sum(c.num_total for c in known),
        num_done=sum(c.num_done for c in known),
        num_dead=sum(c.num_dead for c in known),
        num_cancelled=sum(c.num_cancelled for c in known),
        created=min(created) if created else None,
        # A lane still running has no finish time: then neither has the batch.
        finished=None if None in finished else max(f for f in finished if f is not None),
        is_cancelled=any(c.is_cancelled for c in known),
    )
