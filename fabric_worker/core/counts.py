"""Job outcomes counted by one worker: the figures its log, heartbeat and
metrics report. Plain data, written by the dispatcher only."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Counts:
    completed: int = 0  # results this worker wrote
    duplicates: int = 0  # finished, but the job was done elsewhere: only acked
    dead_lettered: int = 0
    retried: int = 0  # failed attempts let go of for a later reclaim
    reclaimed: int = 0  # entries taken over from silent workers
    lease_lost: int = 0  # entries another worker took while this one held them

    def count_completion(self, *, ok: bool) -> None:
        if ok:
            self.completed += 1
        else:
            self.duplicates += 1
