"""The study's executor for ``engine: replay``: each experiment answered from a table, at once.

No engine process, no lease, no load generator and no waiting: the table's rows for the
configuration become the load points, level by level in the spec's order, and the study's level
gate (:meth:`reconciler.study.Study.level_gate`) sees them one at a time exactly as it sees a real
engine's, so that stopping levels after a hard-SLO violation and early pruning behave the same on
recorded data as on a GPU. ``timings`` carry the seconds the table says the measurement took
(``duration_s`` per level), which is what the benchmark counts GPU time with.
"""

from __future__ import annotations

import threading

from backends.engines.replay import fixed_params, spec_levels
from backends.engines.replay_table import Answer, ReplayTable, canon
from core.clock import now
from reconciler.study.contract import LevelGate, Measurement
from specs.model import Scalar, TuningSpec
from specs.records import FailureRecord, GpuRecord, LoadPointRecord
from specs.space import Config, axes


class ReplayExecutor:
    """See the module docstring; :attr:`level_gate` is set by whoever builds the study."""

    def __init__(self, spec: TuningSpec, table: ReplayTable, *, level_gate: LevelGate | None = None) -> None:
        self.spec = spec
        self.table = table
        self.level_gate = level_gate
        self.kind, self.levels = spec_levels(spec)
        self.fixed = fixed_params(spec)
        gpus = spec.spec.engine.args.get("gpus", 1)
        self.gpus = gpus if isinstance(gpus, int) and not isinstance(gpus, bool) else 1
        gpu = spec.spec.engine.args.get("gpu")
        self.gpu_name = f"{str(gpu).upper()} (replayed)" if gpu else "replayed"

    def default_config(self) -> Config | None:
        """The default rows' values of the spec's axes, when the table marks a default."""
        params = self.table.default_params()
        if params is None:
            return None
        names = [a.name for a in axes(self.spec)]
        if any(n not in params for n in names):
            return None
        if any(canon(params.get(k)) != canon(v) for k, v in self.fixed.items()):
            return None  # engine.args fix a column away from the default: the default is not in this space
        return {n: params[n] for n in names}

    def answer(self, config: Config, *, baseline: bool) -> Answer:
        if baseline and not config:
            return self.table.lookup_default(self.levels)
        wanted: dict[str, Scalar] = {**self.fixed, **config}
        return self.table.lookup(wanted, self.levels)

    def __call__(self, config: Config, *, baseline: bool, cancel: threading.Event) -> Measurement:
        started = now()
        ans = self.answer(config, baseline=baseline)
        flags = {**self.fixed, **config}
        m = Measurement(
            state="COMPLETE",
            command=["replay", self.table.source, *[f"--{k}={v}" for k, v in sorted(flags.items())]],
            engine_flags=flags,
            gpu=GpuRecord(model=self.gpu_name, count=self.gpus),
            simulated=True,
            started_at=started,
        )
        if ans.state != "COMPLETE":
            m.state = "FAILED"
            kind = ans.failure_kind if ans.state == "FAILED" else "not_measured"
            m.failure = FailureRecord(kind=kind or "startup_crash", reason=ans.failure_reason or "failed")
            m.finished_at = now()
            return m
        seconds = 0.0
        for i, row in enumerate(ans.points):
            metrics = dict(row.metrics)
            notes = [f"replayed from {row.where}"]
            if metrics.get("completed") is None:
                # a table without request counts: its rows are measurements that completed
                metrics["completed"] = float(self.spec.spec.workload.requests_per_level)
                notes.append("the table has no 'completed' count: requestsPerLevel assumed")
            per_gpu = metrics.get("output_throughput_per_gpu")
            if metrics.get("output_throughput") is None and per_gpu is not None:
                # the summary level is picked by output_throughput
                metrics["output_throughput"] = per_gpu * self.gpus
            point = LoadPointRecord(
                load_kind=self.kind,
                load_value=float(row.load_value or 0.0),
                metrics=metrics,
                source="replay",
                notes=notes,
            )
            m.load_points.append(point)
            seconds += float(row.metrics.get("duration_s") or 0.0)
            if self.level_gate is not None:
                verdict = self.level_gate(config, m.load_points, self.levels[i + 1 :])
                if verdict is not None:
                    if verdict.action == "prune":
                        m.state = "PRUNED"
                        m.failure = FailureRecord(kind="pruned", reason=verdict.reason)
                    else:
                        point.notes.append(verdict.reason)
                    break
        m.timings = {"replayed_s": round(seconds, 3)}
        m.finished_at = now()
        return m
