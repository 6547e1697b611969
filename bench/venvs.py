"""The benchmark's own virtual environments, built from pinned requirement files.

The peers (Dramatiq, Celery, arq) and the profilers are not the project's dependencies:
they live in venvs under bench/, created on first use from PyPI only, and rebuilt when
their requirements file changes. arq pins redis<6 and kombu redis>=6.4, hence two venvs.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import BENCH


@dataclass(frozen=True, slots=True)
class BenchVenv:
    name: str
    requirements: Path

    @property
    def path(self) -> Path:
        return BENCH / f".venv-{self.name}"

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def bin(self, tool: str) -> Path:
        return self.path / "bin" / tool

    def _stamp(self) -> Path:
        return self.path / ".requirements.sha256"

    def _wanted(self) -> str:
        return hashlib.sha256(self.requirements.read_bytes()).hexdigest()

    def is_ready(self) -> bool:
        stamp = self._stamp()
        return self.python.exists() and stamp.exists() and stamp.read_text() == self._wanted()

    def ensure(self, log=print) -> Path:
        """Create or update the venv; returns its interpreter."""
        if self.is_ready():
            return self.python
        started = time.monotonic()
        log(f"bench: creating {self.path.relative_to(BENCH.parent)} from {self.requirements.name}")
        # The base interpreter, not the project venv's: a venv of a venv works but
        # would tie this one to .venv's lifetime.
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", "--clear", str(self.path)], check=True)
        pip = [str(self.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "-r", str(self.requirements)], check=True)
        self._stamp().write_text(self._wanted())
        log(f"bench: {self.name} venv ready in {time.monotonic() - started:.0f} s")
        return self.python


PEERS = BenchVenv("peers", BENCH / "requirements.txt")  # dramatiq, celery, py-spy, pyinstrument
ARQ = BenchVenv("arq", BENCH / "requirements-arq.txt")


if __name__ == "__main__":
    for venv in (PEERS, ARQ):
        print(venv.ensure())
