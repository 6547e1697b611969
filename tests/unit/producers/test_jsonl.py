"""Job files: every bad line named with its number, across chunk boundaries."""

from __future__ import annotations

import io

import orjson
import pytest

from fabric_worker.wire.fleet_config import FleetConfig
from producers import jsonl
from producers.jsonl import iter_chunks, validate_file
from producers.validation import JobError

CONFIG = FleetConfig(lanes=(64, 128), vocab_size=1000, max_seq_len=256, backlog_cap_tokens=10**6)


def line(**fields: object) -> bytes:
    return orjson.dumps({"tokens": [1, 2], "max_new_tokens": 4} | fields) + b"\n"


FILE = b"".join(
    [
        line(id="a"),  # 1
        b"\n",  # 2: blank, skipped
        b"{not json\n",  # 3
        line(id="b", tokens=[1, 1000]),  # 4
        line(id="a"),  # 5: a second "a"
        line(id="c", tokens=[]),  # 6
        b"[1, 2]\n",  # 7
        line(id="d", tokens=[True]),  # 8
        line(id="e"),  # 9
    ]
)


@pytest.mark.parametrize("chunk", [1, 2, 3, 1000])
def test_bad_lines_are_named_in_order_whatever_the_chunk(
    chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jsonl, "VALIDATE_CHUNK", chunk)
    seen: list[int] = []
    num_jobs, errors = validate_file(io.BytesIO(FILE), CONFIG, on_bytes=seen.append)
    assert num_jobs == 3  # lines 1, 5 and 9; the second "a" then refused as a duplicate
    assert str(errors[0]).startswith("line 3: not valid JSON")
    assert [str(e) for e in errors[1:]] == [
        "line 4: tokens[1] = 1000 is outside [0, 1000)",
        "line 5: id 'a' appears twice in the file",
        "line 6: tokens is empty",
        "line 7: expected a JSON object, got list",
        "line 8: tokens[0] = True is not an integer",
    ]
    assert sum(seen) == len(FILE) - 1  # every byte but the blank line's


def test_chunks_keep_the_order_of_the_file() -> None:
    data = b"".join(line(id=f"j{i}", tokens=[i] * (1 + i)) for i in range(100))
    chunks = list(iter_chunks(io.BytesIO(data), CONFIG, 30, batch="b1"))
    assert [len(jobs) for jobs, _ in chunks] == [30, 30, 30, 10]
    assert sum(num_bytes for _, num_bytes in chunks) == len(data)
    jobs = [job for chunk, _ in chunks for job in chunk]
    assert [job.entry.id for job in jobs] == [f"j{i}" for i in range(100)]
    assert all(job.entry.tokens.tolist() == [i] * (1 + i) for i, job in enumerate(jobs))
    assert {job.entry.batch for job in jobs} == {"b1"}
    assert [job.lane for job in jobs] == [64] * 64 + [128] * 36


def test_a_line_gone_bad_since_validation_stops_the_submit() -> None:
    with pytest.raises(JobError, match="line 2: tokens is empty"):
        list(iter_chunks(io.BytesIO(line() + line(tokens=[])), CONFIG, 10))
