"""The vLLM suite's fixtures: a tiny model, its manifest, one shared engine, Redis.

Run in .venv-vllm (vLLM's CPU build), by `make test`. Fixtures of the main
suite's conftest (a real redis-server per session, namespaces) are reused.
"""

from __future__ import annotations

import faulthandler
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engines.manifest import MANIFEST_DIR, Manifest, load_manifest
from tests.conftest import keys, namespace, own_redis_server, redis_client, redis_server
from tests.integration.harness import ROOT
from tests.vllm.host import EngineHost

__all__ = ["keys", "namespace", "own_redis_server", "redis_client", "redis_server"]

VOCAB = 1024
SEED = 0
# A hung engine start would otherwise hang the run: the per-test timeout does
# not cover fixtures (pytest.ini), so the start gets a bound of its own.
ENGINE_START_TIMEOUT_S = 600


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny128 Llama of vllm-tiny-cpu.json, built by `fabric engine make-model`."""
    out = tmp_path_factory.mktemp("vllm-tiny")
    command = [sys.executable, "-m", "fabric_worker", "engine", "make-model", "--out", str(out)]
    command += ["--size", "tiny128", "--vocab-size", str(VOCAB), "--seed", str(SEED)]
    subprocess.run(command, check=True, cwd=ROOT, capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="session")
def manifest_path(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped vllm-tiny-cpu.json, pointed at the session's model."""
    data = json.loads((MANIFEST_DIR / "vllm-tiny-cpu.json").read_text())
    data["model"] = str(model_dir)
    path = tmp_path_factory.mktemp("manifest") / "vllm-tiny-cpu.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="session")
def manifest(manifest_path: Path) -> Manifest:
    return load_manifest(manifest_path)


@pytest.fixture(scope="session")
def host(manifest: Manifest) -> Iterator[EngineHost]:
    """The session's one in-process vLLM engine, on a thread of its own."""
    from engines.vllm.engine import VllmEngine

    faulthandler.dump_traceback_later(ENGINE_START_TIMEOUT_S, exit=True)
    try:
        started = EngineHost(lambda: VllmEngine(manifest))
    finally:
        faulthandler.cancel_dump_traceback_later()
    yield started
    started.close()
