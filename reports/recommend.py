"""The recommendation: what to deploy, with the evidence for it.

The winner is :func:`specs.ranking.best` over the current generation — the same configuration
``best/`` and ``autotuner status`` name — with, for each SLO, how much headroom it kept at its
summary load point, and its improvement over the engine's default configuration when the study
measured that (``includeDefault``). A default configuration that broke an SLO or failed is still
the honest comparison point, so the page says so rather than hiding it.

The headline (:attr:`Recommendation.headline`) says by how much the winner beats the default and
what finding it cost (experiments, GPU-hours of measuring). When the winner was re-measured
(``search.confirmTop``) the spread of its measurements is shown, and an improvement no larger
than that spread is called what it is: not distinguishable from the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reports.values import Objective, name, percent, value
from specs.ranking import best, pareto_front
from specs.records import ExperimentRecord


@dataclass(frozen=True)
class Margin:
    metric: str
    bound: float
    value: float | None
    hard: bool
    #: headroom as a fraction of the bound (positive = within SLO)
    margin: float | None

    @property
    def ok(self) -> bool:
        return self.value is not None and self.value <= self.bound


@dataclass(frozen=True)
class Gain:
    objective: Objective
    best: float | None
    baseline: float | None
    #: relative improvement over the baseline, positive = better; None when not comparable
    gain: float | None


@dataclass(frozen=True)
class Recommendation:
    record: ExperimentRecord
    objectives: list[Objective]
    margins: list[Margin]
    baseline: ExperimentRecord | None
    gains: list[Gain]
    #: why the comparison with the default configuration is qualified, if it is
    baseline_note: str | None
    #: the Pareto set when there are several objectives (the record is its first member)
    pareto: list[ExperimentRecord]
    load_kind: str | None
    load_value: float | None
    #: relative spread (max - min over the mean) of the winner's first objective over its
    #: measurement and its re-measurements; None when it was measured once
    spread: float | None = None
    #: what finding it cost: experiments of this generation, GPU-hours of measuring
    experiments: int = 0
    gpu_hours: float = 0.0

    @property
    def headline(self) -> str | None:
        """``Beats the engine default by 18.7% on output throughput per GPU (spread 1.2%), found in
        12 experiments (0.05 GPU-hours)``; None without a comparable default."""
        g = self.gains[0] if self.gains else None
        cost = f"{self.experiments} experiments ({self.gpu_hours:.2g} GPU-hours)"
        if g is None or g.gain is None:
            return None
        spread = f" (spread of its re-measurements {percent(self.spread)})" if self.spread is not None else ""
        if self.spread is not None and abs(g.gain) <= self.spread:
            return (
                f"Within measurement spread of the engine default on {name(g.objective.metric)}: "
                f"{percent(g.gain, signed=True)}{spread}, after {cost}"
            )
        if g.gain > 0:
            return (
                f"Beats the engine default by {percent(g.gain)} on {name(g.objective.metric)}{spread}, "
                f"found in {cost}"
            )
        return None

    @property
    def baseline_breaks_slo(self) -> bool:
        return self.baseline is not None and any(not m.ok for m in margins(self.baseline))


def margins(record: ExperimentRecord) -> list[Margin]:
    out = []
    for v in record.slo:
        bound = v.get("max")
        metric = v.get("metric")
        if not isinstance(metric, str) or not isinstance(bound, int | float) or bound <= 0:
            continue
        measured = v.get("value")
        measured = (
            float(measured) if isinstance(measured, int | float) and not isinstance(measured, bool) else None
        )
        margin = None if measured is None else 1.0 - measured / float(bound)
        out.append(Margin(metric, float(bound), measured, bool(v.get("hard", True)), margin))
    return out


def baseline_of(records: Sequence[ExperimentRecord]) -> ExperimentRecord | None:
    """The newest measurement of the engine's default configuration."""
    return next((r for r in reversed(records) if r.baseline), None)


def recommend(records: Sequence[ExperimentRecord], objectives: Sequence[Objective]) -> Recommendation | None:
    """The recommendation among ``records`` (one generation), or None when nothing qualifies."""
    top = best(records)
    if top is None:
        return None
    base = baseline_of(records)
    note = None
    if base is None:
        note = (
            "The engine's default configuration was not measured in this study "
            "(search.includeDefault is off)."
        )
    elif base.state != "COMPLETE":
        reason = base.failure.reason if base.failure else base.state.lower()
        note = f"The engine's default configuration failed ({reason}), so there is no number to compare with."
    elif not base.feasible:
        note = "The engine's default configuration broke a hard SLO at every load level measured."
    elif broken := [m for m in margins(base) if not m.ok]:
        words = ", ".join(f"{name(m.metric)} by {percent(-(m.margin or 0))}" for m in broken)
        note = (
            f"The engine's default configuration breaks the soft SLO on {words}: "
            "its raw numbers can be higher, "
            "but its score is penalized for that."
        )
    gains = []
    for o in objectives:
        b = value(top, o.metric)
        d = value(base, o.metric) if base is not None and base.state == "COMPLETE" else None
        g = o.gain(b, d) if b is not None and d is not None else None
        gains.append(Gain(o, b, d, g))
    idx = top.summary_index
    point = top.load_points[idx] if idx is not None and 0 <= idx < len(top.load_points) else None
    measured = [top, *(r for r in records if r.confirms == top.id and r.state == "COMPLETE")]
    raws: list[float] = [
        float(v) for r in measured if r.objectives and (v := r.objectives[0].raw) is not None
    ]
    spread = None
    mean = sum(raws) / len(raws) if raws else 0.0
    if len(raws) > 1 and mean:
        spread = (max(raws) - min(raws)) / abs(mean)
    seconds = 0.0
    for r in records:
        took = r.timings.get("total_s", r.timings.get("replayed_s", 0.0))
        seconds += float(took) * max(1, r.gpu.count)
    return Recommendation(
        record=top,
        objectives=list(objectives),
        margins=margins(top),
        baseline=base,
        gains=gains,
        baseline_note=note,
        pareto=pareto_front(records) if len(objectives) > 1 else [top],
        load_kind=point.load_kind if point else None,
        load_value=point.load_value if point else None,
        spread=spread,
        experiments=sum(r.confirms is None for r in records),
        gpu_hours=seconds / 3600,
    )
