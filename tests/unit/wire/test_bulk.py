"""The bulk codec: the same jobs and the same refusals as one entry at a time."""

from __future__ import annotations

from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabric_worker.wire.bulk import decode_jobs, encode_results, max_tokens
from fabric_worker.wire.entries import (
    EntryError,
    JobEntry,
    ResultEntry,
    decode_job,
    decode_result,
    encode_job,
    encode_result,
    pack_tokens,
)
from tests.unit.wire.test_entries import BAD_ENTRIES, MAX_PROMPT, VOCAB, fields_of, good_header


def bulk(entries: list[dict[bytes, bytes]]) -> list[JobEntry | EntryError]:
    return decode_jobs(entries, vocab_size=VOCAB, max_prompt_tokens=MAX_PROMPT)


def one(fields: dict[bytes, bytes]) -> JobEntry | EntryError:
    try:
        return decode_job(fields, vocab_size=VOCAB, max_prompt_tokens=MAX_PROMPT)
    except EntryError as exc:
        return exc


def as_fields(job: JobEntry) -> dict[bytes, bytes]:
    return {k.encode(): v for k, v in encode_job(job).items()}


prompts = st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=40)


@given(st.lists(prompts, max_size=20))
def test_jobs_round_trip_in_bulk(batch: list[list[int]]) -> None:
    jobs = [JobEntry(f"j{i}", array("I", p), 1 + i) for i, p in enumerate(batch)]
    assert bulk([as_fields(j) for j in jobs]) == jobs


def test_every_bad_entry_gets_the_reason_it_gets_alone_wherever_it_sits() -> None:
    good = fields_of(good_header(), pack_tokens([VOCAB - 1, 0, 5]))
    # Bad entries between good ones, so that the bulk maximum has to keep them apart.
    entries = [good]
    for fields, _ in BAD_ENTRIES:
        entries += [fields, good]
    decoded = bulk(entries)
    assert len(decoded) == len(entries)
    for i, (fields, reason) in enumerate(BAD_ENTRIES):
        error = decoded[1 + 2 * i]
        assert isinstance(error, EntryError), (reason, error)
        alone = one(fields)
        assert isinstance(alone, EntryError)
        assert error.reason == alone.reason
        assert reason in error.reason
    assert all(decoded[i] == one(good) for i in range(0, len(entries), 2))


@pytest.mark.parametrize("where", [0, 1, 2])
def test_an_out_of_vocabulary_token_is_found_in_its_own_entry(where: int) -> None:
    entries = [fields_of(good_header(), pack_tokens([1, 2, 3])) for _ in range(3)]
    entries[where] = fields_of(good_header(), pack_tokens([4, VOCAB + 7, 5]))
    decoded = bulk(entries)
    assert [isinstance(d, EntryError) for d in decoded] == [i == where for i in range(3)]
    error = decoded[where]
    assert isinstance(error, EntryError)
    assert error.reason == f"token {VOCAB + 7} is outside [0, {VOCAB})"


def test_max_tokens_reads_little_endian_uint32_and_keeps_the_gaps() -> None:
    payloads = [None, pack_tokens([3, 2**32 - 1]), None, pack_tokens([7]), None]
    assert max_tokens(payloads) == [None, 2**32 - 1, None, 7, None]
    assert max_tokens([None, None]) == [None, None]
    assert max_tokens([]) == []


def test_str_keys_and_values_decode_as_alone() -> None:
    fields = {"h": b'{"v":1,"id":"s","max_new_tokens":2}', "t": pack_tokens([9]).decode()}
    assert bulk([fields]) == [one(fields)]  # type: ignore[list-item]


results = st.lists(
    st.tuples(
        st.lists(st.integers(0, 2**32 - 1), max_size=20),
        st.sampled_from(["length", "stop"]),
        st.integers(1, 9),
        st.floats(0, 2e9),
        st.floats(0, 2e9),
        st.none() | st.sampled_from(["b1", "night-run.7"]),
    ),
    max_size=12,
)


@given(results, st.floats(0, 2e9))
def test_results_in_bulk_are_byte_for_byte_those_encoded_alone(
    batch: list[tuple[list[int], str, int, float, float, str | None]], finished_at: float
) -> None:
    ids = [f"r{i}" for i in range(len(batch))]
    encoded = encode_results(
        ids=ids,
        tokens=[b[0] for b in batch],
        finish_reasons=[b[1] for b in batch],
        deliveries=[b[2] for b in batch],
        submitted_at=[b[3] for b in batch],
        started_at=[b[4] for b in batch],
        finished_at=finished_at,
        worker="w-1",
        batches=[b[5] for b in batch],
    )
    assert len(encoded) == len(batch)
    for job_id, (tokens, reason, n, submitted, started, name), (header, packed) in zip(
        ids, batch, encoded, strict=True
    ):
        alone = ResultEntry(
            job_id, tokens, reason, n, "w-1", submitted, started, finished_at, batch=name
        )
        assert {"h": header, "t": packed} == encode_result(alone)
        assert decode_result({b"h": header, b"t": packed}) == alone


def test_result_columns_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="result columns"):
        encode_results(
            ids=["a", "b"],
            tokens=[[1]],
            finish_reasons=["length", "length"],
            deliveries=[1, 1],
            submitted_at=[0.0, 0.0],
            started_at=[0.0, 0.0],
            finished_at=1.0,
            worker="w",
        )


def test_a_token_that_is_not_uint32_fails_the_batch() -> None:
    with pytest.raises(OverflowError):
        encode_results(
            ids=["a"],
            tokens=[[-1]],
            finish_reasons=["length"],
            deliveries=[1],
            submitted_at=[0.0],
            started_at=[0.0],
            finished_at=1.0,
            worker="w",
        )
