"""A schema-valid spec against the operator's :class:`~specs.policy.rules.Policy`: every way it
oversteps, as located problems naming the policy setting that would allow it (never raised, so
that the spec's author sees all of them at once).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from specs.errors import SpecProblem, UnsafePath
from specs.model import EnvFrom, FileDataset, TuningSpec
from specs.paths import inside_roots
from specs.policy.rules import REMOTE_CODE_FLAGS, Policy, check_host_path, is_loader_var, matches_any


def check_policy(loaded: Any, policy: Policy, *, checkout: Path | None = None) -> list[SpecProblem]:
    """Every way a schema-valid spec (a :class:`specs.loader.LoadedSpec`) oversteps ``policy``.

    ``checkout`` is the repository root that relative dataset and model paths start from; without
    it only what the text shows is checked (absolute paths, ``..``).
    """
    spec: TuningSpec = loaded.spec
    body = spec.spec
    problems: list[SpecProblem] = []
    where = f"({policy.source})"

    def add(path: tuple[str | int, ...], message: str) -> None:
        problems.append(loaded.problem(path, message))

    if body.engine.name not in policy.engines:
        add(
            ("spec", "engine", "name"),
            f"engine {body.engine.name!r} is not allowed on this host {where}; allowed: "
            f"{', '.join(policy.engines) or 'none'} (engines in the operator policy)",
        )
    if body.engine.image is not None and not policy.image_allowed(body.engine.image):
        add(
            ("spec", "engine", "image"),
            f"image {body.engine.image!r} is not from an allowed registry {where}; allowed: "
            f"{', '.join(policy.images)} (images in the operator policy)",
        )
    for name, value in body.engine.env.items():
        at = ("spec", "engine", "env", name)
        if is_loader_var(name) and not policy.allow_loader_env:
            add(
                at,
                f"{name} decides which code the engine loads or where it connects; a spec may not "
                "set it (allowLoaderEnv in the operator policy)",
            )
        elif not policy.spec_env_allowed(name):
            add(
                at,
                f"{name} is not a variable a spec may set {where}; allowed: engine knobs such as "
                "VLLM_*, SGLANG_*, NCCL_*, CUDA_* (add it to env in the operator policy)",
            )
        if isinstance(value, EnvFrom) and not policy.reference_allowed(value.from_env):
            add(
                (*at, "fromEnv"),
                f"fromEnv may reference only {', '.join(policy.secret_env) or 'no variable'} "
                f"{where}; {value.from_env} is not one of them (secretEnv in the operator policy)",
            )
    if not policy.allow_remote_code:
        for path, flag, value in _flags(spec):
            if flag.replace("_", "-") in REMOTE_CODE_FLAGS and _truthy(value):
                add(
                    path,
                    f"{flag} lets the model's own code run on this host; a spec may not enable it "
                    "(allowRemoteCode in the operator policy)",
                )
    backend = body.backend
    if backend.kind == "kubernetes":
        if not matches_any(backend.namespace, policy.namespaces):
            add(
                ("spec", "backend", "namespace"),
                f"namespace {backend.namespace!r} is not one experiments may run in {where}; allowed: "
                f"{', '.join(policy.namespaces) or 'none'} (namespaces in the operator policy)",
            )
        if backend.service_account is not None and backend.service_account not in policy.service_accounts:
            add(
                ("spec", "backend", "serviceAccount"),
                f"service account {backend.service_account!r} is not one a spec may use {where} "
                "(serviceAccounts in the operator policy); leave it out to use the namespace's default",
            )
        if backend.model_cache_pvc is not None and backend.model_cache_pvc not in policy.volume_claims:
            add(
                ("spec", "backend", "modelCachePvc"),
                f"claim {backend.model_cache_pvc!r} is not one a spec may mount {where} "
                "(volumeClaims in the operator policy)",
            )
    problems += _check_caps(loaded, policy)
    problems += _check_paths(loaded, policy, checkout)
    return problems


def _flags(spec: TuningSpec) -> Iterable[tuple[tuple[str | int, ...], str, Any]]:
    for flag, value in spec.spec.engine.args.items():
        yield ("spec", "engine", "args", flag), flag, value
    for flag, param in spec.spec.search.parameters.items():
        for i, value in enumerate(param.values or []):
            yield ("spec", "search", "parameters", flag, "values", i), flag, value


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


def _check_caps(loaded: Any, policy: Policy) -> list[SpecProblem]:
    spec: TuningSpec = loaded.spec
    out: list[SpecProblem] = []
    search = spec.spec.search
    workload = spec.spec.workload
    if search.parallelism > policy.max_parallelism:
        out.append(
            _above(
                loaded,
                ("spec", "search", "parallelism"),
                f"parallelism {search.parallelism}",
                f"{policy.max_parallelism}",
                "maxParallelism",
            )
        )
    load = workload.load
    out += [
        _above(
            loaded,
            ("spec", "workload", "load", "concurrency", i),
            f"concurrency {level}",
            f"{policy.max_concurrency}",
            "maxConcurrency",
        )
        for i, level in enumerate(load.concurrency or [])
        if level > policy.max_concurrency
    ]
    out += [
        _above(
            loaded,
            ("spec", "workload", "load", "requestRate", i),
            f"request rate {rate:g}",
            f"{policy.max_request_rate:g}/s",
            "maxRequestRate",
        )
        for i, rate in enumerate(load.request_rate or [])
        if not math.isfinite(rate) or rate > policy.max_request_rate
    ]
    capacity = load.capacity
    if capacity is not None:
        by_concurrency = capacity.by == "concurrency"
        limit = policy.max_concurrency if by_concurrency else policy.max_request_rate
        if capacity.high > limit:
            out.append(
                _above(
                    loaded,
                    ("spec", "workload", "load", "capacity", "high"),
                    f"capacity.high {capacity.high:g}",
                    f"{limit:g}",
                    "maxConcurrency" if by_concurrency else "maxRequestRate",
                )
            )
    if workload.requests_per_level > policy.max_requests_per_level:
        out.append(
            _above(
                loaded,
                ("spec", "workload", "requestsPerLevel"),
                f"requestsPerLevel {workload.requests_per_level}",
                f"{policy.max_requests_per_level}",
                "maxRequestsPerLevel",
            )
        )
    return out


def _above(loaded: Any, path: tuple[str | int, ...], what: str, limit: str, setting: str) -> SpecProblem:
    """One wording for every cap: what the spec asks, the host's limit, the setting that raises it."""
    return loaded.problem(
        path, f"{what} is above this host's limit of {limit} ({setting} in the operator policy)"
    )


def _check_paths(loaded: Any, policy: Policy, checkout: Path | None) -> list[SpecProblem]:
    spec: TuningSpec = loaded.spec
    out: list[SpecProblem] = []
    dataset = spec.spec.workload.dataset
    if isinstance(dataset, FileDataset) and dataset.path is not None:
        problem = _data_path_problem(dataset.path, policy, checkout)
        if problem is not None:
            out.append(loaded.problem(("spec", "workload", "dataset", "path"), problem))
    if (
        isinstance(dataset, FileDataset)
        and dataset.url is not None
        and not matches_any(dataset.url, policy.dataset_urls)
    ):
        out.append(
            loaded.problem(
                ("spec", "workload", "dataset", "url"),
                f"datasets may be fetched only from {', '.join(policy.dataset_urls) or 'nowhere'} on this "
                "host (datasetUrls in the operator policy)",
            )
        )
    for field_name, value in (("id", spec.spec.model.id), ("tokenizer", spec.spec.model.tokenizer)):
        if value is None:
            continue
        local = checkout is not None and os.path.lexists(Path(checkout) / value)
        if local or Path(value).is_absolute() or value.startswith((".", "~")):
            problem = _data_path_problem(value, policy, checkout)
            if problem is not None:
                out.append(loaded.problem(("spec", "model", field_name), problem))
    backend = spec.spec.backend
    for i, volume in enumerate(getattr(backend, "volumes", ()) or ()):
        host = volume.split(":", 1)[0]
        try:
            check_host_path(host, policy.volume_roots)
        except UnsafePath as exc:
            out.append(loaded.problem(("spec", "backend", "volumes", i), f"volume {volume!r}: {exc}"))
    return out


def _data_path_problem(path: str, policy: Policy, checkout: Path | None) -> str | None:
    p = Path(path)
    if checkout is None:
        # only the text can be judged: absolute paths must be under an operator root
        if p.is_absolute():
            try:
                inside_roots(p, policy.data_roots)
            except UnsafePath as exc:
                return str(exc)
        elif ".." in p.parts:
            return f"{path} leaves the repository ('..'); paths are relative to the repository root"
        return None
    try:
        inside_roots(p, policy.data_roots_for(checkout), base=checkout)
    except UnsafePath as exc:
        return str(exc).replace(str(Path(checkout).resolve()), "the repository")
    return None
