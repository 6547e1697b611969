"""``fabric submit`` of a 100,000-line JSONL file of 256-token prompts, timed as a user would.

    python -m bench.submit_file [--lines 100000]

The file is made by the one-liner in ``ONE_LINER`` (also in docs/benchmarks.md); the
namespace is created with ``fabric init`` on a private redis-server; then
``fabric submit FILE`` runs as its own process and its wall time is what ``time`` would
print (interpreter start, validation pass, submit pass). A first measurement on this
machine was 7.2 s; this measures it again.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, machine_line, save, table
from fabric_worker.dev.redis_server import RedisServer

LEAD_S = 7.2
ONE_LINER = (
    "import json,random,sys; r=random.Random(0); n=int(sys.argv[1]); "
    "sys.stdout.writelines(json.dumps({'id': f's{i}', 'tokens': [r.randrange(32000) "
    "for _ in range(256)], 'max_new_tokens': 16}) + '\\n' for i in range(n))"
)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    args = parser.parse_args(argv)
    print(machine_line(), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-submit-"))
    path = workdir / "jobs.jsonl"
    with path.open("wb") as out:
        subprocess.run([sys.executable, "-c", ONE_LINER, str(args.lines)], stdout=out, check=True)
    fabric = str(Path(sys.executable).parent / "fabric")
    with RedisServer() as server:
        base = [fabric, "--redis-url", server.url, "--namespace", "bench-submit"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run([*base, "init"], check=True, capture_output=True, env=env)
        started = time.monotonic()
        proc = subprocess.run(
            [*base, "submit", str(path)], capture_output=True, text=True, env=env, check=False
        )
        wall_s = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"fabric submit failed: {proc.stderr[-2000:]}")
    size_mb = path.stat().st_size / 1e6
    rows = [
        ["file", f"{args.lines:,} lines, 256-token prompts, {size_mb:.0f} MB"],
        ["fabric submit wall time", f"{wall_s:.2f} s"],
        ["jobs/s", f"{args.lines / wall_s:,.0f}"],
        ["MB/s of JSONL", f"{size_mb / wall_s:.1f}"],
        ["lead's figure on this machine", f"{LEAD_S} s"],
        ["this run / lead's", f"{wall_s / LEAD_S:.2f}x"],
        ["fabric submit said", proc.stdout.strip()],
    ]
    print()
    print("bench.submit_file: time fabric submit FILE")
    print(machine_line())
    print(table(["measure", "value"], rows))
    path.unlink()
    result = {"lines": args.lines, "wall_s": wall_s, "lead_s": LEAD_S, "size_mb": size_mb}
    save("submit_file", result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
