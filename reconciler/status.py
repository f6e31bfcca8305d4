"""``status.json``: conditions, generation, counts and best result of one spec.

Conditions follow Kubernetes/Flux conventions: ``Ready``, ``Reconciling`` and ``Stalled``, each
with a reason, a message and ``lastTransitionTime`` — which changes only when the condition's
status does, so that re-running a pass with nothing new writes the same bytes (no commit).
``Degraded`` (after OpenShift's operator conditions) is present only while something is failing
and retried: a crashed study, a transient error in backoff, a failing commit-back; it carries
``nextRetryTime``; and an environment failure of the latest experiment (reason
``EnvironmentFailure``: the host, not the spec, needs fixing). A status built from the study's
progress carries only the last kind: recovery clears the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from core.clock import now
from reconciler import __version__
from specs.errors import SpecProblem
from specs.model import TuningSpec
from specs.ranking import best, pareto_front
from specs.records import Condition, ExperimentRecord, StatusRecord, failure_side

Phase = Literal["running", "done", "stalled", "suspended", "failed", "deleted"]


def _condition(kind: str, status: str, reason: str, message: str, old: StatusRecord | None) -> Condition:
    prev = old.condition(kind) if old else None
    when = prev.last_transition_time if prev is not None and prev.status == status else now()
    return Condition(type=kind, status=status, reason=reason, message=message, last_transition_time=when)


def counts(records: Sequence[ExperimentRecord]) -> dict[str, int]:
    return {
        "total": len(records),
        "complete": sum(r.state == "COMPLETE" for r in records),
        "failed": sum(r.state == "FAILED" for r in records),
        "reused": sum(r.reused_from is not None for r in records),
        "feasible": sum(bool(r.state == "COMPLETE" and r.feasible) for r in records),
    }


def best_summary(records: Sequence[ExperimentRecord], spec: TuningSpec | None) -> list[dict[str, Any]]:
    chosen = pareto_front(records) if spec is not None and len(spec.spec.objectives) > 1 else []
    if not chosen:
        b = best(records)
        chosen = [b] if b else []
    return [
        {
            "experiment": r.id,
            "config": r.config,
            "objectives": {o.metric: o.raw for o in r.objectives},
            "summary": {
                k: r.summary.get(k) for k in ("output_throughput", "ttft_p90_ms", "tpot_p90_ms", "goodput")
            },
        }
        for r in chosen
    ]


#: the longest condition message and problem message kept in status.json, and the most problems
MAX_MESSAGE_CHARS = 2000
MAX_PROBLEM_CHARS = 500
MAX_PROBLEMS = 50


def cap_text(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 24] + f"... ({len(text) - limit + 24} more chars)"


def cap_problems(problems: Sequence[SpecProblem]) -> list[SpecProblem]:
    """At most :data:`MAX_PROBLEMS` problems, each message at most :data:`MAX_PROBLEM_CHARS`."""
    kept = [
        SpecProblem(p.file, p.line, p.path[:200], cap_text(p.message, MAX_PROBLEM_CHARS))
        for p in problems[:MAX_PROBLEMS]
    ]
    if len(problems) > MAX_PROBLEMS:
        first = problems[0]
        kept.append(
            SpecProblem(first.file, None, "", f"... and {len(problems) - MAX_PROBLEMS} more problems")
        )
    return kept


def environment_condition(records: Sequence[ExperimentRecord], old: StatusRecord | None) -> Condition | None:
    """``Degraded`` while the generation's latest experiment failed on the environment's side
    (:func:`specs.records.failure_side`): the host needs fixing, not the spec. ``None`` otherwise:
    like every ``Degraded``, it is present only while true."""
    latest = records[-1] if records else None
    failure = latest.failure if latest is not None and latest.state == "FAILED" else None
    if failure is not None and failure_side(failure.kind) == "environment":
        return _condition("Degraded", "True", "EnvironmentFailure", f"{failure.kind}: {failure.reason}", old)
    return None


def build_status(
    *,
    name: str,
    phase: Phase,
    message: str,
    old: StatusRecord | None,
    spec: TuningSpec | None = None,
    records: Sequence[ExperimentRecord] = (),
    problems: Sequence[SpecProblem] = (),
    revision: str | None = None,
    spec_file: str | None = None,
    reason: str | None = None,
) -> StatusRecord:
    # a message can carry text from the user's files (a dataset's header, a spec's value): capped,
    # so a hostile file cannot make status.json (committed on every change) megabytes long
    message = cap_text(message, MAX_MESSAGE_CHARS)
    problems = cap_problems(problems)
    generation = spec.generation() if spec is not None else (old.observed_generation if old else None)
    gen_records = [r for r in records if r.generation == generation] if generation else []
    ready_reason = {
        "done": "StudyComplete",
        "running": "Progressing",
        "stalled": "InvalidSpec",
        "suspended": "Suspended",
        "failed": "StudyFailed",
        "deleted": "SpecDeleted",
    }[phase]
    reason = reason or ready_reason
    conditions = [
        _condition("Ready", "True" if phase == "done" else "False", reason, message, old),
        _condition(
            "Reconciling",
            "True" if phase == "running" else "False",
            "Progressing" if phase == "running" else reason,
            message if phase == "running" else "",
            old,
        ),
        _condition(
            "Stalled",
            "True" if phase in ("stalled", "failed") else "False",
            reason if phase in ("stalled", "failed") else "AsExpected",
            message if phase in ("stalled", "failed") else "",
            old,
        ),
    ]
    env = environment_condition(gen_records, old)
    if env is not None:
        conditions.append(env)
    status = StatusRecord(
        tool_version=__version__,
        spec=name,
        title=(spec.spec.report.title if spec is not None else (old.title if old else None)),
        engine=(spec.spec.engine.name if spec is not None else (old.engine if old else None)),
        conditions=conditions,
        observed_generation=generation,
        last_applied_revision=revision
        if revision is not None
        else (old.last_applied_revision if old else None),
        spec_file=spec_file if spec_file is not None else (old.spec_file if old else None),
        counts=counts(gen_records),
        max_experiments=spec.spec.search.max_experiments
        if spec is not None
        else (old.max_experiments if old else None),
        objectives=[
            o.model_dump(mode="json") | {"direction": o.resolved_direction} for o in spec.spec.objectives
        ]
        if spec is not None
        else (old.objectives if old else []),
        best=best_summary(gen_records, spec),
        problems=[p.to_dict() for p in problems],
        updated_at=old.updated_at if old else None,
    )
    if old is None or _without_time(status) != _without_time(old):
        status = status.model_copy(update={"updated_at": now()})
    return status


def _without_time(s: StatusRecord) -> dict[str, Any]:
    d = s.dump()
    d.pop("updatedAt", None)
    d.pop("toolVersion", None)
    return d


def degraded(
    old: StatusRecord | None, name: str, reason: str, message: str, retry_at: str | None
) -> StatusRecord:
    """``old`` with a ``Degraded`` condition (a crash, a backoff, a failing commit-back): the rest of
    the status stays as the last writer left it, ``Reconciling`` stops saying "Progressing" (it is
    not), and the next status the study writes drops the condition again."""
    if old is None:
        old = build_status(name=name, phase="running", message="", old=None)
    prev = old.condition("Degraded")
    when = prev.last_transition_time if prev is not None and prev.status == "True" else now()
    conditions = []
    for c in old.conditions:
        if c.type == "Degraded":
            continue
        if c.type == "Reconciling" and c.status == "True":
            c = Condition(
                type="Reconciling", status="False", reason=reason, message="", last_transition_time=now()
            )
        conditions.append(c)
    conditions.append(
        Condition(
            type="Degraded",
            status="True",
            reason=reason,
            message=message,
            last_transition_time=when,
            next_retry_time=retry_at,
        )
    )
    return old.model_copy(update={"conditions": conditions, "updated_at": now()})
