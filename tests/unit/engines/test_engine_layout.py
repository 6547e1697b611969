"""engines/ stands alone: it imports no fabric_worker or producers, its modules
stay under 300 lines, and the real adapters take their request checks from
engines.requests, not from the simulator."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ENGINES = Path(__file__).resolve().parents[3] / "engines"
MODULES = sorted(ENGINES.rglob("*.py"))
REAL_ADAPTERS = ("hf", "trtllm", "vllm")


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ENGINES)))
def test_a_module_imports_neither_the_worker_nor_the_producers(path: Path) -> None:
    bad = {n for n in imported(path) if n.split(".")[0] in ("fabric_worker", "producers")}
    assert not bad


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ENGINES)))
def test_a_module_stays_under_300_lines(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= 300


@pytest.mark.parametrize("adapter", REAL_ADAPTERS)
def test_real_adapters_do_not_lean_on_the_simulator(adapter: str) -> None:
    for path in sorted((ENGINES / adapter).glob("*.py")):
        assert not any(n.startswith("engines.sim") for n in imported(path)), path
