"""The GPU bundle (make gpu-bundle): its redis-server runs from its folder, and
its wheels are all a Python 3.12 machine needs, offline.

`make test` builds the bundle first; run alone, the fixture builds it into a
temporary folder (a few seconds: Debian packages and wheels, no compiling).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from fabric_worker.dev.redis_server import RedisServer
from tests.integration.harness import ROOT

pytestmark = pytest.mark.integration

BUILT = ROOT / "build" / "gpu-bundle"
DEPS = ["redis[hiredis]", "orjson", "click", "tenacity", "prometheus-client", "rich"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if (BUILT / "bin" / "redis-server").is_file():
        return BUILT
    out = tmp_path_factory.mktemp("bundle") / "gpu-bundle"
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_bundle.sh"), str(out)],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    return out


def test_the_bundled_redis_server_runs_from_its_folder(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The bundle first on PATH, as bench/gpu_check.sh puts it; INFO then shows
    # that the server running is the bundle's binary, not the system's.
    monkeypatch.setenv("PATH", f"{bundle / 'bin'}:{os.defpath}")
    server = RedisServer(tmp_path)
    assert server.binary == str(bundle / "bin" / "redis-server")
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        info = client.info("server")
        assert str(info["executable"]).startswith(str(bundle / "redis"))
        assert int(str(info["redis_version"]).split(".")[0]) >= 7
        client.xadd("s", {"f": "v"})
        assert client.xlen("s") == 1
        client.close()
    finally:
        server.close()


def test_the_bundled_wheels_are_complete_for_python_312(bundle: Path, tmp_path: Path) -> None:
    """Everything the fabric imports resolves from the bundle alone (no index)."""
    wheels = ["--no-index", "--find-links", str(bundle / "wheels"), "--only-binary=:all:"]
    target = ["--python-version", "3.12", "--implementation", "cp"]
    target += ["--platform", "manylinux2014_x86_64", "--dest", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", *wheels, *target, *DEPS],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    names = {p.name.split("-")[0].lower() for p in tmp_path.iterdir()}
    assert {"orjson", "hiredis", "redis", "click", "tenacity"} <= names
    assert any("cp312" in p.name for p in tmp_path.iterdir() if p.name.startswith("orjson"))
