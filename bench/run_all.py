"""Every benchmark, one after the other: ``make bench`` (full) and ``make bench-quick``.

    python -m bench.run_all [--quick] [--only supply,saturation,...]

Each benchmark prints its own table; this prints every goal line again at the end. The
full run takes about 20 minutes on the 2-core machine (most of it the wall-clock
saturation runs and the peers); ``--quick`` runs every benchmark at a smaller size in
about 2.5 minutes, under 5 even on a busy machine, once the peers' venvs exist (the first
run creates them from PyPI, which takes about 20 s more). JSON of each run lands in bench/.results/.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from bench import cpu_per_job, memory, overhead, prefix, saturation, submit_file, supply
from bench.common import machine_line
from bench.venvs import ARQ, PEERS

BENCHMARKS: dict[str, tuple[Callable[[list[str]], Any], list[str], list[str]]] = {
    # name: (main, full arguments, quick arguments)
    "supply": (supply.main, ["--profile"], ["--jobs", "20000", "--peer-jobs", "2000"]),
    "cpu_per_job": (cpu_per_job.main, [], ["--quick"]),
    "saturation": (
        saturation.main,
        ["--jobs", "600", "--proposed-variants", "steady"],
        ["--jobs", "120", "--variants", "steady"],
    ),
    "prefix": (prefix.main, [], ["--jobs", "1000"]),
    "overhead": (overhead.main, [], ["--window-jobs", "500"]),
    "memory": (memory.main, [], ["--jobs", "60000", "--round-jobs", "10000"]),
    "submit_file": (submit_file.main, [], ["--lines", "20000"]),
}


class _Tee(io.TextIOBase):
    """Writes through to the real stdout and keeps the goal lines."""

    def __init__(self, out: Any) -> None:
        self._out = out
        self.goals: list[str] = []
        self._partial = ""

    def write(self, text: str) -> int:
        self._out.write(text)
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        self.goals += [line for line in lines if line.startswith("goal ")]
        return len(text)

    def flush(self) -> None:
        self._out.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under 5 minutes")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma list of benchmarks")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHMARKS)}")
    if "supply" in names:
        for venv in (PEERS, ARQ):
            venv.ensure()
    started = time.monotonic()
    tee = _Tee(sys.stdout)
    failed: list[str] = []
    timings: list[tuple[str, float]] = []
    for name in names:
        run, full, quick = BENCHMARKS[name]
        print(f"\n===== bench.{name} {' '.join(quick if args.quick else full)}", flush=True)
        t0 = time.monotonic()
        try:
            with contextlib.redirect_stdout(tee):
                run(quick if args.quick else full)
        except Exception:
            traceback.print_exc()
            failed.append(name)
        timings.append((name, time.monotonic() - t0))
    print(f"\n===== summary ({'quick' if args.quick else 'full'})")
    print(machine_line())
    for name, seconds in timings:
        print(f"{name}: {seconds:.0f} s{'  FAILED' if name in failed else ''}")
    print(f"total: {time.monotonic() - started:.0f} s")
    for line in tee.goals:
        print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
