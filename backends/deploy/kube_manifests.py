"""Kubernetes manifests of an engine: one builder for the experiment pods and for ``best/``.

The pod an experiment runs in and the Deployment that ``best/deployment.yaml`` hands the user
must be the same pod: same image, same arguments, same GPU request, same shared memory, same
scheduling constraints. Otherwise a winner measured on one pod shape is deployed on another.
So both come from :func:`pod_spec`, and this module is pure (plain dicts, no ``kubernetes``
import): ``autotuner plan`` prints its output, tests validate it against the Kubernetes schemas
with ``kubernetes-validate``, and the backend sends the same dicts to the API server.

Decisions:

* **Secrets by reference.** ``plan.env_from`` entries become ``secretKeyRef``s to one Secret
  (per experiment for the backend, which creates it from the daemon's environment; named
  ``<spec>-env`` in ``best/``, which the user creates). A value never appears in a Pod or a
  Deployment, and never in a label or an annotation.
* **Shared memory** is an in-memory ``emptyDir`` at ``/dev/shm`` (NCCL and the engines' worker
  processes need far more than the container runtime's 64 MiB default).
* **Files** of the plan (TensorRT-LLM's extra options YAML) go into a ConfigMap mounted at
  :data:`WORKDIR`, the container's working directory, so relative paths in the argv resolve.
* **GPUs** are requested as ``limits`` and ``requests`` of ``gpuResource`` (extended resources
  must have both equal); a simulated engine (``plan.simulated``) requests none, and a pod that
  requests none is also told to see none (``NVIDIA_VISIBLE_DEVICES=void``, empty
  ``CUDA_VISIBLE_DEVICES``): CUDA base images set ``NVIDIA_VISIBLE_DEVICES=all``, which on a
  node whose default runtime is NVIDIA's hands the pod every GPU of the node.
* **Experiment pods never restart** (``restartPolicy: Never``): a crash is a measurement, and a
  restart loop would hide the exit code. Readiness is a readiness probe on the first health
  path, so the pod's ``Ready`` condition means the engine answers; no liveness probe, which would
  turn a slow configuration into a kill the backend cannot tell from a crash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NotRequired, TypedDict, Unpack

from backends.engines.base import LaunchPlan
from specs.model import KubernetesBackend

__all__ = [
    "CONTAINER",
    "WORKDIR",
    "deployment_objects",
    "experiment_pod",
    "experiment_service",
    "files_configmap",
    "pod_spec",
    "secret_env",
]

#: the engine container's name (logs and status are read by it)
CONTAINER = "engine"
#: where the plan's files are mounted; the engine's working directory when there are any
WORKDIR = "/autotuner/work"


def _env(plan: LaunchPlan, secret_name: str | None) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(plan.env.items())]
    if plan.env_from:
        if secret_name is None:
            raise ValueError("the plan references secrets but no Secret name was given")
        env += [
            {"name": k, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": k}}}
            for k in sorted(plan.env_from)
        ]
    if not plan.gpus or plan.simulated:
        # no GPU requested: make sure none is visible. CUDA base images set NVIDIA_VISIBLE_DEVICES=all,
        # and on nodes whose default runtime is nvidia's that exposes every GPU of the node to the pod
        env += [
            {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"},
            {"name": "CUDA_VISIBLE_DEVICES", "value": ""},
        ]
    return env


def _resources(opts: KubernetesBackend, plan: LaunchPlan) -> dict[str, dict[str, Any]]:
    """The spec's requests and limits, plus the GPUs as both (extended resources need both equal)."""
    resources: dict[str, dict[str, Any]] = {}
    for side, values in (("requests", opts.resources.requests), ("limits", opts.resources.limits)):
        if values:
            resources[side] = dict(values)
    if plan.gpus and not plan.simulated:
        for side in ("requests", "limits"):
            resources.setdefault(side, {})[opts.gpu_resource] = str(plan.gpus)
    return resources


def _volumes(
    opts: KubernetesBackend, plan: LaunchPlan, files_name: str | None
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(volume, its mount in the engine container) pairs: shared memory, the plan's files, the
    model cache."""
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = [
        (
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": opts.shm_size}},
            {"name": "shm", "mountPath": "/dev/shm"},
        )
    ]
    if files_name is not None:
        items = [{"key": _file_key(rel), "path": rel} for rel in sorted(plan.files)]
        pairs.append(
            (
                {"name": "files", "configMap": {"name": files_name, "items": items}},
                {"name": "files", "mountPath": WORKDIR, "readOnly": True},
            )
        )
    cache: dict[str, Any] | None = None
    if opts.model_cache_pvc is not None:
        cache = {"persistentVolumeClaim": {"claimName": opts.model_cache_pvc}}
    elif opts.model_cache_host_path is not None:
        cache = {"hostPath": {"path": opts.model_cache_host_path, "type": "Directory"}}
    if cache is not None:
        pairs.append(
            ({"name": "model-cache", **cache}, {"name": "model-cache", "mountPath": opts.model_cache_path})
        )
    return pairs


def _scheduling(opts: KubernetesBackend) -> dict[str, Any]:
    """Where the pod may run and as whom: the spec's optional pod-level fields, those it sets."""
    fields: dict[str, Any] = {
        "nodeSelector": dict(opts.node_selector) if opts.node_selector else None,
        "tolerations": [t.model_dump(by_alias=True, exclude_none=True) for t in opts.tolerations]
        if opts.tolerations
        else None,
        "affinity": opts.affinity or None,
        "runtimeClassName": opts.runtime_class_name or None,
        "imagePullSecrets": [{"name": s} for s in opts.image_pull_secrets]
        if opts.image_pull_secrets
        else None,
        "serviceAccountName": opts.service_account or None,
    }
    return {key: value for key, value in fields.items() if value is not None}


def _container(
    opts: KubernetesBackend, plan: LaunchPlan, *, image: str, secret_name: str | None, probes: bool
) -> dict[str, Any]:
    health = plan.health_paths[0] if plan.health_paths else "/health"
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": image,
        "args": list(plan.container_args),
        "ports": [{"containerPort": plan.port, "name": "http", "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": health, "port": "http"},
            "periodSeconds": 5 if not probes else 10,
            "failureThreshold": 3,
        },
        "volumeMounts": [],  # filled by pod_spec, with the volumes
    }
    if probes:
        container["startupProbe"] = {
            "httpGet": {"path": health, "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": max(1, int(opts.startup_timeout // 10)),
        }
    env = _env(plan, secret_name)
    if env:
        container["env"] = env
    resources = _resources(opts, plan)
    if resources:
        container["resources"] = resources
    return container


def pod_spec(
    opts: KubernetesBackend,
    plan: LaunchPlan,
    *,
    image: str,
    secret_name: str | None = None,
    files_name: str | None = None,
    restart_policy: str = "Never",
    probes: bool = False,
) -> dict[str, Any]:
    """The pod spec of one engine instance (a Pod's ``spec``, or a Deployment's template's).

    ``probes`` adds the startup probe a long-lived Deployment needs (the experiment backend
    watches start-up itself and must not have the kubelet kill a slow engine).
    """
    container = _container(opts, plan, image=image, secret_name=secret_name, probes=probes)
    volumes = _volumes(opts, plan, files_name)
    container["volumeMounts"] = [mount for _, mount in volumes]
    if files_name is not None:
        container["workingDir"] = WORKDIR
    return {
        "restartPolicy": restart_policy,
        "containers": [container],
        "volumes": [volume for volume, _ in volumes],
        # the engine gets SIGTERM first: vLLM and SGLang free their GPUs cleanly in a few seconds
        "terminationGracePeriodSeconds": 10,
        # a pod of ours has no business with the API server; the daemon talks to it, not the engine
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        **_scheduling(opts),
    }


def _file_key(rel: str) -> str:
    """A ConfigMap key for a relative path (keys may not contain '/')."""
    return rel.replace("/", "__")


class ObjectMeta(TypedDict):
    """The metadata keywords of the namespaced objects built here."""

    name: str
    namespace: str | None
    labels: Mapping[str, str]
    owner: NotRequired[Sequence[Mapping[str, Any]]]


def _v1_object(kind: str, meta: ObjectMeta, **fields: Any) -> dict[str, Any]:
    metadata = _metadata(meta["name"], meta["namespace"], meta["labels"], meta.get("owner", ()))
    return {"apiVersion": "v1", "kind": kind, "metadata": metadata, **fields}


def _metadata(
    name: str, namespace: str | None, labels: Mapping[str, str], owner: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if namespace is not None:
        meta["namespace"] = namespace
    if owner:
        meta["ownerReferences"] = [dict(o) for o in owner]
    return meta


def experiment_pod(
    opts: KubernetesBackend,
    plan: LaunchPlan,
    *,
    name: str,
    image: str,
    labels: Mapping[str, str],
    owner: Sequence[Mapping[str, Any]] = (),
    secret_name: str | None = None,
    files_name: str | None = None,
    restart_policy: str = "Never",
    active_deadline_s: float | None = None,
) -> dict[str, Any]:
    """An experiment's Pod. ``active_deadline_s`` makes the kubelet stop it after that long
    even if no daemon is left to do it (a daemon that died for good must not hold GPUs forever)."""
    spec = pod_spec(
        opts,
        plan,
        image=image,
        secret_name=secret_name,
        files_name=files_name,
        restart_policy=restart_policy,
    )
    if active_deadline_s is not None:
        spec["activeDeadlineSeconds"] = max(1, int(active_deadline_s))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(name, opts.namespace, labels, owner),
        "spec": spec,
    }


def experiment_service(
    opts: KubernetesBackend,
    plan: LaunchPlan,
    *,
    name: str,
    labels: Mapping[str, str],
    selector: Mapping[str, str],
    owner: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(name, opts.namespace, labels, owner),
        "spec": {
            "selector": dict(selector),
            "ports": [{"name": "http", "port": plan.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def files_configmap(plan: LaunchPlan, **meta: Unpack[ObjectMeta]) -> dict[str, Any]:
    return _v1_object(
        "ConfigMap", meta, data={_file_key(rel): content for rel, content in sorted(plan.files.items())}
    )


def secret_env(values: Mapping[str, str], **meta: Unpack[ObjectMeta]) -> dict[str, Any]:
    """A Secret holding the referenced variables' values (``stringData``: the API server encodes)."""
    return _v1_object("Secret", meta, type="Opaque", stringData=dict(values))


def deployment_objects(
    opts: KubernetesBackend, plan: LaunchPlan, *, name: str, image: str
) -> list[dict[str, Any]]:
    """``best/deployment.yaml``: a one-replica Deployment plus its Service (plus the ConfigMap of
    the plan's files, when it has any), with the experiment's pod spec and a startup probe.

    No namespace (``kubectl apply -n`` chooses); secrets are expected in a Secret named
    ``<name>-env``, one key per variable.
    """
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "autotuner"}
    selector = {"app.kubernetes.io/name": name}
    files_name = f"{name}-files" if plan.files else None
    template = {
        "metadata": {"labels": dict(labels)},
        "spec": pod_spec(
            opts,
            plan,
            image=image,
            secret_name=f"{name}-env" if plan.env_from else None,
            files_name=files_name,
            restart_policy="Always",
            probes=True,
        ),
    }
    objects: list[dict[str, Any]] = []
    if files_name is not None:
        objects.append(files_configmap(plan, name=files_name, namespace=None, labels=labels))
    objects.append(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _metadata(name, None, labels),
            "spec": {"replicas": 1, "selector": {"matchLabels": selector}, "template": template},
        }
    )
    service = experiment_service(opts, plan, name=name, labels=labels, selector=selector)
    del service["metadata"]["namespace"]
    objects.append(service)
    return objects
