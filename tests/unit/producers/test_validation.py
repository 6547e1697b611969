from __future__ import annotations

from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabric_worker.wire.fleet_config import FleetConfig
from producers.validation import Job, JobError, job_from_json, validate_job

CONFIG = FleetConfig(
    lanes=(64, 128, 256), vocab_size=1000, max_seq_len=512, backlog_cap_tokens=10_000
)


def reason(job: Job) -> str:
    with pytest.raises(JobError) as info:
        validate_job(job, CONFIG)
    return info.value.reason


def test_valid_job_is_laned_and_costed() -> None:
    laned = validate_job(Job(tokens=[1] * 65, max_new_tokens=10, id="a"), CONFIG, submitted_at=5.0)
    assert (laned.lane, laned.cost_tokens) == (128, 138)
    assert laned.entry.tokens == array("I", [1] * 65)
    assert laned.entry.submitted_at == 5.0


def test_missing_id_is_generated() -> None:
    first = validate_job(Job(tokens=[1], max_new_tokens=1), CONFIG).entry.id
    second = validate_job(Job(tokens=[1], max_new_tokens=1), CONFIG).entry.id
    assert first != second and len(first) == 32


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (Job(tokens=[], max_new_tokens=1), "tokens is empty"),
        (Job(tokens="abc", max_new_tokens=1), "tokens must be a list"),  # type: ignore[arg-type]
        (Job(tokens=5, max_new_tokens=1), "tokens must be a list"),  # type: ignore[arg-type]
        (Job(tokens=[1, -1], max_new_tokens=1), "tokens[1] = -1 is outside [0, 1000)"),
        (Job(tokens=[1, 1000], max_new_tokens=1), "tokens[1] = 1000 is outside"),
        (Job(tokens=[2**40], max_new_tokens=1), "tokens[0] = 1099511627776 is outside"),
        (Job(tokens=[1, 2.5], max_new_tokens=1), "tokens[1] = 2.5 is not an integer"),  # type: ignore[list-item]
        (Job(tokens=[True], max_new_tokens=1), "tokens[0] = True is not an integer"),
        (Job(tokens=[1, "7"], max_new_tokens=1), "tokens[1] = '7' is not an integer"),  # type: ignore[list-item]
        (
            Job(tokens=[1] * 257, max_new_tokens=1),
            "prompt of 257 tokens exceeds the largest lane (256)",
        ),
        (Job(tokens=[1], max_new_tokens=0), "max_new_tokens must be an integer >= 1, got 0"),
        (Job(tokens=[1], max_new_tokens=2.0), "max_new_tokens must be an integer >= 1"),  # type: ignore[arg-type]
        (
            Job(tokens=[1] * 200, max_new_tokens=300),
            "max_new_tokens 300 exceeds 256, the most lane 256",
        ),
        (Job(tokens=[1], max_new_tokens=1, id="has space"), "id 'has space' must be"),
        (Job(tokens=[1], max_new_tokens=1, id="x" * 129), "must be 1 to 128 characters"),
        (Job(tokens=[1], max_new_tokens=1, id=""), "must be 1 to 128 characters"),
        (Job(tokens=[1], max_new_tokens=1, prefix_class=""), "class must be a string"),
        (Job(tokens=[1], max_new_tokens=1, prefix_class="c" * 129), "class must be a string"),
        (
            Job(tokens=[1], max_new_tokens=1, end_id=1000),
            "end_id 1000 must be an integer in [0, 1000)",
        ),
        (Job(tokens=[1], max_new_tokens=1, end_id=-1), "end_id -1 must be"),
    ],
)
def test_each_bad_input_class_has_a_clear_reason(job: Job, expected: str) -> None:
    assert expected in reason(job)


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ([1, 2], "expected a JSON object, got list"),
        ({"max_new_tokens": 1}, "missing field 'tokens'"),
        ({"tokens": [1]}, "missing field 'max_new_tokens'"),
        ({"tokens": [1], "max_new_tokens": 1, "prio": 3}, "unknown field 'prio'"),
    ],
)
def test_json_structure_errors(obj: object, expected: str) -> None:
    with pytest.raises(JobError) as info:
        job_from_json(obj)
    assert expected in info.value.reason


def test_json_class_field_maps_to_prefix_class() -> None:
    job = job_from_json(
        {"tokens": [1], "max_new_tokens": 2, "class": "sys-a", "end_id": 3, "id": "q"}
    )
    assert (job.prefix_class, job.end_id, job.id) == ("sys-a", 3, "q")


@given(
    st.lists(
        st.one_of(st.integers(-5, 1100), st.floats(), st.booleans(), st.text(max_size=2)),
        max_size=30,
    ),
    st.one_of(st.integers(-3, 600), st.floats(), st.none(), st.text(max_size=2)),
)
def test_validator_accepts_exactly_the_valid_jobs(tokens: list[object], max_new: object) -> None:
    job = Job(tokens=tokens, max_new_tokens=max_new)  # type: ignore[arg-type]
    valid = (
        0 < len(tokens) <= 256
        and all(type(t) is int and 0 <= t < 1000 for t in tokens)
        and type(max_new) is int
        and 1 <= max_new <= 512 - CONFIG.lane_for(len(tokens))  # type: ignore[operator]
    )
    try:
        validate_job(job, CONFIG)
    except JobError:
        assert not valid
    else:
        assert valid


def test_the_largest_valid_job_fits_both_size_caps() -> None:
    """Producer side of the size limits: whatever validates encodes within the caps the
    worker enforces (header and whole entry), so no valid job is refused downstream."""
    from fabric_worker.wire.entries import MAX_ENTRY_BYTES, MAX_HEADER_BYTES, encode_job

    config = FleetConfig(
        lanes=(64, 65536), vocab_size=2**32 - 1, max_seq_len=70_000, backlog_cap_tokens=10**9
    )
    job = Job(
        tokens=[2**32 - 2] * 65536,
        max_new_tokens=1,
        id="x" * 128,
        prefix_class="\U0001f600" * 128,
        end_id=2**32 - 2,
    )
    fields = encode_job(validate_job(job, config, submitted_at=1e12).entry)
    assert len(fields["h"]) <= MAX_HEADER_BYTES
    assert len(fields["h"]) + len(fields["t"]) + 2 <= MAX_ENTRY_BYTES


def test_lanes_beyond_the_entry_cap_are_refused() -> None:
    from fabric_worker.wire.fleet_config import ConfigError

    with pytest.raises(ConfigError, match=r"over the .*-byte cap"):
        FleetConfig(lanes=(64, 131072), max_seq_len=140_000, backlog_cap_tokens=10**9)
