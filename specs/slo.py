"""SLO verdicts, the soft-SLO penalty, and how one experiment is summarized and scored.

Pure functions over metric dictionaries (names of :mod:`specs.metrics`), used by the study, the
reconciler and the report alike, so that every place agrees on what "within SLO" means.

* **Summary load point.** An experiment measures several load levels; its summary is the level
  with the highest ``output_throughput`` among those meeting every *hard* SLO. When none does,
  the experiment is infeasible and the summary is the level with the smallest hard violation
  (shown in reports, never ranked above a feasible one).
* **Hard SLOs** become Optuna constraints: one value per hard SLO, ``value / max - 1``; feasible
  when every value is ``<= 0``.
* **Soft SLOs** multiply a continuous penalty into each objective:
  ``P = 1 + sum(weight * max(0, value / max - 1))`` over soft SLOs; a maximized objective becomes
  ``raw / P`` and a minimized one ``raw * P``. ``P`` is 1 at the threshold and grows linearly with
  the violation, so there is no jump (the original system added ``weight * exp(r / 0.1)``, which
  jumped by ``weight`` at the threshold and ranked two 10% violations below a crash). Because
  ``P >= 1``, a violating run's score is never better than its raw value, so it can never rank
  above a compliant run whose raw metrics are better.
* A metric an SLO needs but the measurement lacks (``None``: e.g. no request succeeded) counts as
  a violation of 1.0 (100%).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from specs.errors import ObjectiveMissing, UserError
from specs.metrics import SLO_METRICS
from specs.model import Objective, SloBound
from specs.suggest import did_you_mean

Metrics = Mapping[str, float | None]
MISSING_VIOLATION = 1.0


@dataclass(frozen=True)
class SloVerdict:
    metric: str
    max: float
    value: float | None
    hard: bool
    weight: float

    @property
    def violation(self) -> float:
        """Relative violation ``value / max - 1`` when above the bound, else 0."""
        if self.value is None:
            return MISSING_VIOLATION
        return max(0.0, self.value / self.max - 1.0)

    @property
    def ok(self) -> bool:
        return self.value is not None and self.value <= self.max

    @property
    def margin(self) -> float | None:
        """Headroom as a fraction of the bound (positive = within SLO)."""
        return None if self.value is None else 1.0 - self.value / self.max

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "violation": self.violation, "margin": self.margin}


def evaluate(metrics: Metrics, slo: Mapping[str, SloBound]) -> list[SloVerdict]:
    return [SloVerdict(m, b.max, _num(metrics.get(m)), b.hard, b.weight) for m, b in slo.items()]


def hard_ok(verdicts: Sequence[SloVerdict]) -> bool:
    return all(v.ok for v in verdicts if v.hard)


def penalty_factor(verdicts: Sequence[SloVerdict]) -> float:
    return 1.0 + sum(v.weight * v.violation for v in verdicts if not v.hard)


def constraint_values(verdicts: Sequence[SloVerdict]) -> list[float]:
    """Optuna constraint values (``<= 0`` is feasible), one per hard SLO."""
    out = []
    for v in verdicts:
        if v.hard:
            out.append(MISSING_VIOLATION if v.value is None else v.value / v.max - 1.0)
    return out


def pick_summary(points: Sequence[Metrics], slo: Mapping[str, SloBound]) -> tuple[int | None, bool]:
    """Index of the summary load point and whether it meets every hard SLO."""
    if not points:
        return None, False
    scored = []
    for i, m in enumerate(points):
        verdicts = evaluate(m, slo)
        throughput = _num(m.get("output_throughput")) or 0.0
        hard_violation = sum(v.violation for v in verdicts if v.hard)
        completed = _num(m.get("completed")) or 0.0
        scored.append((i, hard_ok(verdicts) and completed > 0, throughput, hard_violation))
    feasible = [s for s in scored if s[1]]
    if feasible:
        best = max(feasible, key=lambda s: (s[2], -s[0]))
        return best[0], True
    best = min(scored, key=lambda s: (s[3], -s[2]))
    return best[0], False


def objective_values(
    metrics: Metrics, objectives: Sequence[Objective], verdicts: Sequence[SloVerdict]
) -> list[float]:
    """Penalized objective values in the order of ``objectives``."""
    factor = penalty_factor(verdicts)
    out = []
    for obj in objectives:
        raw = _num(metrics.get(obj.metric))
        if raw is None:
            raise ObjectiveMissing(f"objective metric {obj.metric} was not measured")
        out.append(raw / factor if obj.resolved_direction == "maximize" else raw * factor)
    return out


def raw_objective_values(metrics: Metrics, objectives: Sequence[Objective]) -> list[float | None]:
    return [_num(metrics.get(o.metric)) for o in objectives]


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if f == f else None  # NaN is "not measured"


def parse_slo_text(text: str | None) -> dict[str, SloBound]:
    """The command line's SLO grammar: ``"ttft_p90_ms<=500,error_rate<=0.01"`` -> SLO bounds (all
    hard). A :class:`~specs.errors.UserError` naming ``--slo`` for anything else."""
    slo: dict[str, SloBound] = {}
    if not text:
        return slo
    for part in text.split(","):
        item = part.strip()
        if not item:
            continue
        metric, sep, bound = item.partition("<=")
        metric = metric.strip()
        if not sep:
            raise UserError(f"--slo: {item!r} is not METRIC<=MAX (e.g. ttft_p90_ms<=500)")
        if metric not in SLO_METRICS:
            raise UserError(f"--slo: unknown SLO metric {metric!r}{did_you_mean(metric, SLO_METRICS)}")
        try:
            value = float(bound)
        except ValueError:
            raise UserError(f"--slo: bound of {metric} must be a number, got {bound.strip()!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise UserError(f"--slo: bound of {metric} must be > 0, got {bound.strip()!r}")
        slo[metric] = SloBound(max=value)
    return slo
