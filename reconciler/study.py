"""One spec generation's Optuna study: ask, run, record, tell — resumable after any crash.

Checkpoint design (after kopf's progress records and Optuna's journal storage):

* ``study.journal`` (``JournalFileBackend``) holds the Optuna study; each generation has its own
  study name, so an edited spec starts fresh while old experiments stay.
* ``experiments/NNNN.json`` is the truth about what was measured. A record is written (atomically)
  *before* the trial is told to Optuna. On restart, a trial left RUNNING is either told from its
  record (the crash hit between the write and the tell) or failed and its parameters re-queued
  (the crash hit mid-experiment), so a completed experiment is never lost nor re-run, and at
  most the in-flight ones run again.
* Failed experiments are told as ``FAIL``, never as an invented score (the original system told
  ``-inf``, which became the "best" trial of a maximize study). Hard SLOs are Optuna constraints;
  soft SLOs are a continuous penalty (:mod:`specs.slo`).
* A configuration is identified by a hash of everything that affects the measurement (resolved
  engine flags, engine, model, workload fingerprint, load); one measured before — in this or an
  earlier generation — is reused, not re-run.

Only the thread that calls :meth:`Study.run` talks to Optuna; experiments run in worker threads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections.abc import Callable
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
from specs.errors import MissingExtraError
from specs.model import ParamSpec, Scalar, TuningSpec
from specs.ranking import best as best_record
from specs.records import (
    ExperimentRecord,
    FailureRecord,
    GpuRecord,
    LoadPointRecord,
    ObjectiveRecord,
    failure_side,
)
from specs.slo import ObjectiveMissing, constraint_values, evaluate, hard_ok, objective_values, pick_summary
from specs.space import Config, axes, constraint_view, constraints, feasible_count, grid

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

#: consecutive samples that were duplicates or violated constraints before the space counts as exhausted
EXHAUSTED_AFTER = 60


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
        startup = max(2, min(10, search.max_experiments // 3))
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True)
    if search.strategy == "nsga2":
        population = max(4, min(50, search.max_experiments // 2))
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
    try:
        from optuna_integration import BoTorchSampler
    except ImportError:
        raise MissingExtraError("optuna_integration[botorch]", "botorch") from None
    return BoTorchSampler(seed=seed)  # pragma: no cover - needs torch


def _requeue(study: optuna.Study, number: int, params: dict[str, Any] | None = None) -> None:
    """An experiment that did not finish (crash, shutdown) is failed in Optuna — nothing is known
    about it — and its parameters are queued to run first next time."""
    if params is None:
        params = study.get_trials(deepcopy=False)[number].params
    study.tell(number, state=TrialState.FAIL)
    study.enqueue_trial(params, user_attrs={"requeued_from": number}, skip_if_exists=False)


def suggest(trial: optuna.Trial, spec: TuningSpec) -> Config:
    config: Config = {}
    for axis in axes(spec):
        if axis.values is not None:
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
                _requeue(study, t.number, t.params)

    def _tell(self, study: optuna.Study, number: int, rec: ExperimentRecord) -> None:
        # Constraints must be set on the trial before it is told; for a trial known only by its
        # number (recovered after a crash, or answered from a record) Optuna has no public way
        # to get a Trial handle, hence its storage and study id.
        if rec.state == "COMPLETE" and rec.objectives and all(o.value is not None for o in rec.objectives):
            trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
            handle = optuna.Trial(study, trial_id)
            hard = [m for m, b in self.spec.spec.slo.items() if b.hard]
            for metric, value in zip(hard, rec.constraints, strict=False):
                handle.set_constraint(metric, value)
            study.tell(number, [float(o.value or 0.0) for o in rec.objectives])
        else:
            study.tell(number, state=TrialState.FAIL)

    def _enqueue_grid(self, study: optuna.Study) -> None:
        if study.user_attrs.get("grid_enqueued"):
            return
        for config in grid(self.spec, limit=self.search.max_experiments):
            study.enqueue_trial(dict(config))
        study.set_user_attr("grid_enqueued", True)

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
        records = self._records()
        self._recover(study, records)
        if self.search.strategy == "grid":
            self._enqueue_grid(study)
        all_records = self.store.experiments()
        measured: dict[str, ExperimentRecord] = {}
        for r in all_records:  # every generation: identical configurations are reused
            if _reusable(r):
                measured.setdefault(r.config_hash, r)
        # this generation's records by configuration: a resampled configuration is answered from here
        gen_by_hash = {r.config_hash: r for r in records}
        budget = self.search.max_experiments
        done = len([r for r in records if r.state in ("COMPLETE", "FAILED")])
        failed = len([r for r in records if r.state == "FAILED"])
        finite = feasible_count(self.spec)
        distinct_left = (
            None if finite is None else finite - len({r.config_hash for r in records if not r.baseline})
        )
        reused = 0
        exhausted = False
        misses = 0
        need_baseline = self.search.include_default and not any(r.baseline for r in records)
        inflight: dict[Future[Measurement], tuple[int | None, Config, str, bool]] = {}
        pool = ThreadPoolExecutor(
            max_workers=self.search.parallelism, thread_name_prefix=f"exp-{self.spec.name}"
        )
        cancel = threading.Event()
        self.progress("study", {"generation": self.generation, "done": done, "budget": budget})

        def finish(rec: ExperimentRecord, trial: int | None) -> None:
            nonlocal done, failed
            written = self.store.add_experiment(rec)
            crash_point("record_written")
            if trial is not None:
                self._tell(study, trial, written)
            if written.state in ("COMPLETE", "FAILED"):
                done += 1
                failed += written.state == "FAILED"
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
                        # measured already in this generation: tell the sampler, do not count
                        prior = gen_by_hash.get(chash)
                        if trial is not None:
                            if prior is not None:
                                self._tell(study, trial, prior)
                            else:
                                study.tell(trial, state=TrialState.PRUNED)
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

    def _next(self, study: optuna.Study) -> tuple[int | None, Config, bool] | None:
        """Ask for a trial; a configuration that breaks a constraint or an engine rule is told as
        PRUNED without running (it does not use the budget). None when this sample was skipped."""
        trial = study.ask()
        config = suggest(trial, self.spec)
        view = constraint_view(config)
        if not all(c.evaluate(view) for c in self.constraints) or not self.is_valid(config):
            trial.set_user_attr("skipped", "violates a constraint or an engine rule")
            study.tell(trial, state=TrialState.PRUNED)
            return None
        return trial.number, config, False
