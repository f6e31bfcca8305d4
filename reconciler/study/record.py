"""An experiment's record from what its executor measured: SLO verdicts per load point, the
summary point, objectives and constraints — the one place a :class:`Measurement` becomes an
:class:`~specs.records.ExperimentRecord`.

A COMPLETE measurement that lacks an objective's metric is recorded FAILED (``not_measured``),
never with an invented value. A record reused from an earlier one is rebuilt from that record's
load points through the same path, so this spec's SLOs and objectives are applied to it afresh.
"""

from __future__ import annotations

import math
from typing import Any

from core.clock import now
from reconciler import __version__
from reconciler.study.contract import Measurement
from specs.model import TuningSpec
from specs.records import ExperimentRecord, FailureRecord, LoadPointRecord, ObjectiveRecord
from specs.slo import (
    ObjectiveMissing,
    SloVerdict,
    constraint_values,
    evaluate,
    hard_ok,
    objective_values,
    pick_summary,
)
from specs.space import Config


class RecordBuilder:
    """Builds the records of one spec generation's experiments (``id`` is given on writing)."""

    def __init__(self, spec: TuningSpec, workload_fingerprint: str, workload_info: dict[str, Any]) -> None:
        self.spec = spec
        self.generation = spec.generation()
        self.fingerprint = workload_fingerprint
        self.workload_info = workload_info

    def build(
        self,
        config: Config,
        m: Measurement,
        *,
        trial: int | None,
        baseline: bool,
        chash: str,
        reused_from: str | None = None,
    ) -> ExperimentRecord:
        body = self.spec.spec
        slo = body.slo
        points = [p.metrics for p in m.load_points]
        for p in m.load_points:
            verdicts = evaluate(p.metrics, slo)
            p.slo = [v.to_dict() for v in verdicts]
            p.feasible = hard_ok(verdicts) and bool(p.metrics.get("completed"))
        idx, feasible = pick_summary(points, slo)
        summary = dict(points[idx]) if idx is not None else {}
        verdicts = evaluate(summary, slo) if idx is not None else []
        state, failure, objectives = self._objectives(m, summary, verdicts)
        return ExperimentRecord(
            tool_version=__version__,
            id="pending",
            spec=self.spec.name,
            generation=self.generation,
            trial=trial,
            state=state,
            simulated=m.simulated,
            baseline=baseline,
            config=dict(config),
            config_hash=chash,
            engine_flags=m.engine_flags,
            command=m.command,
            engine={
                "name": body.engine.name,
                "version": body.engine.version,
                "image": m.image or body.engine.image,
                "variant": body.engine.variant,
            },
            backend={"kind": body.backend.kind},
            model=body.model.model_dump(mode="json", by_alias=True),
            gpu=m.gpu,
            workload={"fingerprint": self.fingerprint, **self.workload_info},
            load_points=m.load_points,
            summary_index=idx,
            feasible=feasible if state == "COMPLETE" else False,
            summary=summary,
            slo=[v.to_dict() for v in verdicts],
            objectives=objectives,
            constraints=constraint_values(verdicts) if state == "COMPLETE" else [],
            failure=failure,
            timings=m.timings,
            started_at=m.started_at,
            finished_at=m.finished_at or now(),
            reused_from=reused_from,
        )

    def _objectives(
        self, m: Measurement, summary: dict[str, Any], verdicts: list[SloVerdict]
    ) -> tuple[str, FailureRecord | None, list[ObjectiveRecord]]:
        """The state, failure and objectives of the record (see the module docstring)."""
        if m.state != "COMPLETE":
            return m.state, m.failure, []
        state, failure = m.state, m.failure
        body = self.spec.spec
        try:
            values = objective_values(summary, body.objectives, verdicts)
        except ObjectiveMissing as exc:
            state, failure = "FAILED", FailureRecord(kind="not_measured", reason=str(exc))
            values = [math.nan] * len(body.objectives)
        objectives = [
            ObjectiveRecord(
                metric=o.metric,
                direction=o.resolved_direction,
                raw=summary.get(o.metric),
                value=None if math.isnan(v) else v,
            )
            for o, v in zip(body.objectives, values, strict=True)
        ]
        return state, failure, objectives

    def reused(
        self, source: ExperimentRecord, config: Config, trial: int | None, baseline: bool
    ) -> ExperimentRecord:
        """This generation's record of ``config``, answered from ``source`` (measured before)."""
        m = Measurement(
            state=source.state if source.state != "PRUNED" else "FAILED",
            load_points=[LoadPointRecord.model_validate(p.model_dump()) for p in source.load_points],
            failure=source.failure,
            command=source.command,
            engine_flags=source.engine_flags,
            gpu=source.gpu,
            timings={},
            simulated=source.simulated,
            started_at=now(),
            finished_at=now(),
        )
        return self.build(
            config, m, trial=trial, baseline=baseline, chash=source.config_hash, reused_from=source.id
        )
