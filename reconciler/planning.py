"""Dry-run planning: what a spec will do before any GPU is touched.

The time estimate is deliberately simple and says so: engine start-up times are typical values
per engine, and a request is assumed to take ``ttft + output_tokens * tpot`` with typical TTFT
and TPOT per engine class. It answers "minutes or days?", not "how many seconds".
"""

from __future__ import annotations

import hashlib
import math
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

from backends.engines import get_engine
from reconciler.artifacts import docker_command, image_for
from specs.loader import LoadedSpec
from specs.model import DockerBackend as DockerSettings
from specs.model import FileDataset, KubernetesBackend, SyntheticDataset, TuningSpec
from specs.space import axes, feasible_count, grid, raw_size

#: (start-up seconds, typical TTFT s, typical TPOT s) per engine; see the module docstring
TYPICAL: dict[str, tuple[float, float, float]] = {
    "vllm": (120.0, 0.15, 0.025),
    "sglang": (120.0, 0.15, 0.025),
    "trtllm": (300.0, 0.12, 0.02),
    "llamacpp": (5.0, 0.5, 0.05),
    "sim": (3.0, 0.1, 0.02),
    "replay": (0.0, 0.0, 0.0),
}


@dataclass
class PlannedCommand:
    config: dict[str, Any]
    argv: list[str]
    gpus: int
    #: the ``docker run`` line of this configuration, for the docker backend
    docker: str | None = None

    @property
    def shell(self) -> str:
        return shlex.join(self.argv)


@dataclass
class Plan:
    name: str
    generation: str
    engine: str
    flag_table_version: str
    backend: str
    strategy: str
    axes: list[dict[str, Any]]
    raw_size: float
    feasible: int | None
    experiments: int
    parallelism: int
    gpus_per_experiment: list[int]
    commands: list[PlannedCommand]
    seconds_per_experiment: float
    seconds_total: float
    assumptions: list[str] = field(default_factory=list)
    #: kubernetes specs: the objects the first experiment creates (Secret, ConfigMap, Pod, Service)
    manifests: list[dict[str, Any]] = field(default_factory=list)
    #: configurations (of the first 500 in grid order) a start-up rule or the memory pre-check
    #: excludes, and a few of them with the reason: the study never runs these
    excluded: int = 0
    excluded_examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["raw_size"] = None if math.isinf(self.raw_size) else int(self.raw_size)
        for c, cmd in zip(d["commands"], self.commands, strict=True):
            c["shell"] = cmd.shell
        return d


def _output_tokens(spec: TuningSpec) -> float:
    ds = spec.spec.workload.dataset
    if isinstance(ds, SyntheticDataset):
        return float(ds.output.mean)
    if isinstance(ds, FileDataset) and ds.output is not None:
        return float(ds.output.mean)
    return 256.0


def estimate_experiment_seconds(spec: TuningSpec) -> tuple[float, list[str]]:
    body = spec.spec
    engine = body.engine.name
    startup, ttft, tpot = TYPICAL[engine]
    scale = 1.0
    if engine == "sim":
        scale = float(body.engine.args.get("time-scale", body.engine.args.get("time_scale", 1.0)) or 1.0)
    per_request = ttft + _output_tokens(spec) * tpot
    wl = body.workload
    n = wl.requests_per_level
    load = wl.load
    if load.concurrency is not None:
        levels = [n / c * per_request + per_request for c in load.concurrency]
    elif load.request_rate is not None:
        levels = [(n / r if math.isfinite(r) else 0.0) + per_request for r in load.request_rate]
    else:
        assert load.capacity is not None
        steps = load.capacity.max_steps
        levels = [n / max(load.capacity.low, 1.0) * per_request / 4 + per_request] * steps
    if wl.max_duration_per_level is not None:
        levels = [min(x, wl.max_duration_per_level) for x in levels]
    warmup = wl.warmup_requests * per_request / 4
    total = (startup + warmup + sum(levels)) / scale + 5.0
    notes = [
        f"{engine}: start-up ~{startup:.0f}s, TTFT ~{ttft * 1000:.0f} ms, "
        f"TPOT ~{tpot * 1000:.0f} ms (typical values)",
        f"{len(levels)} load level(s) x {n} requests, ~{_output_tokens(spec):.0f} output tokens each",
    ]
    if scale != 1.0:
        notes.append(f"sim time-scale {scale:g}x")
    return total, notes


def build_plan(loaded: LoadedSpec, *, count: int = 3, host: str = "127.0.0.1", port: int = 8000) -> Plan:
    spec = loaded.spec
    body = spec.spec
    engine = get_engine(body.engine.name, body.engine.variant)
    feasible = feasible_count(spec)
    size = raw_size(spec)
    budget = body.search.max_experiments
    if feasible is not None:
        experiments = min(budget, feasible + (1 if body.search.include_default else 0))
    else:
        experiments = budget
    commands = []
    # in a container on a bridge network the engine listens on every address of its namespace
    bridged = isinstance(body.backend, DockerSettings) and body.backend.network == "bridge"
    bind = "0.0.0.0" if bridged else host
    gpu_counts: set[int] = set()
    shown = 0
    excluded = 0
    examples: list[dict[str, Any]] = []
    for config in grid(spec, limit=500):
        if engine.config_problems(spec, config):
            continue  # the engine would refuse it: the study skips it too
        refused = engine.startup_problems(spec, config)
        if refused:
            excluded += 1
            if len(examples) < 3:
                examples.append({"config": dict(config), "reason": refused[0].message})
            continue
        gpus = engine.gpus_for(spec, config)
        gpu_counts.add(gpus)
        if shown < count:
            shown += 1
            launch = engine.launch(spec, config, host=bind, port=port)
            docker = None
            if body.backend.kind == "docker":
                image = image_for(spec, launch)
                docker = docker_command(spec, launch, gpus, image) if image else None
            commands.append(
                PlannedCommand(config=dict(config), argv=list(launch.argv), gpus=gpus, docker=docker)
            )
    manifests: list[dict[str, Any]] = []
    if isinstance(body.backend, KubernetesBackend) and commands:
        manifests = first_experiment_manifests(spec, commands[0].config)
    per_exp, notes = estimate_experiment_seconds(spec)
    waves = math.ceil(experiments / body.search.parallelism)
    return Plan(
        name=spec.name,
        generation=spec.generation(),
        engine=body.engine.name,
        flag_table_version=engine.flags.version,
        backend=body.backend.kind,
        strategy=body.search.strategy,
        axes=[
            {"name": a.name, "size": None if a.values is None else len(a.values), "values": a.values}
            if a.values is not None
            else {
                "name": a.name,
                "size": None,
                "low": a.param.low if a.param else None,
                "high": a.param.high if a.param else None,
                "log": bool(a.param and a.param.log),
            }
            for a in axes(spec)
        ],
        raw_size=size,
        feasible=feasible,
        experiments=experiments,
        parallelism=body.search.parallelism,
        gpus_per_experiment=sorted(gpu_counts),
        commands=commands,
        seconds_per_experiment=per_exp,
        seconds_total=per_exp * waves,
        assumptions=notes,
        manifests=manifests,
        excluded=excluded,
        excluded_examples=examples,
    )


def first_experiment_manifests(spec: TuningSpec, config: dict[str, Any]) -> list[dict[str, Any]]:
    """What the kubernetes backend will create for ``config``, from the backend's own builder.

    The daemon adds what only it knows: the owner's ``ownerReference`` (its uid), the daemon and
    incarnation labels, a free port, and the secret values (shown here as where they come from).
    """
    from backends.deploy import kube_manifests as km
    from backends.deploy.kubernetes import L_DEPLOYMENT, L_SPEC, MANAGED_BY
    from reconciler.artifacts import image_for

    body = spec.spec
    assert isinstance(body.backend, KubernetesBackend)
    engine = get_engine(body.engine.name, body.engine.variant)
    plan = engine.launch(spec, config, host="0.0.0.0", port=8000)
    image = image_for(spec, plan) or "<set spec.engine.image>"
    digest = hashlib.sha256(repr(sorted(config.items())).encode()).hexdigest()[:6]
    name = f"{spec.name[:40].rstrip('-')}-{digest}-1"
    labels = {
        **MANAGED_BY,
        L_SPEC: spec.name,
        L_DEPLOYMENT: name,
        "autotuner.spec": spec.name,
        "autotuner.generation": spec.generation(),
    }
    ns = body.backend.namespace
    secret_name = f"{name}-env" if plan.env_from else None
    files_name = f"{name}-files" if plan.files else None
    out: list[dict[str, Any]] = []
    if secret_name is not None:
        values = {k: f"<value of {src} in the daemon's environment>" for k, src in plan.env_from.items()}
        out.append(km.secret_env(values, name=secret_name, namespace=ns, labels=labels))
    if files_name is not None:
        out.append(km.files_configmap(plan, name=files_name, namespace=ns, labels=labels))
    out.append(
        km.experiment_pod(
            body.backend,
            plan,
            name=name,
            image=image,
            labels=labels,
            secret_name=secret_name,
            files_name=files_name,
        )
    )
    out.append(
        km.experiment_service(body.backend, plan, name=name, labels=labels, selector={L_DEPLOYMENT: name})
    )
    return out
