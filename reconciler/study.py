"""One spec generation's Optuna study: ask, run, record, tell — resumable after any crash.

Checkpoint design (after kopf's progress records and Optuna's journal storage):

* ``study.journal`` (``JournalFileBackend``) holds the Optuna study; each generation has its own
  study name, so an edited spec starts fresh while old experiments stay.
* ``experiments/NNNN.json`` is the truth about what was measured. A record is written (atomically)
  *before* the trial is told to Optuna. On restart, a trial left RUNNING is either told from its
  record (the crash hit between the write and the tell) or failed and its parameters re-queued
  (the crash hit mid-experiment), so a completed experiment is never lost nor re-run, and at
  most the in-flight ones run again.
* Failed experiments are never told as an invented score (the original system told ``-inf``,
  which became the "best" trial of a maximize study), nor as ``FAIL``, which TPE and NSGA-II drop
  from their history, so that they proposed failing configurations *more* often than random
  search. A configuration failure (:func:`specs.records.failure_side`) is told as ``PRUNED`` with
  a large constraint violation: TPE keeps it in its "bad" group, so the region is learned as
  infeasible. Configurations skipped by a constraint, an engine rule or the memory pre-check are
  told the same way. Environment and transient failures say nothing about the configuration and
  are told as ``FAIL``. Hard SLOs are Optuna constraints; soft SLOs are a continuous penalty
  (:mod:`specs.slo`).
* The baseline is the engine's default configuration *in the space's terms* when the engine
  knows its defaults (``default_config``): it is enqueued as the first trial, told like any other,
  and a grid point equal to it is the same configuration. Only when the defaults are unknown is
  it measured as ``{}`` and kept out of the sampler.
* A configuration proposed again within a generation is answered from its record and its trial
  told ``FAIL``, which samplers ignore, so no measurement is counted twice in their history.
* Sampler settings are constants, not functions of the budget (TPE's random start, NSGA-II's
  population), so raising ``maxExperiments`` does not change the first experiments.
* Warm start: the best configurations measured before — earlier generations of this spec and
  specs with the same model, engine and GPU (``warm_start``) — are enqueued right after the
  baseline, ranked by this spec's objective and SLOs.
* The level gate (:meth:`Study.level_gate`), called by the executor after each load level, stops
  the levels of a configuration once it misses a hard SLO (latency only grows with load), and
  prunes one whose optimistic bound is already below the incumbent (recorded ``PRUNED``, the
  evidence in its reason).
* A configuration is identified by a hash of everything that affects the measurement (resolved
  engine flags, engine, model, workload fingerprint, load); one measured before — in this or an
  earlier generation — is reused, not re-run.

Only the thread that calls :meth:`Study.run` talks to Optuna; experiments run in worker threads.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import random
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from core.clock import now
from core.faults import crash_point
from reconciler import __version__
from reconciler.results import ResultsStore
from specs.errors import FAILURE_HINTS, HostUnavailable, MissingExtraError
from specs.model import ParamSpec, Scalar, TuningSpec
from specs.ranking import best as best_record
from specs.ranking import rankable
from specs.records import (
    ExperimentRecord,
    FailureRecord,
    GpuRecord,
    LoadPointRecord,
    ObjectiveRecord,
    failure_side,
)
from specs.slo import ObjectiveMissing, constraint_values, evaluate, hard_ok, objective_values, pick_summary
from specs.space import Axis, Config, axes, constraint_view, constraints, feasible_count, grid, in_space

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

#: consecutive samples that were duplicates or violated constraints before the space counts as exhausted
EXHAUSTED_AFTER = 60
#: constraint value a configuration failure is told with: above any SLO violation, so that among
#: infeasible trials TPE ranks the ones that at least ran first
FAIL_VIOLATION = 1000.0
#: TPE's random start: the baseline and warm-start trials count toward it; fixed, see the docstring
TPE_STARTUP_TRIALS = 6
NSGA2_POPULATION = 10
#: grid points enumerated at most to order the grid from the default
GRID_ENUMERATE = 200_000
#: configurations from earlier studies enqueued after the baseline
WARM_START_TOP = 3
#: pruning needs the optimistic bound this much below the incumbent (measurement noise)
PRUNE_MARGIN = 0.05


@dataclass
class Measurement:
    """What running one configuration produced (the experiment runner's answer)."""

    state: str  # COMPLETE | FAILED
    load_points: list[LoadPointRecord] = field(default_factory=list)
    failure: FailureRecord | None = None
    command: list[str] = field(default_factory=list)
    engine_flags: dict[str, Any] = field(default_factory=dict)
    gpu: GpuRecord = field(default_factory=GpuRecord)
    timings: dict[str, float] = field(default_factory=dict)
    simulated: bool = False
    #: the container image that ran (container backends; the engine's official one by default)
    image: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    #: the run was interrupted (shutdown), nothing is known: do not record, re-queue
    interrupted: bool = False


@dataclass(frozen=True)
class GateVerdict:
    """What the level gate decided after a load level: ``stop`` the levels (the experiment stays
    COMPLETE with what it measured) or ``prune`` it (recorded PRUNED); ``reason`` is the evidence."""

    action: str  # stop | prune
    reason: str


#: (configuration, load points so far, load levels still to run) → a verdict or None to go on
LevelGate = Callable[[Config, list[LoadPointRecord], list[float]], GateVerdict | None]


class Executor(Protocol):
    """Runs one configuration end to end and never raises for engine problems."""

    def __call__(self, config: Config, *, baseline: bool, cancel: threading.Event) -> Measurement: ...


Progress = Callable[[str, dict[str, Any]], None]


@dataclass
class StudyOutcome:
    generation: str
    completed: int
    failed: int
    reused: int
    exhausted: bool
    interrupted: bool
    best: ExperimentRecord | None


def _host_failed(r: ExperimentRecord) -> bool:
    """The experiment failed on the environment's side: it counts for nothing (budget, sampler
    history of this generation, reuse)."""
    return r.state == "FAILED" and r.failure is not None and failure_side(r.failure.kind) == "environment"


def _reusable(r: ExperimentRecord) -> bool:
    """A measurement, or a failure on the *configuration* side of the taxonomy
    (:func:`specs.records.failure_side`), is reused like a measurement. Environment failures
    (missing executable, too few GPUs, ...) and transient ones (timeouts) are not: fixing the
    host, or plain luck, must lead to a new measurement."""
    if r.reused_from is not None:
        return False
    if r.state == "COMPLETE":
        return True
    return r.state == "FAILED" and r.failure is not None and failure_side(r.failure.kind) == "configuration"


def config_hash(spec: TuningSpec, engine_flags: dict[str, Any], workload_fingerprint: str) -> str:
    body = spec.spec
    wl = body.workload
    key = {
        "engine": {
            "name": body.engine.name,
            "version": body.engine.version,
            "image": body.engine.image,
            "variant": body.engine.variant,
        },
        "model": body.model.model_dump(mode="json"),
        "backend": body.backend.kind,
        "flags": engine_flags,
        "workload": workload_fingerprint,
        "load": wl.load.model_dump(mode="json"),
        "requests": [wl.requests_per_level, wl.warmup_requests, wl.api, wl.ignore_eos],
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def make_sampler(spec: TuningSpec) -> optuna.samplers.BaseSampler:
    """Hard SLOs reach TPE and NSGA-II as per-trial constraints (``Trial.set_constraint``),
    which both samplers read from the trials themselves."""
    search = spec.spec.search
    seed = search.seed
    if search.strategy in ("grid", "random"):
        return optuna.samplers.RandomSampler(seed=seed)
    if search.strategy == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=TPE_STARTUP_TRIALS,
            multivariate=True,
            constant_liar=search.parallelism > 1,
        )
    if search.strategy == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=NSGA2_POPULATION)
    try:
        from optuna_integration import BoTorchSampler
    except ImportError:
        raise MissingExtraError("optuna_integration[botorch]", "botorch") from None
    return BoTorchSampler(seed=seed)  # pragma: no cover - needs torch


def _larger_is_better(r: ExperimentRecord) -> list[float]:
    return [(o.value or 0.0) if o.direction == "maximize" else -(o.value or 0.0) for o in r.objectives]


def _requeue(study: optuna.Study, number: int, params: dict[str, Any] | None = None) -> None:
    """An experiment that did not finish (crash, shutdown) is failed in Optuna — nothing is known
    about it — and its parameters are queued to run first next time."""
    trial = study.get_trials(deepcopy=False)[number]
    if params is None:
        params = trial.params
    attrs: dict[str, Any] = {"requeued_from": number}
    if trial.user_attrs.get("baseline"):
        attrs["baseline"] = True
    study.tell(number, state=TrialState.FAIL)
    study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)


def ordered(axis: Axis) -> bool:
    """A listed axis of three or more numbers: sampled by its index, so that TPE's kernel (and
    NSGA-II's mutation) sees that 1024 lies between 512 and 2048. As a categorical, TPE learns
    nothing from "smaller was better"; on the benchmark surfaces the best configurations often sit
    at one end of such an axis."""
    values = axis.values
    return (
        values is not None
        and len(values) > 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    )


def to_params(spec: TuningSpec, config: Config, legacy: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A configuration as the trial parameters :func:`suggest` reads (indexes on ordered axes)."""
    out: dict[str, Any] = dict(config)
    for axis in axes(spec):
        if ordered(axis) and axis.name in config and axis.name not in legacy:
            assert axis.values is not None
            out[axis.name] = next(
                (i for i, v in enumerate(axis.values) if math.isclose(float(v), float(config[axis.name]))),
                config[axis.name],
            )
    return out


def suggest(trial: optuna.Trial, spec: TuningSpec, legacy: frozenset[str] = frozenset()) -> Config:
    """``legacy``: ordered axes a study began sampling as categoricals (a journal from before
    ordered axes were sampled by index); Optuna allows one distribution kind per name."""
    config: Config = {}
    for axis in axes(spec):
        if axis.values is not None and ordered(axis) and axis.name not in legacy:
            config[axis.name] = axis.values[trial.suggest_int(axis.name, 0, len(axis.values) - 1)]
        elif axis.values is not None:
            config[axis.name] = cast(Scalar, trial.suggest_categorical(axis.name, list(axis.values)))
        else:
            assert axis.param is not None
            config[axis.name] = _suggest_range(trial, axis.name, axis.param)
    return config


def _suggest_range(trial: optuna.Trial, name: str, p: ParamSpec) -> int | float:
    assert p.low is not None and p.high is not None
    if p.is_int:
        step = int(p.step or 1)
        if p.log and step > 1:
            # Optuna has no log scale with a step: sample on the log scale, snap to the grid
            raw = trial.suggest_int(name, int(p.low), int(p.high), log=True)
            return min(int(p.high), int(p.low) + round((raw - int(p.low)) / step) * step)
        return trial.suggest_int(name, int(p.low), int(p.high), step=step, log=p.log)
    if p.log and p.step:
        raw_f = trial.suggest_float(name, float(p.low), float(p.high), log=True)
        return round(min(float(p.high), p.low + round((raw_f - p.low) / p.step) * p.step), 10)
    return trial.suggest_float(name, float(p.low), float(p.high), step=p.step, log=p.log)


class Study:
    def __init__(
        self,
        spec: TuningSpec,
        store: ResultsStore,
        executor: Executor,
        *,
        workload_fingerprint: str,
        workload_info: dict[str, Any],
        engine_flags_of: Callable[[Config], dict[str, Any]],
        is_valid: Callable[[Config], bool] = lambda c: True,
        progress: Progress | None = None,
        on_record: Callable[[ExperimentRecord], None] | None = None,
        stop: threading.Event | None = None,
        default_config: Config | None = None,
        warm_start: Sequence[ExperimentRecord] = (),
    ) -> None:
        self.spec = spec
        self.store = store
        self.executor = executor
        self.fingerprint = workload_fingerprint
        self.workload_info = workload_info
        self.engine_flags_of = engine_flags_of
        self.is_valid = is_valid
        self.progress = progress or (lambda event, info: None)
        self.on_record = on_record or (lambda r: None)
        self.stop = stop or threading.Event()
        self.generation = spec.generation()
        self.search = spec.spec.search
        self.constraints = constraints(spec)
        self.default_config = (
            default_config if default_config is not None and in_space(spec, default_config) else None
        )
        self.warm_start = list(warm_start)
        #: (objective value, record id) of the best feasible experiment so far; read by the gate
        self._incumbent: tuple[float, str] | None = None
        self.legacy: frozenset[str] = frozenset()

    # ------------------------------------------------------------------ optuna plumbing

    def _open(self) -> optuna.Study:
        self.store.ensure()
        storage = JournalStorage(JournalFileBackend(str(self.store.journal)))
        return optuna.create_study(
            study_name=f"{self.spec.name}-{self.generation}",
            storage=storage,
            directions=[o.resolved_direction for o in self.spec.spec.objectives],
            sampler=make_sampler(self.spec),
            load_if_exists=True,
        )

    def _legacy(self, study: optuna.Study) -> frozenset[str]:
        names = {a.name for a in axes(self.spec) if ordered(a)}
        return frozenset(
            name
            for t in study.get_trials(deepcopy=False)
            for name, dist in t.distributions.items()
            if name in names and isinstance(dist, optuna.distributions.CategoricalDistribution)
        )

    def _records(self) -> list[ExperimentRecord]:
        return [r for r in self.store.experiments() if r.generation == self.generation]

    def _recover(self, study: optuna.Study, records: list[ExperimentRecord]) -> None:
        by_trial = {r.trial: r for r in records if r.trial is not None}
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            rec = by_trial.get(t.number)
            if rec is not None:
                log.info("trial %d was recorded as %s before a crash; telling Optuna", t.number, rec.id)
                self._tell(study, t.number, rec)
            else:
                log.info("trial %d was in flight when the last run stopped; re-queuing it", t.number)
                _requeue(study, t.number, self._params_now(t))

    def _set_constraints(self, handle: optuna.Trial, slo_values: Sequence[float], failed: float) -> None:
        # every trial carries the same keys: NSGA-II compares constraint vectors position by position
        hard = [m for m, b in self.spec.spec.slo.items() if b.hard]
        values = list(slo_values) + [0.0] * (len(hard) - len(slo_values))
        for metric, value in zip(hard, values, strict=False):
            handle.set_constraint(metric, value)
        handle.set_constraint("failed", failed)

    def _params_now(self, t: optuna.trial.FrozenTrial) -> dict[str, Any]:
        """A stored trial's parameters as this version's :func:`suggest` reads them: a journal
        written before ordered axes were sampled by index holds their values as categoricals."""
        config: Config = {}
        for axis in axes(self.spec):
            if axis.name not in t.params:
                continue
            raw = t.params[axis.name]
            dist = t.distributions.get(axis.name)
            if ordered(axis) and not isinstance(dist, optuna.distributions.CategoricalDistribution):
                assert axis.values is not None
                raw = axis.values[int(raw)]
            config[axis.name] = raw
        return to_params(self.spec, config, self.legacy)

    def _tell(self, study: optuna.Study, number: int, rec: ExperimentRecord) -> None:
        # Constraints must be set on the trial before it is told; for a trial known only by its
        # number (recovered after a crash, or answered from a record) Optuna has no public way
        # to get a Trial handle, hence its storage and study id.
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        handle = optuna.Trial(study, trial_id)
        if rec.state == "COMPLETE" and rec.objectives and all(o.value is not None for o in rec.objectives):
            self._set_constraints(handle, rec.constraints, 0.0)
            study.tell(number, [float(o.value or 0.0) for o in rec.objectives])
        elif rec.state == "PRUNED":
            self._set_constraints(handle, [], 0.0)
            study.tell(number, state=TrialState.PRUNED)
        elif rec.failure is not None and failure_side(rec.failure.kind) == "configuration":
            self._set_constraints(handle, [], FAIL_VIOLATION)
            study.tell(number, state=TrialState.PRUNED)
        else:
            study.tell(number, state=TrialState.FAIL)

    def _enqueue_grid(self, study: optuna.Study) -> None:
        """Grid order starts at the default (fewest axes changed first) and leaves out what the
        constraints, the engine's rules or the memory pre-check already say cannot run."""
        if study.user_attrs.get("grid_enqueued"):
            return
        default = self.default_config or {}
        points = itertools.islice(grid(self.spec), GRID_ENUMERATE)
        ordered = sorted(points, key=lambda c: sum(default.get(k, c[k]) != c[k] for k in c))
        n = 0
        for config in ordered:
            if n >= self.search.max_experiments:
                break
            if config == default or not self.is_valid(config):
                continue
            study.enqueue_trial(to_params(self.spec, config, self.legacy))
            n += 1
        study.set_user_attr("grid_enqueued", True)

    def _enqueue_start(self, study: optuna.Study, records: list[ExperimentRecord]) -> None:
        """Once per generation: the baseline (when its configuration is known), then the warm start."""
        if study.user_attrs.get("start_enqueued"):
            return
        if (
            self.default_config is not None
            and self.search.include_default
            and not any(r.baseline for r in records)
        ):
            study.enqueue_trial(
                to_params(self.spec, self.default_config, self.legacy), user_attrs={"baseline": True}
            )
        for config in self._warm_configs():
            study.enqueue_trial(to_params(self.spec, config, self.legacy), user_attrs={"warm_start": True})
        study.set_user_attr("start_enqueued", True)

    def _warm_configs(self) -> list[Config]:
        """The best distinct configurations of earlier studies that this spec's space holds,
        ranked by this spec's first objective among those that meet its hard SLOs."""
        slo = self.spec.spec.slo
        obj = self.spec.spec.objectives[0]
        sign = 1.0 if obj.resolved_direction == "maximize" else -1.0
        names = {a.name for a in axes(self.spec)}
        pool = [*(r for r in self.store.experiments() if r.generation != self.generation), *self.warm_start]
        scored: list[tuple[float, Config]] = []
        for r in pool:
            if r.state != "COMPLETE" or set(r.config) != names or not in_space(self.spec, r.config):
                continue
            summary = r.summary
            value = summary.get(obj.metric)
            if value is None or not hard_ok(evaluate(summary, slo)):
                continue
            config = cast(Config, dict(r.config))
            if config == self.default_config or not self._allowed(config):
                continue
            scored.append((sign * float(value), config))
        scored.sort(key=lambda s: -s[0])
        out: list[Config] = []
        for _, config in scored:
            if config not in out:
                out.append(config)
            if len(out) >= WARM_START_TOP:
                break
        return out

    def _allowed(self, config: Config) -> bool:
        view = constraint_view(config)
        return all(c.evaluate(view) for c in self.constraints) and self.is_valid(config)

    # ------------------------------------------------------------------ the level gate

    def level_gate(
        self, config: Config, points: list[LoadPointRecord], remaining: list[float]
    ) -> GateVerdict | None:
        """Called by the executor after each load level (from its thread); see the module docstring.

        Both decisions assume what holds for an engine under a closed or open loop: latency does
        not fall as load rises, and throughput grows at most in proportion to load. Stopping only
        drops levels that would miss the SLO anyway, so the experiment's summary is unchanged;
        pruning compares an optimistic bound (never the value measured so far) with the
        incumbent, so a configuration that could still win is not pruned.
        """
        if not points or not remaining:
            return None
        last = points[-1]
        here = last.load_value
        if any(level <= here for level in remaining):
            return None  # levels not in rising order: nothing follows from monotonicity
        kind = last.load_kind
        missed = [v.metric for v in evaluate(last.metrics, self.spec.spec.slo) if v.hard and not v.ok]
        if missed:
            return GateVerdict(
                "stop",
                f"levels stopped after {kind}={here:g}: it misses the hard SLO on {', '.join(missed)}, and "
                f"latency only grows with load, so the {len(remaining)} higher level(s) were not run",
            )
        incumbent = self._incumbent
        objectives = self.spec.spec.objectives
        if incumbent is None or len(objectives) != 1:
            return None
        obj = objectives[0]
        value, source = incumbent
        feasible = [p for p in points if hard_ok(evaluate(p.metrics, self.spec.spec.slo))]
        raws = [float(r) for p in feasible if (r := p.metrics.get(obj.metric)) is not None]
        now_raw = last.metrics.get(obj.metric)
        if now_raw is None or not raws:
            return None
        top = max(remaining)
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

    # ------------------------------------------------------------------ records

    def _record(
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
        state = m.state
        failure = m.failure
        objectives: list[ObjectiveRecord] = []
        if state == "COMPLETE":
            try:
                values = objective_values(summary, body.objectives, verdicts)
            except ObjectiveMissing as exc:
                state, failure = "FAILED", FailureRecord(kind="not_measured", reason=str(exc))
                values = [math.nan] * len(body.objectives)
            for o, v in zip(body.objectives, values, strict=True):
                raw = summary.get(o.metric)
                objectives.append(
                    ObjectiveRecord(
                        metric=o.metric,
                        direction=o.resolved_direction,
                        raw=raw,
                        value=None if math.isnan(v) else v,
                    )
                )
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

    def _reuse(
        self, source: ExperimentRecord, config: Config, trial: int | None, baseline: bool
    ) -> ExperimentRecord:
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
        return self._record(
            config, m, trial=trial, baseline=baseline, chash=source.config_hash, reused_from=source.id
        )

    # ------------------------------------------------------------------ the loop

    def run(self) -> StudyOutcome:
        study = self._open()
        self.legacy = self._legacy(study)
        records = self._records()
        self._recover(study, records)
        self._enqueue_start(study, records)
        if self.search.strategy == "grid":
            self._enqueue_grid(study)
        all_records = self.store.experiments()
        measured: dict[str, ExperimentRecord] = {}
        for r in all_records:  # every generation: identical configurations are reused
            if _reusable(r):
                measured.setdefault(r.config_hash, r)
        # this generation's records by configuration: a resampled configuration is answered from here
        # an environment failure says nothing about its configuration and spent no budget: the
        # configuration is measured again once the host can run it
        counted = [r for r in records if not _host_failed(r)]
        gen_by_hash = {r.config_hash: r for r in counted}
        budget = self.search.max_experiments
        done = len([r for r in counted if r.confirms is None])
        failed = len([r for r in counted if r.state == "FAILED"])
        host_trouble: ExperimentRecord | None = None
        finite = feasible_count(self.spec)
        distinct_left = (
            None
            if finite is None
            else finite - len({r.config_hash for r in counted if not (r.baseline and r.trial is None)})
        )
        reused = 0
        exhausted = False
        misses = 0
        # with a known default the baseline is the first enqueued trial; else it is measured as {}
        need_baseline = (
            self.search.include_default
            and self.default_config is None
            and not any(r.baseline for r in counted)
        )
        self._update_incumbent(records)
        inflight: dict[Future[Measurement], tuple[int | None, Config, str, bool]] = {}
        pool = ThreadPoolExecutor(
            max_workers=self.search.parallelism, thread_name_prefix=f"exp-{self.spec.name}"
        )
        cancel = threading.Event()
        self.progress("study", {"generation": self.generation, "done": done, "budget": budget})

        def finish(rec: ExperimentRecord, trial: int | None) -> None:
            nonlocal done, failed, host_trouble
            written = self.store.add_experiment(rec)
            crash_point("record_written")
            if _host_failed(written):
                # recorded (the site and status show it), not counted, not learned: the same
                # configuration is asked again when the study resumes; nothing more is started
                if trial is not None:
                    _requeue(study, trial)
                host_trouble = host_trouble or written
                self.on_record(written)
                self.progress("finished", {"record": written, "done": done, "budget": budget})
                return
            if trial is not None:
                self._tell(study, trial, written)
            done += 1
            failed += written.state == "FAILED"
            self._update_incumbent([written])
            if _reusable(written):
                measured.setdefault(written.config_hash, written)
            gen_by_hash.setdefault(written.config_hash, written)
            self.on_record(written)
            self.progress("finished", {"record": written, "done": done, "budget": budget})

        try:
            while not self.stop.is_set():
                limit_failed = self.search.max_failed_experiments
                stop_for_failures = limit_failed is not None and failed >= limit_failed
                while (
                    len(inflight) < self.search.parallelism
                    and done + len(inflight) < budget
                    and not exhausted
                    and not stop_for_failures
                    and host_trouble is None
                    and not self.stop.is_set()
                ):
                    cand: tuple[int | None, Config, bool] | None
                    if need_baseline:
                        need_baseline = False
                        cand = (None, {}, True)
                    else:
                        if distinct_left is not None and distinct_left <= 0:
                            exhausted = True
                            break
                        cand = self._next(study)
                        if cand is None:
                            misses += 1
                            if misses >= EXHAUSTED_AFTER:
                                exhausted = True
                            continue
                    trial, config, baseline = cand
                    flags = self.engine_flags_of(config)
                    chash = config_hash(self.spec, flags, self.fingerprint)
                    if chash in gen_by_hash or any(h == chash for _, _, h, _ in inflight.values()):
                        # measured already in this generation (its trial was told then): answer
                        # from the record, keep it out of the sampler's history, do not count
                        if trial is not None:
                            prior = gen_by_hash.get(chash)
                            study._storage.set_trial_user_attr(
                                study._storage.get_trial_id_from_study_id_trial_number(
                                    study._study_id, trial
                                ),
                                "duplicate_of",
                                prior.id if prior else "in flight",
                            )
                            study.tell(trial, state=TrialState.FAIL)
                        known = set(gen_by_hash) | {h for _, _, h, _ in inflight.values()}
                        alt = self._neighbour(config, known, misses)
                        if alt is not None:
                            study.enqueue_trial(
                                to_params(self.spec, alt, self.legacy),
                                user_attrs={"neighbour_of_duplicate": True},
                            )
                        misses += 1
                        if misses >= EXHAUSTED_AFTER:
                            exhausted = True
                        continue
                    misses = 0
                    if distinct_left is not None and not baseline:
                        distinct_left -= 1
                    if chash in measured:
                        reused += 1
                        finish(self._reuse(measured[chash], config, trial, baseline), trial)
                        continue
                    if baseline and config and not self.is_valid(config):
                        # the engine default itself is predicted to fail (a 70B model at TP 1):
                        # recorded as the comparison point, with the reason, but not run
                        predicted = Measurement(
                            state="FAILED",
                            failure=FailureRecord(
                                kind="invalid_config",
                                reason="the engine default is excluded by a start-up rule or the memory "
                                "pre-check (autotuner plan lists why); not run",
                            ),
                            started_at=now(),
                        )
                        finish(
                            self._record(config, predicted, trial=trial, baseline=True, chash=chash), trial
                        )
                        continue
                    self.progress(
                        "started",
                        {
                            "config": config,
                            "baseline": baseline,
                            "trial": trial,
                            "number": done + len(inflight) + 1,
                            "budget": budget,
                        },
                    )
                    fut = pool.submit(self.executor, config, baseline=baseline, cancel=cancel)
                    inflight[fut] = (trial, config, chash, baseline)
                if not inflight:
                    break
                finished, _ = wait(list(inflight), timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in finished:
                    trial, config, chash, baseline = inflight.pop(fut)
                    m = fut.result()
                    if m.interrupted:
                        if trial is not None:
                            _requeue(study, trial)
                        continue
                    finish(self._record(config, m, trial=trial, baseline=baseline, chash=chash), trial)
        finally:
            if self.stop.is_set():
                cancel.set()
            for fut in list(inflight):
                trial, config, chash, baseline = inflight.pop(fut)
                m = fut.result()  # the executor tears its engine down when cancelled
                if m.interrupted or self.stop.is_set():
                    if trial is not None:
                        _requeue(study, trial)
                    continue
                finish(self._record(config, m, trial=trial, baseline=baseline, chash=chash), trial)
            pool.shutdown(wait=True)
        if host_trouble is not None and not self.stop.is_set():
            f = host_trouble.failure
            assert f is not None
            raise HostUnavailable(
                f"experiment #{host_trouble.id} failed on the host's side ({f.kind}: {f.reason}); "
                f"the study pauses at {done}/{budget} and is retried",
                hint=f.kind and FAILURE_HINTS.get(f.kind),
            )
        if not self.stop.is_set() and self.search.confirm_top > 0:
            self._confirm(cancel)
        records = self._records()
        return StudyOutcome(
            generation=self.generation,
            completed=len([r for r in records if r.state == "COMPLETE"]),
            failed=len([r for r in records if r.state == "FAILED"]),
            reused=reused,
            exhausted=exhausted,
            interrupted=self.stop.is_set(),
            best=best_record(records),
        )

    def _confirm(self, cancel: threading.Event) -> None:
        """Re-measure the best ``confirmTop`` distinct configurations once each, after the search.

        The re-measurements are recorded (``confirms`` names the original) but never told to the
        sampler nor ranked: they are the evidence of the winner's spread, which the report sets
        against its gain over the default. Done ones are not repeated after a restart."""
        records = self._records()
        confirmed = {r.confirms for r in records if r.confirms is not None}
        order = sorted(rankable(records), key=lambda r: [-k for k in _larger_is_better(r)])
        seen: set[str] = set()
        top: list[ExperimentRecord] = []
        for r in order:
            if r.config_hash not in seen:
                seen.add(r.config_hash)
                top.append(r)
        for source in top[: self.search.confirm_top]:
            if source.id in confirmed or self.stop.is_set():
                continue
            config = cast(Config, dict(source.config))
            # progress lines read "[confirm/#0007] ..." for these
            where = {"number": "confirm", "budget": f"#{source.id}"}
            self.progress("started", {"config": config, "baseline": source.baseline, **where})
            m = self.executor(config, baseline=source.baseline, cancel=cancel)
            if m.interrupted:
                return
            rec = self._record(config, m, trial=None, baseline=source.baseline, chash=source.config_hash)
            written = self.store.add_experiment(rec.model_copy(update={"confirms": source.id}))
            self.on_record(written)
            self.progress("finished", {"record": written, "done": "confirm", "budget": f"#{source.id}"})

    def _neighbour(self, config: Config, known: set[str], attempt: int) -> Config | None:
        """An unmeasured configuration one step from ``config`` (a proposal that was measured
        already): the sampler's favourite region, explored instead of asked again. Steps are to
        the adjacent value of an ordered axis or any other value of a categorical one; the nearest
        ring that has an allowed unmeasured point wins, ties broken by the study seed."""
        finite = [a for a in axes(self.spec) if a.values is not None]
        if not finite or set(config) != {a.name for a in axes(self.spec)}:
            return None
        rng = random.Random(f"{self.search.seed}-{attempt}-{sorted(config.items())}")
        for radius in (1, 2):
            ring: list[Config] = []
            for combo in itertools.combinations(finite, radius):
                options: list[list[Scalar]] = []
                for a in combo:
                    assert a.values is not None
                    values = list(a.values)
                    i = next((k for k, v in enumerate(values) if v == config[a.name]), None)
                    if i is None:
                        options.append([])
                    elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
                        options.append([values[j] for j in (i - 1, i + 1) if 0 <= j < len(values)])
                    else:
                        options.append([v for v in values if v != config[a.name]])
                for picked in itertools.product(*options):
                    cand = dict(config)
                    cand.update({a.name: v for a, v in zip(combo, picked, strict=True)})
                    ring.append(cand)
            rng.shuffle(ring)
            for cand in ring:
                if not self._allowed(cand):
                    continue
                if config_hash(self.spec, self.engine_flags_of(cand), self.fingerprint) not in known:
                    return cand
        # nothing close is left: any unmeasured point of a finite space, by the seed
        if len(finite) == len(axes(self.spec)):
            rest = list(itertools.islice(grid(self.spec), GRID_ENUMERATE))
            rng.shuffle(rest)
            for cand in rest:
                if self._allowed(cand) and (
                    config_hash(self.spec, self.engine_flags_of(cand), self.fingerprint) not in known
                ):
                    return cand
        return None

    def _update_incumbent(self, records: Sequence[ExperimentRecord]) -> None:
        for r in rankable(records):
            value = r.objectives[0].value
            if value is None:
                continue
            better = (
                self._incumbent is None
                or (r.objectives[0].direction == "maximize" and value > self._incumbent[0])
                or (r.objectives[0].direction == "minimize" and value < self._incumbent[0])
            )
            if better:
                self._incumbent = (float(value), r.id)

    def _next(self, study: optuna.Study) -> tuple[int | None, Config, bool] | None:
        """Ask for a trial; a configuration that breaks a constraint or an engine rule (the memory
        pre-check included) is told as an infeasible PRUNED trial without running (it does not
        use the budget). None when this sample was skipped. The baseline trial is never skipped:
        the engine's default is what the report compares with."""
        trial = study.ask()
        config = suggest(trial, self.spec, self.legacy)
        baseline = bool(trial.user_attrs.get("baseline"))
        if not baseline and not self._allowed(config):
            trial.set_user_attr("skipped", "violates a constraint or an engine rule")
            self._set_constraints(trial, [], FAIL_VIOLATION)
            study.tell(trial, state=TrialState.PRUNED)
            return None
        return trial.number, config, baseline
