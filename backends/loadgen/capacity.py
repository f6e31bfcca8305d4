"""Capacity mode: the highest load that still meets the SLOs, found by bisection.

One experiment should answer "how much can this configuration serve within SLO" without the
user guessing load levels. We measure ``low`` and ``high`` first; if ``low`` already fails there
is no capacity, if ``high`` passes the capacity is at least ``high``. Otherwise we bisect in
*log space* (the geometric mean of the bounds), because load effects are multiplicative: the
difference between 4 and 8 streams matters as much as between 128 and 256. Concurrency levels
are integers; we stop when ``high / low - 1 <= tolerance``, when the bounds are adjacent
integers, or after ``max_steps`` levels between the two ends. Bisection assumes that passing is
monotone in load, which holds for a server that is not being disturbed.

A level passes when it has successful requests, every *hard* SLO metric is within its bound,
and the error rate is within the ``error_rate`` SLO (all judged by :func:`specs.slo.evaluate`,
like everywhere else). Without an ``error_rate`` SLO the allowed error rate is 0: a level that
drops requests is over capacity, whatever the latencies of the requests that got through say
(those are computed from successes only).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from backends.loadgen.options import DEFAULT_OPTIONS, LoadOptions
from backends.loadgen.runner import Progress, run_load_point
from backends.loadgen.target import PromptLike, TargetConfig, fetch_model
from specs.model import SloBound
from specs.records import LoadPointRecord
from specs.slo import evaluate

#: allowed error rate when the SLOs do not bound ``error_rate``
DEFAULT_MAX_ERROR_RATE = 0.0


def level_verdict(point: LoadPointRecord, slo: Mapping[str, SloBound]) -> tuple[bool, list[str]]:
    """Does this load point meet every hard SLO? Returns (passes, reasons it does not).

    The SLO comparison is :func:`specs.slo.evaluate`, the one the study and the report use, so a
    metric the level could not measure counts as a violation there and here alike.
    """
    m = point.metrics
    reasons: list[str] = []
    if not m.get("completed"):
        reasons.append("no request succeeded")
    if "error_rate" not in slo:
        err = m.get("error_rate")
        if err is not None and err > DEFAULT_MAX_ERROR_RATE:
            reasons.append(f"error_rate {err:.3g} > {DEFAULT_MAX_ERROR_RATE:g} (no error_rate SLO given)")
    for v in evaluate(m, slo):
        if v.hard and not v.ok:
            shown = "not measured" if v.value is None else f"{v.value:.4g}"
            reasons.append(f"{v.metric} {shown} > {v.max:g}")
    return (not reasons, reasons)


@dataclass
class CapacityResult:
    """Every level measured (in order), and the best one that passed."""

    by: Literal["concurrency", "request_rate"]
    points: list[LoadPointRecord]
    passed: list[bool]
    best: LoadPointRecord | None
    #: why the search ended, for people
    summary: str
    reasons: list[list[str]] = field(default_factory=list)

    @property
    def capacity(self) -> float | None:
        return self.best.load_value if self.best is not None else None


def _next_level(low: float, high: float, integer: bool) -> float | None:
    mid = math.sqrt(low * high)
    if integer:
        mid = float(round(mid))
        if mid <= low:
            mid = low + 1
        if mid >= high:
            return None
    return mid


class LevelPlan(Protocol):
    """Which load level to measure next, given the verdicts so far: the one interface the
    experiment runner's per-level loop drives, for fixed levels and capacity search alike, so
    that both get the same per-level hooks (cancel, liveness, cache reset, budget)."""

    def next_level(self) -> float | None:
        """The next level to measure, or None when the plan is done."""
        ...

    def record(self, point: LoadPointRecord, ok: bool, reasons: list[str]) -> None:
        """The measured point at the level :meth:`next_level` gave, and its verdict."""
        ...


class FixedLevels:
    """The spec's list of levels, in order, whatever their verdicts."""

    def __init__(self, levels: Sequence[float]) -> None:
        self._levels = list(levels)
        self._i = 0

    def next_level(self) -> float | None:
        return self._levels[self._i] if self._i < len(self._levels) else None

    def remaining(self) -> tuple[float, ...]:
        """The levels not measured yet (after :meth:`record` of the current one: those after it)."""
        return tuple(self._levels[self._i :])

    def record(self, point: LoadPointRecord, ok: bool, reasons: list[str]) -> None:
        self._i += 1


class Bisection:
    """Capacity search as a step-by-step plan (see the module docstring): ``low``, then
    ``high``, then log-space bisection; :attr:`result` holds what was measured."""

    def __init__(
        self,
        *,
        by: Literal["concurrency", "request_rate"],
        low: float,
        high: float,
        max_steps: int = 6,
        tolerance: float = 0.1,
    ) -> None:
        self.integer = by == "concurrency"
        if self.integer:
            low, high = float(max(1, math.ceil(low))), float(math.floor(high))
        if not 0 < low < high:
            raise ValueError(f"capacity search needs 0 < low < high, got low={low:g}, high={high:g}")
        self.low, self.high = low, high
        self.max_steps = max_steps
        self.tolerance = tolerance
        self.steps = 0
        self.result = CapacityResult(by=by, points=[], passed=[], best=None, summary="")
        self._pending: float | None = low
        self._phase = "low"

    def next_level(self) -> float | None:
        return self._pending

    def record(self, point: LoadPointRecord, ok: bool, reasons: list[str]) -> None:
        res = self.result
        res.points.append(point)
        res.passed.append(ok)
        res.reasons.append(reasons)
        if ok and (res.best is None or point.load_value > res.best.load_value):
            res.best = point
        level = self._pending
        assert level is not None, "record() after the plan ended"
        if self._phase == "low":
            if not ok:
                return self._end(f"even the lowest level ({level:g}) misses the SLOs: no capacity within SLO")
            self._phase, self._pending = "high", self.high
            return None
        if self._phase == "high":
            if ok:
                return self._end(
                    f"the highest level ({level:g}) meets the SLOs: capacity is at least {level:g}"
                )
            self._phase = "bisect"
        else:
            if ok:
                self.low = level
            else:
                self.high = level
        if self.steps >= self.max_steps or self.high / self.low - 1 <= self.tolerance:
            return self._end_bisection()
        mid = _next_level(self.low, self.high, self.integer)
        if mid is None:
            return self._end_bisection()
        self.steps += 1
        self._pending = mid
        return None

    def _end_bisection(self) -> None:
        self._end(
            f"capacity {self.low:g} (meets the SLOs), {self.high:g} does not; {self.steps} bisection steps"
        )

    def _end(self, summary: str) -> None:
        self.result.summary = summary
        self._pending = None


async def bisect(
    measure: Callable[[float], Awaitable[LoadPointRecord]],
    verdict: Callable[[LoadPointRecord], tuple[bool, list[str]]],
    *,
    by: Literal["concurrency", "request_rate"],
    low: float,
    high: float,
    max_steps: int = 6,
    tolerance: float = 0.1,
    on_point: Callable[[LoadPointRecord, bool, list[str]], None] | None = None,
) -> CapacityResult:
    """The search itself, independent of how a level is measured (tested with a fake ``measure``)."""
    plan = Bisection(by=by, low=low, high=high, max_steps=max_steps, tolerance=tolerance)
    while (level := plan.next_level()) is not None:
        point = await measure(level)
        ok, why = verdict(point)
        plan.record(point, ok, why)
        if on_point is not None:
            on_point(point, ok, why)
    return plan.result


async def find_capacity(
    target: TargetConfig,
    requests: Sequence[PromptLike],
    *,
    by: Literal["concurrency", "rate", "request_rate"] = "concurrency",
    low: float = 1,
    high: float = 256,
    max_steps: int = 6,
    tolerance: float = 0.1,
    options: LoadOptions = DEFAULT_OPTIONS,
    progress: Callable[[float], Progress | None] | None = None,
    on_point: Callable[[LoadPointRecord, bool, list[str]], None] | None = None,
) -> CapacityResult:
    """Bisect over concurrency or request rate for the highest level within the hard SLOs of
    ``options.slo``; every level is measured with ``options``.

    ``progress(level)`` may return a per-request progress callback for that level.
    """
    kind: Literal["concurrency", "request_rate"] = "concurrency" if by == "concurrency" else "request_rate"
    if target.model is None:  # ask once, not at every level
        model = await fetch_model(target, timeout_s=min(options.timeout_s, 30.0))
        target = dataclasses.replace(target, model=model)

    async def measure(level: float) -> LoadPointRecord:
        return await run_load_point(
            target,
            requests,
            concurrency=int(level) if kind == "concurrency" else None,
            request_rate=level if kind == "request_rate" else None,
            options=options,
            progress=progress(level) if progress is not None else None,
        )

    return await bisect(
        measure,
        lambda point: level_verdict(point, options.slo),
        by=kind,
        low=low,
        high=high,
        max_steps=max_steps,
        tolerance=tolerance,
        on_point=on_point,
    )
