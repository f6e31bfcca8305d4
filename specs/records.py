"""The JSON files the tool writes under ``results/<name>/`` (docs/architecture.md section 4).

They live in ``specs`` because both the reconciler (which writes them) and the report (which
reads them, and may import only ``specs``) need the same schema. Readers ignore unknown fields,
so an older report can read a newer record; every file carries ``schemaVersion``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

SCHEMA_VERSION = 1

ExperimentState = Literal["COMPLETE", "FAILED", "PRUNED"]
#: what a deploy backend reports when an engine cannot serve (``backends.deploy.base.EngineFailure``)
EngineFailureKind = Literal[
    "startup_crash",
    "oom",
    "readiness_timeout",
    "crashed",
    "benchmark_errors",
    "timeout",
    # environment failures: the host, not the configuration (never cached, retried with backoff)
    "executable_missing",
    "image_unavailable",
    "model_missing",
    "gpus_unavailable",
    "unschedulable",
    "environment",
]
#: every failure kind a record can hold: the engine's, plus those the study decides itself
FailureKind = Literal[EngineFailureKind, "invalid_config", "not_measured", "interrupted", "backend_error"]

#: Failure kinds that say something about the *configuration* (the engine refused or crashed on
#: these flags): cached like a measurement and learned by the search.
CONFIGURATION_FAILURES: frozenset[str] = frozenset({"startup_crash", "oom", "invalid_config", "crashed"})

#: Failure kinds that say something about the *environment* (missing binary or image, missing
#: model, too few GPUs, cannot be scheduled, port/disk/daemon trouble): never cached, retried with
#: backoff and shown as a condition, so that fixing the host re-measures the configuration.
ENVIRONMENT_FAILURES: frozenset[str] = frozenset(
    {
        "executable_missing",
        "image_unavailable",
        "model_missing",
        "gpus_unavailable",
        "unschedulable",
        "environment",
        "backend_error",
    }
)


def failure_side(kind: str) -> Literal["configuration", "environment", "transient"]:
    """Which side of the taxonomy a failure kind is on; ``transient`` kinds (timeouts, benchmark
    errors, interruptions) are neither cached nor a condition: they are simply tried again."""
    if kind in CONFIGURATION_FAILURES:
        return "configuration"
    if kind in ENVIRONMENT_FAILURES:
        return "environment"
    return "transient"


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class GpuRecord(_Record):
    model: str | None = None
    count: int = 0
    ids: list[int] = Field(default_factory=list)
    driver: str | None = None
    memory_mib: int | None = None


class LoadPointRecord(_Record):
    """What one load level (a concurrency or a request rate) measured, whoever measured it: the
    load generator (``backends.loadgen``), an adapter for another tool's results
    (``backends.adapters``), the experiment runner's combined repeats. The one load-point type:
    what the study stores is what was measured, with no conversion between them.

    Metric names are the vocabulary of :mod:`specs.metrics`; a metric that could not be computed
    (TPOT when every request produced one token) is absent or ``None``, never 0.
    """

    #: ``concurrency`` (closed loop) or ``request_rate`` (open loop, requests/s; ``inf`` = all at once)
    load_kind: str
    load_value: float
    metrics: dict[str, float | None]
    #: who measured it: ``autotuner``, ``genai-bench``, ``vllm-bench``
    source: str = "autotuner"
    #: definition differences, fallbacks used (e.g. "token counts from streamed chunks, no usage")
    notes: list[str] = Field(default_factory=list)
    #: error kind -> count (``http_500``, ``timeout``, ``truncated_stream``, ...)
    errors: dict[str, int] = Field(default_factory=dict)
    slo: list[dict[str, Any]] = Field(default_factory=list)
    feasible: bool | None = None
    #: the same metrics in wall-clock time, when the engine's clock runs faster (the sim's
    #: time scale); ``metrics`` and every verdict are in the engine's time
    wall_metrics: dict[str, float | None] = Field(default_factory=dict, alias="wallMetrics")
    #: with ``repeats`` > 1: metric -> {min, median, max} over the repeats (``metrics`` holds the medians)
    spread: dict[str, dict[str, float]] = Field(default_factory=dict)
    #: how it was measured: repeats, load generator workers, time scale, prefix-cache hits reported
    measured: dict[str, Any] = Field(default_factory=dict)
    #: facts of the run for whoever holds the point in memory (``autotuner bench --json``, tests):
    #: token totals, good requests, the adapter's scenario and source file. Never written to
    #: results: what a record keeps is above.
    extra: dict[str, Any] = Field(default_factory=dict, exclude=True)


class FailureRecord(_Record):
    kind: str
    reason: str
    log_tail: str = ""
    exit_code: int | None = None


class ObjectiveRecord(_Record):
    metric: str
    direction: Literal["minimize", "maximize"]
    raw: float | None
    value: float | None


class ExperimentRecord(_Record):
    schema_version: int = Field(default=SCHEMA_VERSION, alias="schemaVersion")
    tool_version: str = Field(alias="toolVersion")
    id: str
    spec: str
    generation: str
    trial: int | None = None
    state: ExperimentState
    simulated: bool = False
    baseline: bool = False
    config: dict[str, Any]
    config_hash: str = Field(alias="configHash")
    engine_flags: dict[str, Any] = Field(default_factory=dict, alias="engineFlags")
    command: list[str] = Field(default_factory=list)
    engine: dict[str, Any] = Field(default_factory=dict)
    backend: dict[str, Any] = Field(default_factory=dict)
    model: dict[str, Any] = Field(default_factory=dict)
    gpu: GpuRecord = Field(default_factory=GpuRecord)
    workload: dict[str, Any] = Field(default_factory=dict)
    load_points: list[LoadPointRecord] = Field(default_factory=list, alias="loadPoints")
    summary_index: int | None = Field(default=None, alias="summaryIndex")
    feasible: bool | None = None
    summary: dict[str, float | None] = Field(default_factory=dict)
    slo: list[dict[str, Any]] = Field(default_factory=list)
    objectives: list[ObjectiveRecord] = Field(default_factory=list)
    constraints: list[float] = Field(default_factory=list)
    failure: FailureRecord | None = None
    timings: dict[str, float] = Field(default_factory=dict)
    started_at: str | None = Field(default=None, alias="startedAt")
    finished_at: str | None = Field(default=None, alias="finishedAt")
    reused_from: str | None = Field(default=None, alias="reusedFrom")
    #: a re-measurement of that experiment's configuration at the end of the study
    #: (``search.confirmTop``): evidence of its spread, not a new configuration
    confirms: str | None = None

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class Condition(_Record):
    #: ``Degraded``: something failed and is retried: an environment failure
    #: (:data:`ENVIRONMENT_FAILURES`; clears when an experiment runs), a crashed study, a transient
    #: error in backoff, a failing commit-back or sync
    type: Literal["Ready", "Reconciling", "Stalled", "Degraded"]
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str = Field(alias="lastTransitionTime")
    #: when the daemon tries again (Degraded only)
    next_retry_time: str | None = Field(default=None, alias="nextRetryTime")

    @model_serializer(mode="wrap")
    def _drop_unset_retry(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # absent rather than null: status.json files written before this field keep their bytes
        data: dict[str, Any] = handler(self)
        for key in ("nextRetryTime", "next_retry_time"):
            if key in data and data[key] is None:
                del data[key]
        return data


class StatusRecord(_Record):
    schema_version: int = Field(default=SCHEMA_VERSION, alias="schemaVersion")
    tool_version: str = Field(alias="toolVersion")
    spec: str
    title: str | None = None
    engine: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: str | None = Field(default=None, alias="observedGeneration")
    last_applied_revision: str | None = Field(default=None, alias="lastAppliedRevision")
    spec_file: str | None = Field(default=None, alias="specFile")
    counts: dict[str, int] = Field(default_factory=dict)
    max_experiments: int | None = Field(default=None, alias="maxExperiments")
    objectives: list[dict[str, Any]] = Field(default_factory=list)
    best: list[dict[str, Any]] = Field(default_factory=list)
    problems: list[dict[str, Any]] = Field(default_factory=list)
    updated_at: str | None = Field(default=None, alias="updatedAt")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def condition(self, kind: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)
