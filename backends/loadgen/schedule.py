"""When each request of an open-loop load point is sent, computed up front from a seed.

Arrivals follow ``vllm bench serve``: inter-arrival gaps are Gamma-distributed with shape
``burstiness`` and mean ``1 / rate``, so ``burstiness = 1`` is a Poisson process, smaller values
are burstier and larger ones more regular. ``rate = inf`` sends everything at once. The whole
schedule is drawn before the first request from its own ``random.Random(seed)``, which makes a
load point's arrival pattern reproducible and independent of how fast the server answers.
"""

from __future__ import annotations

import math
import random


def arrival_offsets(n: int, rate: float, *, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """Send times (seconds after the start) of ``n`` requests at ``rate`` requests/s on average.

    The first request goes at 0; the schedule is non-decreasing.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    if not rate > 0:
        raise ValueError(f"request rate must be > 0, got {rate}")
    if not burstiness > 0:
        raise ValueError(f"burstiness must be > 0, got {burstiness}")
    if math.isinf(rate):
        return [0.0] * n
    rng = random.Random(seed)
    theta = 1.0 / (rate * burstiness)
    offsets: list[float] = []
    t = 0.0
    for i in range(n):
        if i:
            t += rng.gammavariate(burstiness, theta)
        offsets.append(t)
    return offsets
