"""The output of ``autotuner bench``: results on stdout (a table of metrics by load level, or
``--json`` in the daemon's metric names), progress on stderr so the two never mix.

A module of its own so that ``bench.py`` reads as arguments and the run; everything here is
presentation, with no effect on what is measured.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from reconciler.cli._common import print_json
from specs.metrics import STATS
from specs.records import LoadPointRecord

#: rows of the human-readable table: (label, metric)
TABLE_ROWS: tuple[tuple[str, str], ...] = (
    ("completed", "completed"),
    ("failed", "failed"),
    ("duration s", "duration_s"),
    ("requests/s", "request_throughput"),
    ("output tok/s", "output_throughput"),
    ("total tok/s", "total_throughput"),
    ("output tok/s/GPU", "output_throughput_per_gpu"),
    ("goodput req/s", "goodput"),
    ("SLO attainment", "slo_attainment"),
    *((f"TTFT {s} ms", f"ttft_{s}_ms") for s in STATS),
    *((f"TPOT {s} ms", f"tpot_{s}_ms") for s in STATS),
    *((f"ITL {s} ms", f"itl_{s}_ms") for s in STATS),
    *((f"E2E {s} ms", f"e2e_{s}_ms") for s in STATS),
)


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def format_table(points: Sequence[LoadPointRecord]) -> str:
    """Metrics as rows, load levels as columns."""
    header = ["metric"] + [
        f"c={p.load_value:g}" if p.load_kind == "concurrency" else f"rate={p.load_value:g}" for p in points
    ]
    rows = [header]
    for label, metric in TABLE_ROWS:
        rows.append([label] + [fmt(p.metrics.get(metric)) for p in points])
    if any(p.metrics.get("schedule_delay_p99_ms") is not None for p in points):
        # an open-loop level the client could not keep: the offered load was lower than asked
        rows.append(["send lateness p99 ms"] + [fmt(p.metrics.get("schedule_delay_p99_ms")) for p in points])
    if any(p.errors for p in points):
        rows.append(["errors"] + [", ".join(f"{k}={v}" for k, v in p.errors.items()) or "-" for p in points])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    notes = sorted({n for p in points for n in p.notes})
    return "\n".join(lines + [f"note: {n}" for n in notes])


def _jsonable(value: Any) -> Any:
    """Infinite load values (``--rate inf``) as the string ``"inf"``: JSON has no infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def emit(args: argparse.Namespace, points: Sequence[LoadPointRecord], header: dict[str, Any]) -> None:
    if args.json:
        print_json(
            _jsonable({**header, "load_points": [{**p.model_dump(), "extra": p.extra} for p in points]})
        )
        return
    for key, value in header.items():
        if key != "capacity":
            print(f"{key}: {value}")
    print(format_table(points) if points else "no load points")
    capacity = header.get("capacity")
    if capacity:
        print(f"capacity: {capacity['summary']}")


# ---------------------------------------------------------------------------------------- progress


def progress(label: str) -> Callable[[int, int, int], None]:
    """Per-request progress on stderr (never mixed with --json on stdout): one redrawn line on a
    terminal, one line per level otherwise."""
    tty = sys.stderr.isatty()
    last = [0.0]

    def report(done: int, failed: int, total: int) -> None:
        now = time.monotonic()
        final = done == total
        if tty and (final or now - last[0] > 0.2):
            last[0] = now
            sys.stderr.write(f"\r{label}: {done}/{total} done, {failed} failed" + ("\n" if final else ""))
            sys.stderr.flush()
        elif not tty and final:
            print(f"{label}: {done}/{total} done, {failed} failed", file=sys.stderr, flush=True)

    return report


def label(kind: str, level: float) -> str:
    if kind == "concurrency":
        return f"concurrency {int(level)}"
    return f"rate {'inf' if math.isinf(level) else f'{level:g}'} req/s"
