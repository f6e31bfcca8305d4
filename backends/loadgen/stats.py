"""Percentiles and summaries, the way ``vllm bench serve`` computes them.

vLLM uses ``np.percentile`` with its default *linear* method: for ``n`` sorted samples the
``q``-th percentile sits at fractional rank ``(n - 1) * q / 100`` and interpolates between its two
neighbours. We implement the same few lines instead of depending on numpy, so our numbers and
vLLM's agree on the same samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from specs.metrics import STATS


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) of already sorted values; None when there are none."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    n = len(sorted_values)
    if n == 0:
        return None
    rank = (n - 1) * q / 100
    lo = math.floor(rank)
    hi = min(lo + 1, n - 1)
    frac = rank - lo
    a, b = sorted_values[lo], sorted_values[hi]
    return a + (b - a) * frac


def summarize(values: Sequence[float], base: str, *, scale: float = 1000.0) -> dict[str, float | None]:
    """``{base}_{stat}_ms`` for every stat of :data:`specs.metrics.STATS` (seconds in, ms out)."""
    ordered = sorted(v * scale for v in values)
    out: dict[str, float | None] = {}
    for stat in STATS:
        key = f"{base}_{stat}_ms"
        if not ordered:
            out[key] = None
        elif stat == "mean":
            out[key] = math.fsum(ordered) / len(ordered)
        else:
            out[key] = percentile(ordered, float(stat[1:]))
    return out
