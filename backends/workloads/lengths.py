"""Draw token lengths from a spec's :class:`~specs.model.LengthDist`.

* ``fixed``: always ``mean``.
* ``normal``: ``round(gauss(mean, stddev))``.
* ``uniform``: ``round(uniform(mean - stddev*sqrt(3), mean + stddev*sqrt(3)))``. The spec gives
  every distribution as mean and standard deviation, so "uniform" means the uniform distribution
  *with that mean and that standard deviation*; a uniform on ``[a, b]`` has standard deviation
  ``(b - a) / sqrt(12)``, hence the half-width ``stddev * sqrt(3)``.

Every draw is then clipped to ``[min, max]`` and to at least 1 (a request needs one token).
Clipping, not re-drawing, keeps the number of random draws per request fixed, so the same seed
gives the same lengths whatever the bounds are.
"""

from __future__ import annotations

import math
import random

from specs.model import LengthDist


def draw_length(dist: LengthDist, rng: random.Random) -> int:
    kind = dist.kind
    if kind == "fixed":
        value = float(dist.mean)
    elif kind == "normal":
        value = rng.gauss(dist.mean, dist.stddev)
    else:
        half_width = dist.stddev * math.sqrt(3)
        value = rng.uniform(dist.mean - half_width, dist.mean + half_width)
    return clip(round(value), dist)


def clip(value: int, dist: LengthDist) -> int:
    low = max(1, dist.min or 1)
    if dist.max is not None:
        value = min(value, dist.max)
    return max(value, low)


def describe(dist: LengthDist) -> str:
    """``normal(1024±128, [1, 2048])``: for the workload description."""
    kind = dist.kind
    body = str(dist.mean) if kind == "fixed" else f"{dist.mean}±{dist.stddev:g}"
    bounds = ""
    if dist.min is not None or dist.max is not None:
        bounds = f", [{dist.min or 1}, {dist.max if dist.max is not None else '∞'}]"
    return f"{kind}({body}{bounds})"
