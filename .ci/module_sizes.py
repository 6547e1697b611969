"""Fail when a module of the shipped packages is over the house limit of lines.

Modules hold one concept each (docs/style.md); past the limit a module has
grown a second one and wants splitting. Tests and benchmarks are exempt.
"""

from __future__ import annotations

import sys
from pathlib import Path

MAX_LINES = 300
PACKAGES = ("fabric_worker", "producers", "engines")


def main() -> int:
    root = Path(__file__).resolve().parents[1]
    over = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            num_lines = len(path.read_text().splitlines())
            if num_lines > MAX_LINES:
                over.append(f"{path.relative_to(root)}: {num_lines} lines (max {MAX_LINES})")
    for line in over:
        print(line, file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
