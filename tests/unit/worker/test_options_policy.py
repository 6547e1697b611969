"""Every dispatch policy field can be set from the worker's options, and arrives."""

from __future__ import annotations

from dataclasses import fields

from fabric_worker.core.policy import DispatchPolicy
from fabric_worker.worker.options import WorkerOptions


def test_every_dispatch_policy_field_is_a_worker_option_that_reaches_the_policy() -> None:
    values = {
        "max_tps": True,
        "lane_max_wait_s": 3.5,
        "class_max_wait_s": 0.25,
        "read_ahead_budgets": 7,
        "arrival_order": False,
        "share_prefixes": False,
        "max_in_engine": 12,
    }
    assert {f.name for f in fields(DispatchPolicy)} == set(values)
    policy = WorkerOptions(consumer="w", **values).dispatch_policy  # type: ignore[arg-type]
    assert {name: getattr(policy, name) for name in values} == values
