"""Open-loop arrivals: deterministic for a seed, Poisson at burstiness 1, burstier below it."""

from __future__ import annotations

import math
import statistics
from itertools import pairwise

import pytest

from backends.loadgen import arrival_offsets


def window_counts(offsets: list[float], width: float) -> list[int]:
    n = math.ceil(offsets[-1] / width)
    counts = [0] * n
    for t in offsets:
        counts[min(int(t / width), n - 1)] += 1
    return counts[:-1]  # the last window is cut short


def test_same_seed_same_schedule_other_seed_other_schedule() -> None:
    a = arrival_offsets(200, 10.0, seed=7)
    assert a == arrival_offsets(200, 10.0, seed=7)
    assert a != arrival_offsets(200, 10.0, seed=8)


def test_schedule_starts_at_zero_and_never_goes_back() -> None:
    offsets = arrival_offsets(500, 50.0, burstiness=0.5, seed=1)
    assert offsets[0] == 0.0
    assert all(b >= a for a, b in pairwise(offsets))


def test_poisson_counts_have_the_rate_as_mean_and_variance() -> None:
    rate = 20.0
    offsets = arrival_offsets(20_000, rate, seed=3)
    counts = window_counts(offsets, 1.0)
    mean = statistics.fmean(counts)
    assert mean == pytest.approx(rate, rel=0.05)
    # index of dispersion of a Poisson process is 1
    assert statistics.pvariance(counts) / mean == pytest.approx(1.0, abs=0.15)
    gaps = [b - a for a, b in pairwise(offsets)]
    # exponential gaps: coefficient of variation 1
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, abs=0.05)


def test_low_burstiness_clumps_high_burstiness_evens_out() -> None:
    rate = 20.0
    bursty = window_counts(arrival_offsets(20_000, rate, burstiness=0.25, seed=3), 1.0)
    regular = window_counts(arrival_offsets(20_000, rate, burstiness=8.0, seed=3), 1.0)
    # gamma(k) gaps: the count dispersion tends to 1/k
    assert statistics.pvariance(bursty) / statistics.fmean(bursty) == pytest.approx(4.0, rel=0.3)
    assert statistics.pvariance(regular) / statistics.fmean(regular) < 0.3
    # the mean rate does not depend on burstiness
    assert statistics.fmean(bursty) == pytest.approx(rate, rel=0.1)
    assert statistics.fmean(regular) == pytest.approx(rate, rel=0.05)


def test_infinite_rate_sends_everything_at_once() -> None:
    assert arrival_offsets(5, math.inf) == [0.0] * 5


@pytest.mark.parametrize(("n", "rate", "burstiness"), [(-1, 1.0, 1.0), (3, 0.0, 1.0), (3, 1.0, 0.0)])
def test_bad_arguments(n: int, rate: float, burstiness: float) -> None:
    with pytest.raises(ValueError):
        arrival_offsets(n, rate, burstiness=burstiness)
