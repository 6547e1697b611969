"""The script loader joins each script's includes in front of it (Redis has no
include); these check the joining with no server. tests/integration/broker/
test_scripts.py runs every joined script against a real Redis."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from fabric_worker.broker.scripts import source

LUA = resources.files("fabric_worker.broker").joinpath("lua")
SCRIPTS = sorted(p.name[:-4] for p in LUA.iterdir() if p.name.endswith(".lua"))
INCLUDES = {
    p.name[:-4]: p.read_text()
    for p in LUA.joinpath("includes").iterdir()
    if p.name.endswith(".lua")
}
DEFINED = {
    name: re.findall(r"^local function (\w+)\(", text, re.M) for name, text in INCLUDES.items()
}


def test_every_script_is_there() -> None:
    assert SCRIPTS == [
        "cancel",
        "complete",
        "deadletter",
        "renew",
        "replay",
        "requeue",
        "retry",
        "submit",
    ]


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_gets_exactly_the_fragments_it_calls(name: str) -> None:
    text = source(name)
    shebang, _, body = LUA.joinpath(f"{name}.lua").read_text().partition("\n")
    assert text.startswith(shebang + "\n")
    assert text.endswith(body)
    for include, functions in DEFINED.items():
        joined = text.count(INCLUDES[include])
        called = any(re.search(rf"\b{f}\(", body) for f in functions)
        # Once if the script calls any of its functions, else not at all.
        assert joined == int(called), (name, include)


def test_every_fragment_is_used_by_some_script() -> None:
    bodies = "".join(LUA.joinpath(f"{name}.lua").read_text() for name in SCRIPTS)
    unused = [f for functions in DEFINED.values() for f in functions if f"{f}(" not in bodies]
    assert unused == []


# Scripts that add data are refused whole under OOM; the rest free or touch only
# what exists, so they must still run when Redis is full.
ALLOW_OOM = {"renew", "requeue", "retry"}


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_shebang_comes_first_with_the_oom_flag_only_where_it_belongs(name: str) -> None:
    first = source(name).partition("\n")[0]
    assert first == ("#!lua flags=allow-oom" if name in ALLOW_OOM else "#!lua")


def test_a_shebang_stays_the_first_line_in_front_of_the_includes() -> None:
    # Redis reads "#!lua" only as the very first line of a script.
    text = source("complete")
    assert text.startswith("#!lua\n")
    assert text.count("#!") == 1
    assert text.index("local function ack_and_delete(") < text.index("local function complete_one(")
