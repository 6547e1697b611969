"""Intake on a CPU with no server: accept, each dead-letter reason, hand back."""

from __future__ import annotations

from array import array

import pytest

from fabric_worker.core.intake import Accepted, Limits, decode_all, judge
from fabric_worker.wire.claims import Claimed, DeadLetter, HandBack
from fabric_worker.wire.entries import JobEntry, encode_job

LIMITS = Limits(
    vocab_size=1000, max_prompt_tokens=128, max_deliveries=3, max_seq_len=200, max_cost_tokens=180
)


def claimed(
    tokens: list[int], max_new: int = 8, *, lane: int = 64, deliveries: int = 1, job_id: str = "j"
) -> Claimed:
    fields = encode_job(JobEntry(job_id, array("I", tokens), max_new))
    return Claimed(lane, b"1-0", {k.encode(): v for k, v in fields.items()}, deliveries)


def always(_cost: int) -> bool:
    return True


def test_a_servable_entry_is_accepted_with_its_padded_cost() -> None:
    verdict = judge(claimed([1, 2, 3], 8), LIMITS, can_queue=always)
    assert isinstance(verdict, Accepted)
    assert (verdict.job.id, list(verdict.job.tokens), verdict.cost_tokens) == ("j", [1, 2, 3], 72)


def test_the_queue_is_asked_about_that_cost_and_a_full_one_hands_the_entry_back() -> None:
    asked: list[int] = []

    def full(cost: int) -> bool:
        asked.append(cost)
        return False

    verdict = judge(claimed([1], 8, deliveries=2), LIMITS, can_queue=full)
    assert verdict == HandBack(64, b"1-0", "j")
    assert asked == [72]


@pytest.mark.parametrize(
    ("entry", "reason", "job_id"),
    [
        (Claimed(64, b"1-0", {}, 1), "entry was deleted while pending", None),
        (Claimed(64, b"1-0", {b"h": b"{nope", b"t": b""}, 1), "header is not valid JSON", None),
        # The header parses: the dead letter carries its id, though the tokens are bad.
        (claimed([5, 1000]), "token 1000 is outside [0, 1000)", "j"),
        (claimed([1] * 100, lane=64), "prompt of 100 tokens does not belong in lane 64", "j"),
        (
            claimed([1] * 100, 150, lane=128),
            "job needs 250 tokens (padded 278); this engine holds at most 200 per sequence "
            "and 180 in flight",
            "j",
        ),
        (
            claimed([1], 120, lane=64),
            "job needs 121 tokens (padded 184); this engine holds at most 200 per sequence "
            "and 180 in flight",
            "j",
        ),
    ],
    ids=["deleted", "header", "token", "lane", "too-long", "over-budget"],
)
def test_what_cannot_be_served_is_dead_lettered_with_its_reason_and_no_cost(
    entry: Claimed, reason: str, job_id: str | None
) -> None:
    verdict = judge(entry, LIMITS, can_queue=always)
    # Decoded in bulk (between two good entries), the verdict is the same.
    batch = [claimed([5]), entry, claimed([6])]
    (decoded,) = decode_all(batch, LIMITS)[1:2]
    assert judge(entry, LIMITS, can_queue=always, decoded=decoded) == verdict
    assert isinstance(verdict, DeadLetter)
    assert verdict.reason.startswith(reason)
    assert (verdict.job_id, verdict.cost_tokens, verdict.deliveries) == (job_id, 0, 1)
    assert (verdict.lane, verdict.entry_id, verdict.error) == (entry.lane, b"1-0", "")


def test_an_entry_delivered_too_often_is_dead_lettered_with_its_cost() -> None:
    verdict = judge(claimed([1, 2], 8, deliveries=4), LIMITS, can_queue=always)
    assert verdict == DeadLetter(64, b"1-0", "j", 72, "delivered 4 times (max 3)", 4)
    # At the limit it is still served.
    assert isinstance(judge(claimed([1, 2], 8, deliveries=3), LIMITS, can_queue=always), Accepted)


def test_dead_letter_reasons_come_before_a_full_queue() -> None:
    verdict = judge(claimed([1], 8, deliveries=9), LIMITS, can_queue=lambda _c: False)
    assert isinstance(verdict, DeadLetter)


NO_PADDING = Limits(
    vocab_size=1000,
    max_prompt_tokens=128,
    max_deliveries=3,
    max_seq_len=200,
    max_cost_tokens=180,
    pads_prompts=False,
)


def test_an_engine_that_does_not_pad_reserves_the_prompt_but_the_backlog_keeps_the_padding() -> (
    None
):
    asked: list[int] = []

    def room(cost: int) -> bool:
        asked.append(cost)
        return True

    verdict = judge(claimed([1, 2, 3], 8), NO_PADDING, can_queue=room)
    assert isinstance(verdict, Accepted)
    assert (verdict.cost_tokens, verdict.budget_tokens) == (72, 11)
    assert asked == [11]


def test_without_padding_a_job_whose_padding_would_not_fit_is_served() -> None:
    # Lane 64 + 120 new = 184 padded, over the 180 in flight; 1 + 120 = 121 is not.
    assert isinstance(judge(claimed([1], 120, lane=64), LIMITS, can_queue=always), DeadLetter)
    verdict = judge(claimed([1], 120, lane=64), NO_PADDING, can_queue=always)
    assert isinstance(verdict, Accepted) and verdict.budget_tokens == 121
