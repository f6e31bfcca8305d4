"""Run one spec's study to completion (or until stopped), keeping ``status.json`` and ``best/``
current after every experiment. Used by ``autotuner run``, ``demo`` and the reconciler, so that
every path writes results the same way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.deploy.base import DeployBackend
from backends.engines import get_engine
from backends.workloads import build_workload
from reconciler.artifacts import render
from reconciler.experiment import ExperimentRunner
from reconciler.leases import GpuLeaser
from reconciler.logs import log_event
from reconciler.results import ResultsStore
from reconciler.status import Phase, build_status
from reconciler.study import Progress, Study, StudyOutcome
from specs.errors import MissingExtraError, UserError
from specs.loader import LoadedSpec
from specs.model import TuningSpec
from specs.ranking import best, pareto_front
from specs.records import ExperimentRecord

log = logging.getLogger(__name__)


def make_backend(spec: TuningSpec, state_dir: Path) -> DeployBackend:
    kind = spec.spec.backend.kind
    if kind == "local":
        from backends.deploy.local import LocalBackend

        problem = get_engine(spec.spec.engine.name, spec.spec.engine.variant).local_problem()
        if problem is not None:
            raise problem
        return LocalBackend(state_dir)
    if kind == "docker":
        try:
            import docker  # noqa: F401
        except ImportError:
            raise MissingExtraError("docker", "docker") from None
    if kind == "kubernetes":
        try:
            import kubernetes  # noqa: F401
        except ImportError:
            raise MissingExtraError("kubernetes", "kubernetes") from None
        import os

        from backends.deploy.kubernetes import KubernetesBackend
        from specs.model import KubernetesBackend as KubernetesSettings

        assert isinstance(spec.spec.backend, KubernetesSettings)
        host_paths = os.environ.get("AUTOTUNER_KUBERNETES_HOST_PATHS", "")
        return KubernetesBackend(
            spec.spec.backend,
            spec_name=spec.name,
            state_dir=state_dir,
            kubeconfig=os.environ.get("KUBECONFIG") or None,
            context=os.environ.get("AUTOTUNER_KUBE_CONTEXT") or None,
            allow_host_paths=[p for p in host_paths.split(":") if p],
            # a pod outlives no experiment by much, even when its daemon never comes back
            active_deadline_s=spec.spec.search.experiment_timeout + 600,
        )
    raise UserError(
        f"the {kind} backend is not available in this version of autotuner",
        hint="use backend: {kind: local} for now (see docs/backends.md)",
    )


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
    try:
        workload = build_workload(
            spec.spec.workload.dataset,
            seed=spec.spec.search.seed,
            base_dir=ctx.base_dir,
            cache_dir=ctx.state_dir / "datasets",
        )
        backend = ctx.backend or make_backend(spec, ctx.state_dir)
    except UserError as exc:
        write_status(spec, store, ctx, "stalled", str(exc), reason="InvalidInput")
        _changed(ctx, spec.name)
        raise
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

    workload_info: dict[str, Any] = workload.to_record()
    study = Study(
        spec,
        store,
        runner,
        workload_fingerprint=workload.fingerprint,
        workload_info=workload_info,
        engine_flags_of=runner.engine_flags,
        is_valid=runner.can_run,
        progress=ctx.progress,
        on_record=on_record,
        stop=ctx.stop,
    )
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
        reused=outcome.reused,
        interrupted=outcome.interrupted,
        exhausted=outcome.exhausted,
        best=outcome.best.id if outcome.best else None,
    )
    records = store.experiments()
    write_best(spec, store, records)
    if outcome.interrupted:
        phase: Phase = "running"
        message = f"interrupted at {progress_message(spec, records)}; resumes on the next run"
    elif outcome.completed == 0:
        phase, message = "failed", f"no experiment completed ({outcome.failed} failed)"
    else:
        phase = "done"
        message = f"{progress_message(spec, records)}" + (
            ", search space exhausted" if outcome.exhausted else ""
        )
    if write_status(spec, store, ctx, phase, message, records=records):
        _changed(ctx, spec.name)
    return outcome


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
