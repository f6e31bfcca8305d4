"""Capacity search: the bisection logic against a fake measurement, and the per-level verdict."""

from __future__ import annotations

import asyncio
from typing import Literal

import pytest

from backends.loadgen import bisect, level_verdict
from backends.loadgen.capacity import CapacityResult
from specs.model import SloBound
from specs.records import LoadPointRecord

SLO = {"ttft_p90_ms": SloBound(max=100)}


def point(
    level: float, ttft: float | None = 50.0, *, completed: int = 10, failed: int = 0
) -> LoadPointRecord:
    sent = completed + failed
    return LoadPointRecord(
        load_kind="concurrency",
        load_value=level,
        metrics={
            "ttft_p90_ms": ttft,
            "completed": completed,
            "failed": failed,
            "error_rate": failed / sent if sent else None,
        },
    )


def search(
    limit: float,
    *,
    by: Literal["concurrency", "request_rate"] = "concurrency",
    low: float = 1,
    high: float = 256,
    max_steps: int = 20,
    tolerance: float = 0.01,
) -> tuple[CapacityResult, list[float]]:
    """Bisect against a server whose TTFT p90 crosses 100 ms just above ``limit``."""
    measured: list[float] = []

    async def measure(level: float) -> LoadPointRecord:
        measured.append(level)
        return point(level, 50.0 if level <= limit else 150.0)

    result = asyncio.run(
        bisect(
            measure,
            lambda p: level_verdict(p, SLO),
            by=by,
            low=low,
            high=high,
            max_steps=max_steps,
            tolerance=tolerance,
        )
    )
    return result, measured


@pytest.mark.parametrize("limit", [1, 2, 7, 37, 100, 255])
def test_finds_the_exact_integer_capacity(limit: int) -> None:
    result, measured = search(limit, tolerance=1e-4)  # only adjacent integers stop the search
    assert result.capacity == limit
    assert measured[:2] == [1, 256]
    assert all(float(x).is_integer() for x in measured)
    assert len(measured) == len(set(measured))  # no level measured twice
    # log-space bisection halves log(high/low) per step: log2(log2(256) / log2(256/255)) < 11
    assert len(measured) <= 2 + 11


def test_no_capacity_when_the_lowest_level_fails() -> None:
    result, measured = search(0.5)
    assert result.capacity is None and result.best is None
    assert measured == [1]
    assert "lowest" in result.summary


def test_capacity_at_least_high_when_high_passes() -> None:
    result, measured = search(1000)
    assert result.capacity == 256
    assert measured == [1, 256]
    assert "at least" in result.summary


def test_rate_search_stops_within_tolerance() -> None:
    result, _ = search(13.3, by="request_rate", low=1, high=64, tolerance=0.05)
    assert result.capacity is not None
    assert 13.3 / 1.05 <= result.capacity <= 13.3
    assert result.by == "request_rate"
    assert result.passed == [p.load_value <= 13.3 for p in result.points]


def test_max_steps_bounds_the_work() -> None:
    _, measured = search(37, max_steps=2)
    assert len(measured) == 4


def test_bad_range() -> None:
    with pytest.raises(ValueError, match="low < high"):
        search(5, low=8, high=8)


def test_verdict_passes_within_bounds() -> None:
    assert level_verdict(point(4, 99.0), SLO) == (True, [])


def test_verdict_names_the_violation() -> None:
    ok, why = level_verdict(point(4, 120.0), SLO)
    assert not ok
    assert why == ["ttft_p90_ms 120 > 100"]


def test_verdict_unmeasured_metric_is_a_violation() -> None:
    ok, why = level_verdict(point(4, None), SLO)
    assert not ok and "not measured" in why[0]


def test_verdict_without_successes_fails() -> None:
    ok, why = level_verdict(point(4, None, completed=0, failed=5), {})
    assert not ok
    assert "no request succeeded" in why


def test_verdict_allows_no_errors_without_an_error_rate_slo() -> None:
    ok, why = level_verdict(point(4, 50.0, completed=99, failed=1), SLO)
    assert not ok and why[0].startswith("error_rate 0.01")


def test_verdict_error_rate_slo_sets_the_allowance() -> None:
    slo = {**SLO, "error_rate": SloBound(max=0.02)}
    assert level_verdict(point(4, 50.0, completed=99, failed=1), slo)[0]
    assert not level_verdict(point(4, 50.0, completed=90, failed=10), slo)[0]


def test_verdict_ignores_soft_slos() -> None:
    slo = {"ttft_p90_ms": SloBound(max=100, hard=False)}
    assert level_verdict(point(4, 500.0), slo)[0]
