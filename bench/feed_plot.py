"""One PNG per engine_feed workload: the engine's busy fraction and the requests in
flight over time, one line per contender, each on its own clock from its first submit.

A starved engine shows at a glance as a dip in the busy curve where the in-flight
curve falls, which a table's averages hide. matplotlib is optional (the vLLM
environment installs it); without it, :func:`save_plot` says the plot was skipped.
"""

from __future__ import annotations

import bisect
from pathlib import Path

from bench.feed_timeline import Timeline, in_flight

BINS = 60
MAX_BYTES = 200_000


def busy_curve(timeline: Timeline, bins: int = BINS) -> list[tuple[float, float]]:
    """(bin middle, share of the bin spent polling an engine that held requests),
    in seconds from the first submit to the last poll's end."""
    if not timeline.submits or not timeline.polls:
        return []
    origin = timeline.submits[0][0]
    span = max(end for _, end, _ in timeline.polls) - origin
    width = span / bins if span > 0 else 1.0
    curve = in_flight(timeline)
    busy = [0.0] * bins
    for begin, end, _ in timeline.polls:
        index = bisect.bisect_right(curve, (begin, float("inf")))
        if not index or curve[index - 1][1] <= 0:
            continue  # polling an empty engine is waiting, not work
        for b in range(max(0, int((begin - origin) / width)), bins):
            low, high = origin + b * width, origin + (b + 1) * width
            if low >= end:
                break
            busy[b] += max(0.0, min(end, high) - max(begin, low))
    return [((b + 0.5) * width, min(1.0, busy[b] / width)) for b in range(bins)]


def save_plot(path: Path, title: str, timelines: dict[str, Timeline]) -> str:
    """Write the plot of ``timelines`` (contender -> its round) to ``path``; says what it did."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        return f"plot skipped (matplotlib is not installed): {path.name}"
    figure, (busy_axes, held_axes) = plt.subplots(2, 1, sharex=True, figsize=(7, 4.5), dpi=80)
    for name, timeline in timelines.items():
        points = busy_curve(timeline)
        busy_axes.plot([t for t, _ in points], [f for _, f in points], label=name, linewidth=1)
        origin = timeline.submits[0][0] if timeline.submits else 0.0
        steps = in_flight(timeline)
        held_axes.step(
            [at - origin for at, _ in steps],
            [n for _, n in steps],
            where="post",
            label=name,
            linewidth=1,
        )
    busy_axes.set_ylabel("engine busy")
    busy_axes.set_ylim(0, 1.05)
    busy_axes.legend(fontsize="small", loc="lower right")
    busy_axes.set_title(title, fontsize="medium")
    held_axes.set_ylabel("requests in flight")
    held_axes.set_xlabel("seconds from the first submit")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    size = path.stat().st_size
    note = "" if size <= MAX_BYTES else f" (over {MAX_BYTES // 1000} KB)"
    return f"plot written: {path} ({size // 1000} KB){note}"
