"""The level gate, asked by the executor after each load level of an experiment.

It stops the levels of a configuration once it misses a hard SLO (latency only grows with load),
and prunes one whose optimistic bound is already below the incumbent (recorded ``PRUNED``, the
evidence in its reason). ``search.pruning: false`` turns both off.

Both decisions assume what holds for an engine under a closed or open loop: latency does not
fall as load rises, and throughput grows at most in proportion to load. Stopping only drops
levels that would miss the SLO anyway, so the experiment's summary is unchanged; pruning
compares an optimistic bound (never the value measured so far) with the incumbent, so a
configuration that could still win is not pruned.

The gate is called from the executors' threads while the study's thread updates the incumbent;
the incumbent is one tuple, replaced whole, so a reader sees either the old one or the new one.
"""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.study.contract import GateVerdict
from specs.model import Objective, TuningSpec
from specs.ranking import rankable
from specs.records import ExperimentRecord, LoadPointRecord
from specs.slo import evaluate, hard_ok
from specs.space import Config

#: pruning needs the optimistic bound this much below the incumbent (measurement noise)
PRUNE_MARGIN = 0.05


class Gate:
    """The level gate of one study (a :data:`~reconciler.study.contract.LevelGate`)."""

    def __init__(self, spec: TuningSpec) -> None:
        self.spec = spec
        #: (objective value, record id) of the best feasible experiment so far
        self.incumbent: tuple[float, str] | None = None

    def update(self, records: Sequence[ExperimentRecord]) -> None:
        """Take the best of ``records`` as the incumbent where it beats the one held."""
        for r in rankable(records):
            value = r.objectives[0].value
            if value is None:
                continue
            better = (
                self.incumbent is None
                or (r.objectives[0].direction == "maximize" and value > self.incumbent[0])
                or (r.objectives[0].direction == "minimize" and value < self.incumbent[0])
            )
            if better:
                self.incumbent = (float(value), r.id)

    def __call__(
        self, config: Config, points: list[LoadPointRecord], remaining: list[float]
    ) -> GateVerdict | None:
        if not points or not remaining or not self.spec.spec.search.pruning:
            return None
        last = points[-1]
        if any(level <= last.load_value for level in remaining):
            return None  # levels not in rising order: nothing follows from monotonicity
        missed = [v.metric for v in evaluate(last.metrics, self.spec.spec.slo) if v.hard and not v.ok]
        if missed:
            return GateVerdict(
                "stop",
                f"levels stopped after {last.load_kind}={last.load_value:g}: it misses the hard SLO on "
                f"{', '.join(missed)}, and latency only grows with load, so the {len(remaining)} higher "
                "level(s) were not run",
            )
        incumbent = self.incumbent
        objectives = self.spec.spec.objectives
        if incumbent is None or len(objectives) != 1:
            return None
        return self._prune(objectives[0], incumbent, points, max(remaining))

    def _prune(
        self, obj: Objective, incumbent: tuple[float, str], points: list[LoadPointRecord], top: float
    ) -> GateVerdict | None:
        value, source = incumbent
        last = points[-1]
        kind, here = last.load_kind, last.load_value
        feasible = [p for p in points if hard_ok(evaluate(p.metrics, self.spec.spec.slo))]
        raws = [float(r) for p in feasible if (r := p.metrics.get(obj.metric)) is not None]
        now_raw = last.metrics.get(obj.metric)
        if now_raw is None or not raws:
            return None
        if obj.resolved_direction == "maximize" and (
            "throughput" in obj.metric or obj.metric.startswith("goodput")
        ):
            bound = max(*raws, float(now_raw) * top / here)
            if bound * (1 + PRUNE_MARGIN) < value:
                return GateVerdict(
                    "prune",
                    f"pruned after {kind}={here:g}: {obj.metric} {float(now_raw):.4g} there; even growing in "
                    f"proportion to load up to {kind}={top:g} it reaches at most {bound:.4g}, below the "
                    f"incumbent's {value:.4g} (experiment {source})",
                )
        elif obj.resolved_direction == "minimize" and obj.metric.endswith("_ms"):
            bound = min(raws)
            if bound > value * (1 + PRUNE_MARGIN):
                return GateVerdict(
                    "prune",
                    f"pruned after {kind}={here:g}: {obj.metric} is at least {bound:.4g} at every load it "
                    f"meets the SLOs at, and only grows with load, above the incumbent's {value:.4g} "
                    f"(experiment {source})",
                )
        return None
