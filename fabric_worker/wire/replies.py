"""What the server-side scripts answer, as enums.

The scripts reply with short strings (see ``broker/lua/``); the broker turns
each into one of these, so nothing else compares raw reply text.
"""

from __future__ import annotations

from enum import StrEnum


class CompleteReply(StrEnum):
    """``complete.lua``: did this call write the job's one result?"""

    OK = "ok"  # written now
    DUPLICATE = "duplicate"  # the job was already done or dead: only acked


class DeadLetterReply(StrEnum):
    """``deadletter.lua``: what became of the entry."""

    DEAD = "dead"  # moved to the dead-letter stream
    DONE = "done"  # finished elsewhere meanwhile: acked and deleted
    GONE = "gone"  # the entry no longer exists: only acked


class ReplayReply(StrEnum):
    """``replay.lua``: what became of one dead letter."""

    REPLAYED = "replayed"  # back on its lane, dead letter deleted
    GONE = "gone"  # deleted or replayed by someone else meanwhile
    DONE = "done"  # the job has a result; kept
    QUEUED = "queued"  # the job was submitted again; kept


class CancelReply(StrEnum):
    """``cancel.lua``: what became of one of the batch's entries."""

    CANCELLED = "cancelled"  # given its cancelled result now
    FINISHED = "finished"  # done, dead or superseded already: nothing done
    MALFORMED = "malformed"  # queued, but its header gives no cost: nothing done
