"""Fast client tests on fakeredis (its Lua runs the real submit script)."""

from __future__ import annotations

import fakeredis
import pytest

from fabric_worker.broker import scripts
from fabric_worker.broker.namespace import init_namespace
from fabric_worker.wire.fleet_config import FleetConfig
from fabric_worker.wire.keys import Keys
from producers import BackpressureError, FabricClient, InvalidJobsError, Job

CONFIG = FleetConfig(lanes=(64, 128), vocab_size=100, max_seq_len=256, backlog_cap_tokens=1000)


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> FabricClient:
    # fakeredis runs a script as plain Lua: it knows no ``#!lua`` shebang line
    # (Redis reads the flags from it; tests/integration checks them).
    source = scripts.source
    monkeypatch.setattr(scripts, "source", lambda name: source(name).partition("\n")[2])
    server = fakeredis.FakeRedis()
    init_namespace(server, Keys("u"), CONFIG)
    return FabricClient(server, "u", backpressure_timeout_s=0.2)


def test_submit_then_resubmit_reports_duplicates(client: FabricClient) -> None:
    jobs = [Job(tokens=[1] * n, max_new_tokens=4, id=f"j{n}") for n in (10, 70, 20)]
    first = client.submit(jobs)
    assert (first.num_submitted, first.num_duplicates, first.ids) == (3, 0, ["j10", "j70", "j20"])
    again = client.submit(jobs)
    assert (again.num_submitted, again.num_duplicates) == (0, 3)
    assert sorted(again.duplicate_ids) == ["j10", "j20", "j70"]


def test_same_id_twice_in_one_call_is_one_job(client: FabricClient) -> None:
    report = client.submit([Job(tokens=[1], max_new_tokens=1, id="x")] * 2)
    assert (report.num_submitted, report.num_duplicates) == (1, 1)


def test_invalid_job_means_nothing_written(client: FabricClient) -> None:
    with pytest.raises(InvalidJobsError, match=r"job 1: tokens\[0\] = 100 is outside"):
        client.submit(
            [Job(tokens=[1], max_new_tokens=1, id="ok"), Job(tokens=[100], max_new_tokens=1)]
        )
    report = client.submit([Job(tokens=[1], max_new_tokens=1, id="ok")])
    assert report.num_submitted == 1  # "ok" was not written by the refused call


def test_backpressure_error_says_what_was_submitted(client: FabricClient) -> None:
    # lane 64 costs 64 + 100 = 164 per job: 6 fit under 1000 tokens.
    jobs = [Job(tokens=[1], max_new_tokens=100, id=f"b{i}") for i in range(8)]
    with pytest.raises(
        BackpressureError, match=r"lane\(s\) \[64\].*2 job\(s\) not submitted"
    ) as info:
        client.submit(jobs)
    assert info.value.report.num_submitted == 6
    assert info.value.num_pending == 2
