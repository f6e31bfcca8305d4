"""Measure the load levels of one experiment against an engine that is up: the warm-up, then
every level, into the experiment's :class:`~reconciler.study.contract.Measurement`.

**One loop over load levels.** Fixed levels and capacity search are both a
:class:`~backends.loadgen.capacity.LevelPlan` that the same loop drives, so every level gets the
same hooks: the cancel check, a fresh share of the experiment's time budget, the engine's cache
reset, fresh prompts (:class:`~backends.workloads.selection.PromptDeal`), the liveness check
after it, and the ``on_level`` callback, which may stop the loop (a hard SLO already violated,
a configuration clearly worse than the best so far: :class:`StopLevels`).

**Repeats.** With ``repeats`` above 1 each level is measured that many times, each time with the
cache reset and fresh prompts, and recorded as one point (:func:`combine_repeats`).

**The engine's time.** The sim engine runs ``time-scale`` times faster than the hardware it
models; the load generator is told the scale and computes every metric and SLO verdict in the
engine's time (:mod:`backends.loadgen.aggregate`), with the wall-clock numbers kept beside them
(``LoadPointRecord.wall_metrics``). Request rates in the spec are in the engine's time too.

Engine trouble is raised as :class:`~backends.deploy.base.EngineFailure` (the runner records it);
a shutdown as :class:`~backends.deploy.base.DeployCancelled`.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from backends.deploy.base import DeployCancelled, Deployment, EngineFailure
from backends.loadgen import LoadOptions, TargetConfig, level_verdict, run_load_point, run_sync
from backends.loadgen.capacity import Bisection, FixedLevels, LevelPlan
from backends.workloads import RequestSpec
from backends.workloads.selection import PromptDeal
from core.faults import crash_point
from reconciler.study.contract import Measurement, Progress
from specs.model import LoadSpec, SpecBody
from specs.records import FailureRecord, LoadPointRecord
from specs.space import Config

log = logging.getLogger(__name__)

#: a load point where more than this fraction of requests failed counts as failed
ERROR_RATE_LIMIT = 0.5

LoadKind = Literal["concurrency", "request_rate"]


def _point(p: LoadPointRecord, notes: Sequence[str] = ()) -> LoadPointRecord:
    return p.model_copy(update={"notes": [*p.notes, *notes]})


def combine_repeats(points: Sequence[LoadPointRecord]) -> LoadPointRecord:
    """Several measurements of one load point as one: every metric the median of the repeats,
    ``spread`` its min/median/max, errors summed. The median keeps a single disturbed
    repeat from moving the result; the spread shows how much the repeats disagreed."""
    if len(points) == 1:
        return points[0]
    first = points[0]
    metrics: dict[str, float | None] = {}
    spread: dict[str, dict[str, float]] = {}
    for name in first.metrics:
        values = sorted(v for p in points if (v := p.metrics.get(name)) is not None)
        if not values:
            metrics[name] = None
            continue
        mid = statistics.median(values)
        metrics[name] = mid
        spread[name] = {"min": values[0], "median": mid, "max": values[-1]}
    notes = list(dict.fromkeys(n for p in points for n in p.notes))
    notes.append(f"{len(points)} repeats: each metric is their median (spread: min/median/max)")
    wall: list[dict[str, float | None]] = [w for p in points if (w := p.wall_metrics)]
    return LoadPointRecord(
        load_kind=first.load_kind,
        load_value=first.load_value,
        metrics=metrics,
        source=first.source,
        notes=notes,
        errors=dict(sorted(_error_counts(points).items())),
        wall_metrics={
            k: statistics.median(vs) if (vs := [v for w in wall if (v := w.get(k)) is not None]) else None
            for k in (wall[0] if wall else {})
        },
        spread=spread,
        measured={**first.measured, "repeats": len(points)},
        extra=dict(first.extra),
    )


def _error_counts(points: Sequence[LoadPointRecord]) -> dict[str, int]:
    """Request errors by kind, summed over ``points``."""
    kinds: dict[str, int] = {}
    for p in points:
        for k, v in p.errors.items():
            kinds[k] = kinds.get(k, 0) + v
    return kinds


@dataclass(frozen=True)
class LevelOutcome:
    """What the ``on_level`` callback sees after each load level of an experiment."""

    config: Config
    #: 0 for the first level measured in this experiment
    index: int
    #: the level just measured (metrics in the engine's time, SLO verdicts not yet attached)
    point: LoadPointRecord
    #: it meets every hard SLO (:func:`backends.loadgen.capacity.level_verdict`) and why not
    passed: bool
    reasons: tuple[str, ...]
    #: every level measured so far in this experiment, this one last
    points: tuple[LoadPointRecord, ...]
    #: the fixed levels still to measure (empty in a capacity search, whose next level depends
    #: on this one)
    remaining: tuple[float, ...] = ()


@dataclass(frozen=True)
class StopLevels:
    """``on_level``'s answer to end the experiment's level loop now: the levels measured so far
    are kept; with ``prune`` the experiment is recorded as PRUNED (clearly worse than what the
    study already has) instead of COMPLETE."""

    reason: str
    prune: bool = False


#: called after every load level; return :class:`StopLevels` to measure no further level
LevelHook = Callable[[LevelOutcome], StopLevels | None]


def level_plan(load: LoadSpec) -> tuple[LoadKind, LevelPlan]:
    """The spec's load as a plan of levels: a capacity search, or its fixed levels in order."""
    if load.capacity is not None:
        cap = load.capacity
        kind: LoadKind = "concurrency" if cap.by == "concurrency" else "request_rate"
        return kind, Bisection(
            by=kind, low=cap.low, high=cap.high, max_steps=cap.max_steps, tolerance=cap.tolerance
        )
    if load.concurrency is not None:
        return "concurrency", FixedLevels([float(c) for c in load.concurrency])
    return "request_rate", FixedLevels([float(r) for r in (load.request_rate or [])])


@dataclass
class LevelRun:
    """The load levels of one experiment, measured into ``m`` by :meth:`run`."""

    body: SpecBody
    requests: Sequence[RequestSpec]
    config: Config
    #: where the engine listens (``deployment.base_url`` once it is ready) and its model name
    base_url: str
    model: str | None
    deployment: Deployment
    cancel: threading.Event
    #: ``time.monotonic()`` by which the whole experiment must be done (``experimentTimeout``)
    deadline: float
    gpus: int
    time_scale: float
    reset_path: str | None
    progress: Progress
    on_level: LevelHook | None

    def __post_init__(self) -> None:
        wl = self.body.workload
        self.target = TargetConfig(
            base_url=self.base_url, model=self.model, api=wl.api, ignore_eos=wl.ignore_eos
        )
        self.deal = PromptDeal(self.requests, seed=wl.seed)
        self.options = LoadOptions(
            burstiness=wl.load.burstiness,
            seed=wl.seed,
            gpus=self.gpus,
            slo=self.body.slo,
            timeout_s=wl.request_timeout,
            time_scale=self.time_scale,
            workers=wl.workers,
        )

    def run(self, m: Measurement) -> None:
        self._warm_up()
        kind, plan = level_plan(self.body.workload.load)
        points: list[LoadPointRecord] = []
        while (value := plan.next_level()) is not None:
            if self.cancel.is_set():
                raise DeployCancelled("cancelled between load points")
            self.progress("load_point", {"kind": kind, "value": value})
            point, record = self._level(kind, value)
            points.append(point)
            crash_point("load_point_done")
            m.load_points.append(record)
            if not self.deployment.alive():
                raise self.deployment.failure(
                    "crashed", f"the engine died during the load point {kind}={value:g}"
                )
            passed, reasons = level_verdict(point, self.body.slo)
            plan.record(point, passed, reasons)
            if self._stopped(m, plan, record, passed, reasons):
                break
        if isinstance(plan, Bisection) and plan.result.summary:
            m.load_points[-1].notes.append(f"capacity search: {plan.result.summary}")
        self._check(points)

    def _remaining(self) -> float | None:
        """This level's share of the time budget, computed afresh before every level."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise EngineFailure(
                "timeout",
                f"the experiment ran past experimentTimeout ({self.body.search.experiment_timeout:g}s)",
            )
        cap = self.body.workload.max_duration_per_level
        return min(left, cap) if cap is not None else left

    def _reset_cache(self) -> None:
        if self.reset_path:
            _post(self.base_url + self.reset_path)

    def _warm_up(self) -> None:
        wl = self.body.workload
        if not wl.warmup_requests:
            return
        warmup, _ = self.deal.take(wl.warmup_requests)
        # no SLOs, one process: the warm-up is not measured
        warm = dataclasses.replace(self.options, slo={}, workers=1, max_duration_s=self._remaining())
        run_sync(run_load_point(self.target, warmup, concurrency=min(4, len(warmup)), options=warm))

    def _level(self, kind: LoadKind, value: float) -> tuple[LoadPointRecord, LoadPointRecord]:
        """One level, measured ``repeats`` times: the combined point and its record."""
        wl = self.body.workload
        repeats: list[LoadPointRecord] = []
        notes: list[str] = []
        for _ in range(wl.repeats):
            # the warm-up's and earlier levels' prompts are out of the cache and out of the list
            self._reset_cache()
            requests, note = self.deal.take(wl.requests_per_level)
            if note:
                notes.append(note)
            repeats.append(
                run_sync(
                    run_load_point(
                        self.target,
                        requests,
                        concurrency=int(value) if kind == "concurrency" else None,
                        request_rate=value if kind == "request_rate" else None,
                        options=dataclasses.replace(self.options, max_duration_s=self._remaining()),
                    )
                )
            )
            if self.cancel.is_set():
                raise DeployCancelled("cancelled during a load point")
        point = combine_repeats(repeats)
        return point, _point(point, list(dict.fromkeys(notes)))

    def _stopped(
        self, m: Measurement, plan: LevelPlan, record: LoadPointRecord, passed: bool, reasons: list[str]
    ) -> bool:
        """Ask ``on_level`` whether to go on; a stop is noted on the level, a prune on ``m``."""
        if self.on_level is None:
            return False
        decision = self.on_level(
            LevelOutcome(
                config=self.config,
                index=len(m.load_points) - 1,
                point=record,
                passed=passed,
                reasons=tuple(reasons),
                points=tuple(m.load_points),
                remaining=plan.remaining() if isinstance(plan, FixedLevels) else (),
            )
        )
        if decision is None:
            return False
        record.notes.append(f"no further load levels: {decision.reason}")
        if decision.prune:
            m.state = "PRUNED"
            m.failure = FailureRecord(kind="pruned", reason=decision.reason)
        return True

    def _check(self, points: Sequence[LoadPointRecord]) -> None:
        """After the last level: the engine still up, and not every level mostly errors."""
        if not self.deployment.alive():
            raise self.deployment.failure("crashed", "the engine died during the benchmark")
        rates = [p.metrics.get("error_rate") for p in points]
        if points and all(r is not None and r > ERROR_RATE_LIMIT for r in rates):
            kinds = _error_counts(points)
            top = ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:3])
            raise self.deployment.failure(
                "benchmark_errors",
                f"more than {ERROR_RATE_LIMIT:.0%} of requests failed at every load level ({top})",
            )


def _post(url: str, timeout: float = 10.0) -> None:
    """Best-effort POST (prefix-cache reset); an engine without the endpoint is not an error."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="POST", data=b""), timeout=timeout):
            pass
    except (urllib.error.URLError, OSError) as exc:
        log.debug("cache reset %s failed: %s", url, exc)
