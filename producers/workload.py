"""Ragged synthetic jobs drawn from the production trace sample shipped with the package.

Prompt contents are not in the trace, only lengths: prompts are seeded random
token ids, with a shared system-prompt prefix per class so the engine's prefix
cache has something to find, as it would in agent traffic.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from importlib import resources

from producers.validation import Job

SAMPLE = "trace_sample.csv"


def trace_lengths(limit: int | None = None) -> list[tuple[int, int]]:
    """(prompt tokens, output tokens) pairs from the shipped trace sample."""
    text = resources.files("producers").joinpath("data", SAMPLE).read_text()
    rows = csv.reader(line for line in text.splitlines() if not line.startswith("#"))
    next(rows)  # header
    pairs = [(int(p), int(o)) for p, o in rows]
    return pairs[:limit] if limit else pairs


def trace_jobs(
    num_jobs: int,
    *,
    vocab_size: int = 32_000,
    num_classes: int = 8,
    prefix_tokens: int = 256,
    max_prompt_tokens: int = 32_768,
    seed: int = 0,
) -> Iterator[Job]:
    """``num_jobs`` jobs cycling through the trace sample's lengths."""
    rng = random.Random(seed)
    lengths = trace_lengths()
    prefixes = [
        [rng.randrange(vocab_size) for _ in range(prefix_tokens)] for _ in range(num_classes)
    ]
    for i in range(num_jobs):
        prompt_len, output_len = lengths[i % len(lengths)]
        prompt_len = max(1, min(prompt_len, max_prompt_tokens))
        cls = rng.randrange(num_classes) if num_classes else None
        head = prefixes[cls][:prompt_len] if cls is not None else []
        tail = [rng.randrange(vocab_size) for _ in range(prompt_len - len(head))]
        yield Job(
            tokens=head + tail,
            max_new_tokens=max(1, output_len),
            id=f"demo-{seed}-{i}",
            prefix_class=f"sys{cls}" if cls is not None else None,
        )
