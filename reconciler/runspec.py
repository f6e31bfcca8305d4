"""Run one spec's study to completion (or until stopped), keeping ``status.json`` and ``best/``
current after every experiment. Used by ``autotuner run``, ``demo`` and the reconciler, so that
every path writes results the same way.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.deploy.base import DeployBackend
from backends.deploy.container import parse_volume
from backends.deploy.leases import GpuLeaser
from backends.deploy.registry import BackendRequest, get_backend
from backends.engines import Engine, get_engine
from backends.engines.replay import check_against, resolve_table, table_path
from backends.engines.replay_table import load_table
from backends.workloads import Workload, build_workload
from reconciler.artifacts import render
from reconciler.experiment import ExperimentRunner
from reconciler.levels import LevelHook, LevelOutcome, StopLevels
from reconciler.logs import log_event
from reconciler.replay import ReplayExecutor
from reconciler.results import ResultsStore
from reconciler.status import Phase, build_status
from reconciler.study import Study, StudyOutcome
from reconciler.study.contract import Executor, LevelGate, Progress
from specs.errors import UserError
from specs.loader import LoadedSpec
from specs.model import TuningSpec
from specs.policy import Policy
from specs.ranking import best, pareto_front
from specs.records import ExperimentRecord
from specs.results import spec_dirs
from specs.space import Config, axes, in_space

log = logging.getLogger(__name__)


def make_backend(spec: TuningSpec, state_dir: Path, policy: Policy | None = None) -> DeployBackend:
    """The deploy backend of ``spec`` (:mod:`backends.deploy.registry`) under the operator's
    ``policy`` (docs/security.md: host folders spec volumes and local model paths may come from
    are its ``volumeRoots``) plus ``AUTOTUNER_DOCKER_MOUNTS``, mounts the operator adds to every
    container (``HOST:CONTAINER[:ro|:rw]`` separated by ``,``)."""
    policy = policy or Policy()
    try:
        mounts = tuple(
            parse_volume(m.strip())
            for m in os.environ.get("AUTOTUNER_DOCKER_MOUNTS", "").split(",")
            if m.strip()
        )
    except ValueError as exc:
        raise UserError(f"AUTOTUNER_DOCKER_MOUNTS: {exc}") from None
    request = BackendRequest(
        spec=spec,
        state_dir=state_dir,
        allowed_volume_roots=tuple(Path(p) for p in policy.volume_roots),
        mounts=mounts,
        policy=policy,
    )
    return get_backend(spec.spec.backend.kind, request)


@dataclass
class RunContext:
    """What a study needs from the process around it."""

    results_root: Path
    state_dir: Path
    base_dir: Path
    leaser: GpuLeaser
    backend: DeployBackend | None = None
    progress: Progress | None = None
    stop: threading.Event | None = None
    revision: str | None = None
    spec_file: str | None = None
    #: called after every write under results/ (the reconciler commits, the site rebuilds)
    on_change: Callable[[str], None] | None = None
    #: the operator's policy (dataset roots, engine environment); docs/security.md
    policy: Policy = field(default_factory=Policy)


def default_config(spec: TuningSpec, engine: Engine) -> Config | None:
    """The engine's default configuration in the space's terms, when the engine knows every
    searched axis's default and the space holds it; else None (the baseline runs as ``{}``)."""
    values = getattr(engine, "default_values", None)
    if values is None:
        return None
    known = values(spec)
    names = [a.name for a in axes(spec)]
    if not names or not all(n in known for n in names):
        return None
    config = {n: known[n] for n in names}
    return config if in_space(spec, config) else None


def _gpu_key(spec: TuningSpec) -> str | None:
    gpu = spec.spec.engine.args.get("gpu")
    return str(gpu).lower() if gpu is not None else None


def related_records(spec: TuningSpec, results_root: Path) -> list[ExperimentRecord]:
    """COMPLETE experiments of *other* specs with the same model, engine and GPU: the warm start.
    The GPU is the sim's or replay's ``engine.args.gpu``, else the recorded GPU model."""
    out: list[ExperimentRecord] = []
    if not results_root.is_dir():
        return out
    model = spec.spec.model.id
    engine = spec.spec.engine.name
    gpu = _gpu_key(spec)
    for folder in spec_dirs(results_root):
        if folder.name == spec.name:
            continue
        try:
            records = ResultsStore(results_root, folder.name).experiments()
        except (OSError, ValueError):
            continue  # another spec's unreadable results are its own problem, not this study's
        for r in records:
            if r.state != "COMPLETE" or r.engine.get("name") != engine or r.model.get("id") != model:
                continue
            theirs = r.gpu.model.lower().split(" (")[0] if r.gpu.model else None
            if gpu is not None and theirs is not None and theirs != gpu:
                continue
            out.append(r)
    return out


def write_best(spec: TuningSpec, store: ResultsStore, records: list[ExperimentRecord]) -> bool:
    gen = [r for r in records if r.generation == spec.generation()]
    winner = best(gen)
    if winner is None:
        return False
    return store.write_best(render(spec, winner, pareto_front(gen)))


def write_status(
    spec: TuningSpec,
    store: ResultsStore,
    ctx: RunContext,
    phase: Phase,
    message: str,
    reason: str | None = None,
    records: list[ExperimentRecord] | None = None,
) -> bool:
    if records is None:
        records = store.experiments()
    status = build_status(
        name=spec.name,
        phase=phase,
        message=message,
        old=store.status(),
        spec=spec,
        records=records,
        revision=ctx.revision,
        spec_file=ctx.spec_file,
        reason=reason,
    )
    return store.write_status(status)


def progress_message(spec: TuningSpec, records: list[ExperimentRecord]) -> str:
    gen = [r for r in records if r.generation == spec.generation()]
    done = sum(r.state in ("COMPLETE", "FAILED") for r in gen)
    return f"{done}/{spec.spec.search.max_experiments} experiments"


def run_spec(loaded: LoadedSpec, ctx: RunContext) -> StudyOutcome | None:
    """Run the study of ``loaded``; None when the spec is suspended.

    Raises :class:`UserError` for problems of the input found before any engine starts (a missing
    dataset file, an unavailable backend), after recording them as ``Stalled`` in status.json.
    """
    spec = loaded.spec
    store = ResultsStore(ctx.results_root, spec.name)
    store.ensure()
    if spec.spec.suspend:
        if write_status(spec, store, ctx, "suspended", "spec.suspend is true: no new experiments"):
            _changed(ctx, spec.name)
        return None
    engine = get_engine(spec.spec.engine.name, spec.spec.engine.variant)
    try:
        workload, replay, backend = _inputs(loaded, ctx)
    except UserError as exc:
        write_status(spec, store, ctx, "stalled", str(exc), reason="InvalidInput")
        _changed(ctx, spec.name)
        raise
    if replay is not None:
        execution = _Execution.replaying(spec, engine, replay)
    else:
        assert backend is not None
        execution = _Execution.running(spec, ctx, engine, backend, workload)
    study = Study(
        spec,
        store,
        execution.executor,
        workload_fingerprint=workload.fingerprint,
        workload_info=workload.to_record(),
        engine_flags_of=execution.flags_of,
        is_valid=execution.valid,
        progress=ctx.progress,
        on_record=_record_writer(spec, store, ctx),
        stop=ctx.stop,
        default_config=execution.defaults,
        warm_start=related_records(spec, ctx.results_root),
    )
    execution.attach(study)
    if write_status(spec, store, ctx, "running", progress_message(spec, store.experiments())):
        _changed(ctx, spec.name)
    log_event(
        log,
        logging.INFO,
        "study started",
        spec=spec.name,
        generation=spec.generation(),
        budget=spec.spec.search.max_experiments,
        strategy=spec.spec.search.strategy,
    )
    outcome = study.run()
    log_event(
        log,
        logging.INFO,
        "study stopped",
        spec=spec.name,
        generation=spec.generation(),
        completed=outcome.completed,
        failed=outcome.failed,
        pruned=outcome.pruned,
        reused=outcome.reused,
        interrupted=outcome.interrupted,
        exhausted=outcome.exhausted,
        best=outcome.best.id if outcome.best else None,
    )
    _write_outcome(spec, store, ctx, outcome)
    return outcome


def _inputs(
    loaded: LoadedSpec, ctx: RunContext
) -> tuple[Workload, ReplayExecutor | None, DeployBackend | None]:
    """The workload, and the replay executor or the deploy backend; :class:`UserError` for a
    problem of the input (a dataset, the replay table, the backend)."""
    spec = loaded.spec
    workload = build_workload(
        spec.spec.workload.dataset,
        seed=spec.spec.workload.seed,
        base_dir=ctx.base_dir,
        cache_dir=ctx.state_dir / "datasets",
        roots=ctx.policy.data_roots_for(ctx.base_dir),
    )
    if spec.spec.engine.name != "replay":
        return workload, None, ctx.backend or make_backend(spec, ctx.state_dir, ctx.policy)
    table = load_table(resolve_table(spec, ctx.base_dir), label=table_path(spec))
    problems = check_against(loaded, table)
    if problems:
        raise UserError("\n".join(str(p) for p in problems))
    return workload, ReplayExecutor(spec, table), None


@dataclass
class _Execution:
    """How a spec's experiments run: the study's executor, and what the study asks of the engine
    (its resolved flags, whether it can run a configuration, its defaults)."""

    executor: Executor
    flags_of: Callable[[Config], dict[str, Any]]
    valid: Callable[[Config], bool]
    defaults: Config | None

    @classmethod
    def replaying(cls, spec: TuningSpec, engine: Engine, replay: ReplayExecutor) -> _Execution:
        defaults = replay.default_config()
        if defaults is not None and not in_space(spec, defaults):
            defaults = None

        def flags_of(config: Config) -> dict[str, Any]:
            return engine.resolve(spec, config)

        return cls(replay, flags_of, lambda config: True, defaults)

    @classmethod
    def running(
        cls, spec: TuningSpec, ctx: RunContext, engine: Engine, backend: DeployBackend, workload: Workload
    ) -> _Execution:
        runner = ExperimentRunner(
            spec,
            backend=backend,
            leaser=ctx.leaser,
            workload=workload,
            logs_dir=ctx.state_dir / "logs" / spec.name,
            progress=ctx.progress,
            base_dir=ctx.base_dir,
        )
        (ctx.state_dir / "logs" / spec.name).mkdir(parents=True, exist_ok=True)
        return cls(runner, runner.engine_flags, runner.can_run, default_config(spec, engine))

    def attach(self, study: Study) -> None:
        """The executor asks the study's level gate after each load level (stop levels, prune)."""
        if isinstance(self.executor, ReplayExecutor):
            self.executor.level_gate = study.level_gate
        elif isinstance(self.executor, ExperimentRunner):
            self.executor.on_level = gate_hook(study.level_gate)


def _record_writer(
    spec: TuningSpec, store: ResultsStore, ctx: RunContext
) -> Callable[[ExperimentRecord], None]:
    """The study's ``on_record``: log the experiment, then bring ``best/`` and status.json up to
    date (one writer at a time: experiments finish in worker threads' order)."""
    lock = threading.Lock()

    def on_record(record: ExperimentRecord) -> None:
        objective = record.objectives[0] if record.objectives else None
        log_event(
            log,
            logging.INFO,
            "experiment finished",
            spec=spec.name,
            experiment=record.id,
            state=record.state,
            feasible=record.feasible,
            **({objective.metric: f"{objective.raw:.4g}"} if objective and objective.raw is not None else {}),
            failure=record.failure.kind if record.failure else None,
            reason=record.failure.reason[:200] if record.failure else None,
            reused_from=record.reused_from,
        )
        with lock:
            records = store.experiments()
            write_best(spec, store, records)
            write_status(spec, store, ctx, "running", progress_message(spec, records), records=records)
        _changed(ctx, spec.name, record)

    return on_record


def _write_outcome(spec: TuningSpec, store: ResultsStore, ctx: RunContext, outcome: StudyOutcome) -> None:
    """``best/`` and status.json once the study stopped: running (interrupted), failed or done."""
    records = store.experiments()
    write_best(spec, store, records)
    if outcome.interrupted:
        phase: Phase = "running"
        message = f"interrupted at {progress_message(spec, records)}; resumes on the next run"
    elif outcome.completed == 0:
        counts = f"{outcome.failed} failed, {outcome.pruned} pruned"
        phase, message = "failed", f"no experiment completed ({counts})"
    else:
        phase = "done"
        message = f"{progress_message(spec, records)}" + (
            ", search space exhausted" if outcome.exhausted else ""
        )
    if write_status(spec, store, ctx, phase, message, records=records):
        _changed(ctx, spec.name)


def describe_record(name: str, record: ExperimentRecord) -> str:
    """``spec: experiment 0003 COMPLETE output_throughput_per_gpu=1596.9`` (commit messages)."""
    text = f"{name}: experiment {record.id} {record.state}"
    if record.state == "COMPLETE" and record.objectives:
        o = record.objectives[0]
        text += f" {o.metric}={o.raw:.4g}" if o.raw is not None else ""
        if not record.feasible:
            text += " (misses a hard SLO)"
    elif record.failure is not None:
        text += f" ({record.failure.kind})"
    if record.reused_from:
        text += f", reused from {record.reused_from}"
    return text


def _changed(ctx: RunContext, name: str, record: ExperimentRecord | None = None) -> None:
    if ctx.on_change is not None:
        ctx.on_change(f"{name}: status" if record is None else describe_record(name, record))


def gate_hook(gate: LevelGate) -> LevelHook:
    """The study's level gate as the experiment runner's per-level hook."""

    def hook(outcome: LevelOutcome) -> StopLevels | None:
        verdict = gate(outcome.config, list(outcome.points), list(outcome.remaining))
        if verdict is None:
            return None
        return StopLevels(verdict.reason, prune=verdict.action == "prune")

    return hook
