"""The kubernetes backend: every experiment a Pod (plus a Service), scheduled by the cluster.

``pip install 'autotuner[kubernetes]'``; the official ``kubernetes`` client is imported only when
a spec selects this backend. The manifests come from :mod:`backends.deploy.kube_manifests`, the
same builder that writes ``best/deployment.yaml``.

Design decisions, and why:

* **The cluster schedules GPUs, not us.** :attr:`KubernetesBackend.schedules_gpus` tells the
  experiment runner to take no GPU lease; the pod requests ``plan.gpus`` of ``gpuResource`` and
  the device plugin picks the devices. How many experiments run at once is bounded by
  ``search.parallelism`` (the study's threads) and then by what the cluster can place: a pod that
  does not fit waits ``Pending`` like any other workload.
* **Ownership is one label query.** Everything an experiment creates carries
  ``autotuner.dev/spec``, ``autotuner.dev/deployment``, ``autotuner.dev/daemon`` and
  ``autotuner.dev/incarnation`` labels and an ``ownerReference`` to one ConfigMap per spec
  (``autotuner-<spec>``), so deleting that ConfigMap deletes the rest (the garbage collector),
  and orphans are found with one ``labelSelector``.
* **Who is alive** is written in the owner ConfigMap: the incarnation (one per backend object,
  i.e. per daemon process) holding it and when it last renewed (a heartbeat thread, every
  ``heartbeat_s``). ``cleanup_orphans`` takes the owner over, with a ``resourceVersion``
  precondition so two daemons cannot both win (409), when the holder is this daemon's own
  earlier incarnation (a restart: the old process is dead by construction) or its heartbeat is
  older than ``heartbeat_ttl_s``; then it deletes every object of the spec from another
  incarnation. A live daemon's pods are never touched.
* **API errors** are retried with exponential backoff (409 Conflict, 429 with ``Retry-After``,
  5xx, connection errors); 401/403 are not: they become an ``environment`` failure that names
  the verb and resource the daemon's account lacks (``create pods in namespace x``).
* **Failures from the pod, words from the events.** ``ImagePullBackOff``/``ErrImagePull`` →
  ``image_unavailable``; ``Unschedulable`` for longer than ``schedulingTimeout`` →
  ``unschedulable`` (the start-up timeout runs from when the pod is scheduled, so a pod queued
  behind others for GPUs is not a slow engine); ``OOMKilled`` → ``oom``; an exit or
  ``CrashLoopBackOff`` before ready → ``startup_crash``, after → ``crashed``; the log patterns
  of :func:`classify_failure` still win (an engine that reports CUDA OOM and exits 1 is
  ``oom``). The message quotes the pod's events (``0/3 nodes are available: 3 Insufficient
  nvidia.com/gpu.``).
* **Reaching the engine** (``access``): the Service's DNS name when the daemon runs in the
  cluster, the API server's port-forward when it runs outside (a local listener whose every
  connection is a ``portforward`` stream of the client, on a client of its own: the client's
  streaming swaps methods of the ``ApiClient`` it runs on), or the pod IP (flat networks).
* **Environment.** The engine gets the plan's ``env`` and nothing of the daemon's environment;
  ``env_from`` values are read from the daemon's environment at deploy time into a Secret owned
  by the experiment's owner and referenced with ``secretKeyRef``. Values never go into labels,
  annotations, the Pod, or the log (they are redacted from tails).
* **Logs** are followed (``pods/log?follow=true``) into ``log_path`` by a thread, so the file is
  the same shape as the local backend's and outlives the pod.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from backends.deploy import kube_manifests as manifests
from backends.deploy.base import (
    DeployCancelled,
    EngineFailure,
    ExitInfo,
    FailureKind,
    check_name,
    classify_failure,
    redact,
    secret_values,
)
from backends.deploy.environment import engine_environment
from backends.engines.base import LaunchPlan
from core import atomic
from core.redact import Redactor
from specs.errors import (
    KubernetesAccessError,
    KubernetesApiError,
    MissingExtraError,
    UserError,
)
from specs.model import KubernetesBackend as KubernetesSettings
from specs.policy import Policy

__all__ = ["KubernetesBackend", "KubernetesDeployment", "RetryPolicy"]

log = logging.getLogger(__name__)

DEFAULT_TAIL_LINES = 60
MANAGED_BY = {"app.kubernetes.io/managed-by": "autotuner"}
L_SPEC = "autotuner.dev/spec"
L_DEPLOYMENT = "autotuner.dev/deployment"
L_DAEMON = "autotuner.dev/daemon"
L_INCARNATION = "autotuner.dev/incarnation"
A_HOLDER = "autotuner.dev/holder"
A_HOLDER_DAEMON = "autotuner.dev/holder-daemon"
A_RENEWED = "autotuner.dev/renewed"

IMAGE_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
CONFIG_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")


class _NotFound(Exception):
    pass


class _Exists(Exception):
    pass


class RetryPolicy:
    """Exponential backoff for the API's transient answers."""

    def __init__(self, attempts: int = 6, base_s: float = 0.2, cap_s: float = 5.0) -> None:
        self.attempts = attempts
        self.base_s = base_s
        self.cap_s = cap_s

    def delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.cap_s)
            except ValueError:
                pass
        return min(self.base_s * 2**attempt, self.cap_s)


def _load_client(kubeconfig: str | None, context: str | None, in_cluster: bool | None) -> Any:
    """An ``ApiClient`` from in-cluster credentials or the kubeconfig (``KUBECONFIG``, context).

    urllib3's own retries are turned off: :class:`_Api` retries with backoff where that is
    right, and urllib3 would also repeat a watch whose read timed out on purpose (four times
    the wait before a cancel or a deadline is noticed).
    """
    try:
        from kubernetes import client, config
    except ImportError:
        raise MissingExtraError("kubernetes", "kubernetes") from None
    if in_cluster is None:
        in_cluster = kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ
    configuration = client.Configuration()
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
    except config.ConfigException as exc:
        raise UserError(
            f"no usable Kubernetes configuration: {exc}",
            hint="set KUBECONFIG (and AUTOTUNER_KUBE_CONTEXT for a context other than the current one), "
            "or run the daemon in the cluster with a service account (deploy/kubernetes/)",
        ) from None
    configuration.retries = False
    return client.ApiClient(configuration)


def running_in_cluster() -> bool:
    return "KUBERNETES_SERVICE_HOST" in os.environ


class _Api:
    """The few calls the backend makes, with retries and errors in our terms; dicts in and out."""

    def __init__(self, api_client: Any, retry: RetryPolicy) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.retry = retry
        self._exc: type[Exception] = client.ApiException

    def call(
        self,
        verb: str,
        resource: str,
        namespace: str,
        fn: Callable[..., Any],
        *args: Any,
        conflict_retry: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Call ``fn`` and parse its JSON answer; ``None`` for a body-less answer."""
        kwargs.setdefault("_preload_content", False)
        last = ""
        for attempt in range(self.retry.attempts):
            try:
                resp = fn(*args, **kwargs)
                data = resp.data
                return json.loads(data) if data else None
            except self._exc as exc:
                status = getattr(exc, "status", 0) or 0
                message = _status_message(exc)
                if status == 404:
                    raise _NotFound(message) from None
                if status in (401, 403):
                    raise KubernetesAccessError(
                        f"the daemon's Kubernetes account may not {verb} {resource} in namespace {namespace} "
                        f"(HTTP {status}): {message}",
                        hint=f"grant '{verb}' on '{resource}' to the daemon's service account "
                        "(deploy/kubernetes/rbac.yaml has the minimal Role), or fix the credentials",
                    ) from None
                if status == 409 and not conflict_retry:
                    raise _Exists(message) from None
                if status not in (409, 429) and not 500 <= status <= 599:
                    raise KubernetesApiError(
                        f"{verb} {resource} in namespace {namespace} failed (HTTP {status}): {message}",
                        status=status,
                        hint="the API server refused the request (an admission policy or quota of the "
                        "cluster, or a bug of autotuner); the message says which",
                    ) from None
                headers = getattr(exc, "headers", None) or {}
                delay = self.retry.delay(
                    attempt, headers.get("Retry-After") if hasattr(headers, "get") else None
                )
                last = f"HTTP {status}: {message}"
            except (OSError, _urllib3_errors()) as exc:
                delay = self.retry.delay(attempt, None)
                last = f"{type(exc).__name__}: {exc}"
            log.info("kubernetes %s %s: %s; retrying in %.2fs", verb, resource, last, delay)
            time.sleep(delay)
        raise KubernetesApiError(
            f"{verb} {resource} in namespace {namespace} still failed after "
            f"{self.retry.attempts} tries ({last})"
        )


def _urllib3_errors() -> type[Exception]:
    import urllib3

    return urllib3.exceptions.HTTPError


def _status_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if body:
        try:
            text = body.decode() if isinstance(body, bytes) else str(body)
            return str(json.loads(text).get("message") or text)[:500]
        except (ValueError, AttributeError):
            return str(body)[:500]
    return str(getattr(exc, "reason", exc))


def _check_labels(labels: Mapping[str, str]) -> None:
    for key, value in labels.items():
        if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            raise ValueError(f"label {key}={value!r} is not a valid Kubernetes label")


def _label_value(text: str) -> str:
    """``text`` as a valid label value (at most 63 characters of ``[-A-Za-z0-9_.]``)."""
    cleaned = re.sub(r"[^-A-Za-z0-9_.]", "-", text)[:63].strip("-_.")
    return cleaned or "x"


class KubernetesBackend:
    """Deploys engines as pods of a cluster. Thread safe; one per (spec, settings) in a session.

    ``settings`` is the spec's ``backend`` block; ``spec_name`` names the owner ConfigMap and the
    ``autotuner.dev/spec`` label. ``daemon_id`` identifies this daemon across restarts (default:
    stored once in ``state_dir/kubernetes-daemon-id``). Credentials: ``api_client`` when given
    (tests), else in-cluster when ``in_cluster`` (default: when running in a pod and no
    ``kubeconfig`` is given), else the kubeconfig (``kubeconfig`` or ``KUBECONFIG``) and
    ``context``. ``environ`` is where ``plan.env_from`` references are read (default: this
    process's environment). ``allow_host_paths`` lists node directories a spec may mount as
    ``modelCacheHostPath`` (none by default: a spec repository is untrusted input).
    ``active_deadline_s`` is the pods' ``activeDeadlineSeconds``: the kubelet stops a pod after
    that long even when no daemon is left to delete it.
    """

    kind = "kubernetes"
    #: the cluster's scheduler and device plugin pick GPUs: the runner takes no lease
    schedules_gpus = True
    #: the engine must listen on the pod's network, not its loopback
    bind_host = "0.0.0.0"

    def __init__(
        self,
        settings: KubernetesSettings,
        *,
        spec_name: str,
        state_dir: Path,
        api_client: Any = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        in_cluster: bool | None = None,
        daemon_id: str | None = None,
        environ: Mapping[str, str] | None = None,
        policy: Policy | None = None,
        allow_host_paths: Sequence[str] = (),
        retry: RetryPolicy | None = None,
        grace_s: float = 10.0,
        kill_wait_s: float = 60.0,
        poll_interval_s: float = 0.5,
        probe_timeout_s: float = 2.0,
        heartbeat_s: float = 10.0,
        heartbeat_ttl_s: float = 45.0,
        restart_policy: str = "Never",
        tail_lines: int = DEFAULT_TAIL_LINES,
        active_deadline_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.namespace = settings.namespace
        self.spec_name = spec_name
        self.state_dir = Path(state_dir)
        if api_client is None:
            api_client = _load_client(kubeconfig, context, in_cluster)
        self.api = _Api(api_client, retry or RetryPolicy())
        self.in_cluster = running_in_cluster() if in_cluster is None else in_cluster
        self.access = settings.access
        if self.access == "auto":
            self.access = "service" if self.in_cluster else "portForward"
        self.daemon_id = _label_value(daemon_id or self._stored_daemon_id())
        self.incarnation = uuid.uuid4().hex[:16]
        self.environ = environ
        self.policy = policy
        self.allow_host_paths = tuple(allow_host_paths)
        self.grace_s = grace_s
        self.kill_wait_s = kill_wait_s
        self.poll_interval_s = poll_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.heartbeat_s = heartbeat_s
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.restart_policy = restart_policy
        self.tail_lines = tail_lines
        self.active_deadline_s = active_deadline_s
        self.owner_name = f"autotuner-{spec_name}"[:63].rstrip("-")
        self._owner_uid: str | None = None
        self._names: dict[str, KubernetesDeployment] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    # ---------------------------------------------------------------------------- public

    def deploy(
        self,
        plan: LaunchPlan,
        *,
        name: str,
        gpu_ids: Sequence[int],
        log_path: Path,
        labels: Mapping[str, str],
    ) -> KubernetesDeployment:
        """Create the experiment's objects and return; see :class:`~backends.deploy.base.DeployBackend`."""
        check_name(name)
        if gpu_ids:
            raise ValueError(
                f"deployment {name}: GPU ids {list(gpu_ids)} were leased, but on Kubernetes the cluster "
                "picks the GPUs (take no lease: backend.schedules_gpus)"
            )
        for rel in plan.files:
            path = PurePosixPath(rel)
            if not rel or path.is_absolute() or ".." in path.parts:
                raise ValueError(
                    f"deployment {name}: file {rel!r} must be a relative path inside the working directory"
                )
        _check_labels(labels)
        if self.settings.model_cache_host_path is not None and not any(
            self.settings.model_cache_host_path == p
            or self.settings.model_cache_host_path.startswith(p.rstrip("/") + "/")
            for p in self.allow_host_paths
        ):
            raise UserError(
                f"the spec mounts the node directory {self.settings.model_cache_host_path} "
                "(modelCacheHostPath), "
                "which this daemon does not allow",
                hint="allow it with AUTOTUNER_KUBERNETES_HOST_PATHS on the daemon, or use modelCachePvc",
            )
        # built from nothing (docs/security.md): no host setup variables (they describe the
        # daemon's host, not the image), no CUDA_VISIBLE_DEVICES (the device plugin assigns GPUs);
        # fromEnv values go into the experiment's Secret, never into the pod spec
        env = engine_environment(
            spec_env=plan.env,
            references=plan.env_from,
            gpu_ids=None,
            daemon_env=os.environ if self.environ is None else self.environ,
            policy=self.policy,
            setup=False,
        )
        secrets = {target: env.pop(target) for target in plan.env_from}
        plan = dataclasses.replace(plan, env=env)
        with self._lock:
            if name in self._names:
                raise ValueError(f"deployment {name} is already running in this process")
            dep = KubernetesDeployment(
                self, plan, name=name, log_path=Path(log_path), labels=labels, secrets=secrets
            )
            self._names[name] = dep
        self._start_heartbeat()
        dep._create()
        return dep

    def cleanup_orphans(self) -> list[str]:
        """Delete what dead earlier daemons left of this spec; their deployment names.

        Raises :class:`KubernetesAccessError` when the account lacks a permission it needs.
        """
        try:
            owner = self._take_owner()
        except _Held as held:
            log.warning("%s is held by live daemon %s; leaving its pods alone", self.owner_name, held)
            return []
        # "k!=v" also matches objects without k: the owner ConfigMap has no incarnation and must stay
        selector = (
            f"{L_SPEC}={_label_value(self.spec_name)},{L_INCARNATION},{L_INCARNATION}!={self.incarnation}"
        )
        removed: set[str] = set()
        names: set[str] = set()
        for resource, lister, deleter in self._kinds():
            items = self.api.call(
                "list", resource, self.namespace, lister, self.namespace, label_selector=selector
            )
            for item in (items or {}).get("items") or []:
                meta = item["metadata"]
                with contextlib.suppress(_NotFound):
                    self.api.call("delete", resource, self.namespace, deleter, meta["name"], self.namespace)
                name = (meta.get("labels") or {}).get(L_DEPLOYMENT, meta["name"])
                names.add(name)
                if resource == "pods":
                    removed.add(name)
        # Secrets by name, not by a list: "list secrets" would let the daemon read every Secret of
        # the namespace, and the minimal Role does not grant it
        core = self.api.core
        for name in sorted(names):
            with contextlib.suppress(_NotFound):
                self.api.call(
                    "delete",
                    "secrets",
                    self.namespace,
                    core.delete_namespaced_secret,
                    f"{name}-env",
                    self.namespace,
                )
        for name in removed:
            self._wait_gone(name)
        self._owner_uid = owner
        self._start_heartbeat()
        return sorted(removed)

    def live(self) -> list[KubernetesDeployment]:
        with self._lock:
            return list(self._names.values())

    def teardown_all(self) -> None:
        """Tear down every live deployment and stop the heartbeat (end of a session; never raises)."""
        deps = self.live()
        threads = [threading.Thread(target=d.teardown) for d in deps]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self._stop.set()

    # --------------------------------------------------------------------------- private

    def _stored_daemon_id(self) -> str:
        path = self.state_dir / "kubernetes-daemon-id"
        try:
            return path.read_text().strip()
        except OSError:
            value = f"{socket.gethostname()[:40]}-{uuid.uuid4().hex[:8]}"
            atomic.write_text(path, value + "\n")
            return value

    def _kinds(self) -> list[tuple[str, Callable[..., Any], Callable[..., Any]]]:
        core = self.api.core
        return [
            ("pods", core.list_namespaced_pod, core.delete_namespaced_pod),
            ("services", core.list_namespaced_service, core.delete_namespaced_service),
            ("configmaps", core.list_namespaced_config_map, core.delete_namespaced_config_map),
        ]

    def base_labels(self) -> dict[str, str]:
        return {
            **MANAGED_BY,
            L_SPEC: _label_value(self.spec_name),
            L_DAEMON: self.daemon_id,
            L_INCARNATION: self.incarnation,
        }

    def owner_refs(self) -> list[dict[str, Any]]:
        uid = self._ensure_owner()
        return [{"apiVersion": "v1", "kind": "ConfigMap", "name": self.owner_name, "uid": uid}]

    def _holder_annotations(self) -> dict[str, str]:
        return {
            A_HOLDER: self.incarnation,
            A_HOLDER_DAEMON: self.daemon_id,
            A_RENEWED: f"{time.time():.3f}",
        }

    def _ensure_owner(self) -> str:
        if self._owner_uid is not None:
            return self._owner_uid
        try:
            uid = self._take_owner()
        except _Held:
            # another live daemon holds this spec: deploy anyway (its pods are not ours to touch,
            # ours carry our incarnation); the owner object is shared
            obj = self.api.call(
                "get",
                "configmaps",
                self.namespace,
                self.api.core.read_namespaced_config_map,
                self.owner_name,
                self.namespace,
            )
            uid = obj["metadata"]["uid"]
        self._owner_uid = uid
        return uid

    def _take_owner(self) -> str:
        """Become the holder of the owner ConfigMap (created if missing); its uid.

        Raises :class:`_Held` when another daemon's incarnation holds it with a fresh heartbeat.
        """
        core = self.api.core
        for _ in range(5):
            try:
                obj = self.api.call(
                    "get",
                    "configmaps",
                    self.namespace,
                    core.read_namespaced_config_map,
                    self.owner_name,
                    self.namespace,
                )
            except _NotFound:
                body = {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": self.owner_name,
                        "namespace": self.namespace,
                        "labels": {**MANAGED_BY, L_SPEC: _label_value(self.spec_name)},
                        "annotations": self._holder_annotations(),
                    },
                    "data": {"spec": self.spec_name},
                }
                try:
                    created = self.api.call(
                        "create",
                        "configmaps",
                        self.namespace,
                        core.create_namespaced_config_map,
                        self.namespace,
                        body,
                    )
                    return str(created["metadata"]["uid"])
                except _Exists:
                    continue
            meta = obj["metadata"]
            notes = meta.get("annotations") or {}
            holder = notes.get(A_HOLDER)
            if holder == self.incarnation:
                return str(meta["uid"])
            renewed = float(notes.get(A_RENEWED) or 0)
            fresh = time.time() - renewed < self.heartbeat_ttl_s
            if holder and fresh and notes.get(A_HOLDER_DAEMON) != self.daemon_id:
                raise _Held(notes.get(A_HOLDER_DAEMON) or holder)
            patch = {
                "metadata": {
                    "resourceVersion": meta["resourceVersion"],
                    "annotations": self._holder_annotations(),
                }
            }
            try:
                self.api.call(
                    "patch",
                    "configmaps",
                    self.namespace,
                    core.patch_namespaced_config_map,
                    self.owner_name,
                    self.namespace,
                    patch,
                    _content_type="application/merge-patch+json",
                )
                return str(meta["uid"])
            except _Exists:  # 409: someone changed it between our read and write; read again
                continue
        raise KubernetesApiError(f"could not take over {self.owner_name}: it kept changing")

    def _start_heartbeat(self) -> None:
        with self._lock:
            if self._heartbeat is not None:
                return
            self._heartbeat = threading.Thread(
                target=self._beat, name=f"k8s-heartbeat-{self.spec_name}", daemon=True
            )
            self._heartbeat.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                patch = {"metadata": {"annotations": self._holder_annotations()}}
                obj = self.api.call(
                    "get",
                    "configmaps",
                    self.namespace,
                    self.api.core.read_namespaced_config_map,
                    self.owner_name,
                    self.namespace,
                )
                if (obj["metadata"].get("annotations") or {}).get(A_HOLDER) not in (None, self.incarnation):
                    continue  # another daemon took over (we were presumed dead): don't fight
                self.api.call(
                    "patch",
                    "configmaps",
                    self.namespace,
                    self.api.core.patch_namespaced_config_map,
                    self.owner_name,
                    self.namespace,
                    patch,
                    _content_type="application/merge-patch+json",
                    conflict_retry=True,
                )
            except Exception as exc:  # a missed beat is retried at the next one
                log.warning("kubernetes heartbeat for %s failed: %s", self.owner_name, exc)

    def _wait_gone(self, name: str) -> bool:
        deadline = time.monotonic() + self.kill_wait_s
        while time.monotonic() < deadline:
            try:
                self.api.call(
                    "get", "pods", self.namespace, self.api.core.read_namespaced_pod, name, self.namespace
                )
            except _NotFound:
                return True
            except Exception as exc:
                log.warning("waiting for pod %s to go: %s", name, exc)
            time.sleep(min(0.2, self.poll_interval_s))
        return False

    def _forget(self, dep: KubernetesDeployment) -> None:
        with self._lock:
            if self._names.get(dep.name) is dep:
                del self._names[dep.name]


class _Held(Exception):
    pass


class KubernetesDeployment:
    """One experiment's pod (see :class:`~backends.deploy.base.Deployment` for the contract)."""

    def __init__(
        self,
        backend: KubernetesBackend,
        plan: LaunchPlan,
        *,
        name: str,
        log_path: Path,
        labels: Mapping[str, str],
        secrets: Mapping[str, str],
    ) -> None:
        self.name = name
        self.log_path = log_path
        self.plan = plan
        self._backend = backend
        self._api = backend.api
        self._ns = backend.namespace
        self.labels = {**labels, **backend.base_labels(), L_DEPLOYMENT: name}
        self._secret_env = dict(secrets)
        self._secrets = Redactor([*secret_values(plan.env), *secrets.values()]).values
        self.secret_name = f"{name}-env" if secrets else None
        self.files_name = f"{name}-files" if plan.files else None
        self._start_error: EngineFailure | None = None
        #: kinds of objects this deployment created or tried to (teardown deletes only those)
        self._attempted: set[str] = set()
        self._torn_down = threading.Event()
        self._log_lock = threading.Lock()
        self._follower: threading.Thread | None = None
        self._written: dict[int, int] = {}
        self._pod: dict[str, Any] | None = None
        self._last_exit: ExitInfo | None = None
        #: the container's restart count when it became ready (None: not ready yet)
        self._ready_restarts: int | None = None
        self._forwarder: _PortForwarder | None = None
        self._last_probe = "not probed yet"

    # ------------------------------------------------------------------------------ public

    @property
    def base_url(self) -> str:
        port = self.plan.port
        access = self._backend.access
        if access == "service":
            return f"http://{self.name}.{self._ns}.svc:{port}"
        if access == "portForward":
            if self._forwarder is None:
                self._forwarder = _PortForwarder(self._api, self.name, self._ns, port)
            return f"http://127.0.0.1:{self._forwarder.local_port}"
        ip = ((self._pod or {}).get("status") or {}).get("podIP") or "0.0.0.0"
        return f"http://{ip}:{port}"

    def wait_ready(self, timeout_s: float, *, cancel: threading.Event | None = None) -> None:
        # Time spent waiting for the cluster to place the pod (queued behind other pods, a node
        # scaling up) is bounded by schedulingTimeout, not by the start-up timeout: the engine's
        # start-up clock runs from the moment the pod is scheduled.
        started = time.monotonic()
        deadline = started + timeout_s
        scheduling_deadline = started + self._backend.settings.scheduling_timeout
        scheduled = False
        interval = self._backend.poll_interval_s
        while True:
            if self._torn_down.is_set() or (cancel is not None and cancel.is_set()):
                raise DeployCancelled(f"waiting for engine {self.name} was cancelled")
            if self._start_error is not None:
                raise self._start_error
            pod = self._read_pod()
            if pod is None and not self._torn_down.is_set():
                self._join_follower(timeout=1.0)
                raise self._failure_now(
                    "environment",
                    f"pod {self._ns}/{self.name} was deleted by someone else before it was ready",
                )
            if pod is not None:
                self._assess(pod, scheduling_late=time.monotonic() >= scheduling_deadline)
                if _pod_ready(pod) and self._probe():
                    self._ready_restarts = int(_container_status(pod).get("restartCount") or 0)
                    return
                if not scheduled and _pod_scheduled(pod):
                    scheduled = True
                    deadline = time.monotonic() + timeout_s
                elif not scheduled:
                    deadline = max(deadline, time.monotonic() + interval)
            if time.monotonic() >= deadline:
                # the engine still runs: its log streams in as it comes, there is no end to wait for
                raise self._failure_now(
                    "readiness_timeout",
                    f"engine {self.name} was not ready after {timeout_s:g} s ({self._waiting_words(pod)})",
                )
            waiter = cancel if cancel is not None else self._torn_down
            left = max(0.0, deadline - time.monotonic())
            if pod is not None and not _pod_ready(pod):
                # a watch wakes us at the pod's next change; short, so that cancel stays prompt
                self._watch_change(pod, min(1.0, max(0.2, 2 * interval), left))
            else:
                waiter.wait(min(interval, left))

    def alive(self) -> bool:
        if self._torn_down.is_set():
            return False
        pod = self._read_pod(quiet=True)
        if pod is None:
            return False
        cs = _container_status(pod)
        # a restart after ready (restartPolicy OnFailure) is a crash of the engine we measured
        restarted = (
            self._ready_restarts is not None and int(cs.get("restartCount") or 0) > self._ready_restarts
        )
        return "running" in (cs.get("state") or {}) and not restarted

    def exit_info(self) -> ExitInfo | None:
        pod = self._read_pod(quiet=True) if not self._torn_down.is_set() else None
        if pod is not None:
            ended = _terminated(pod)
            if ended is None:
                if self._start_error is not None:
                    return ExitInfo()
                return None
            self._last_exit = _exit_of(ended)
        if self._last_exit is not None:
            return self._last_exit
        if self._torn_down.is_set():
            return ExitInfo(signal=int(signal.SIGTERM))
        return ExitInfo() if self._start_error is not None else None

    def failure(self, kind: FailureKind = "crashed", message: str | None = None) -> EngineFailure:
        pod = self._read_pod(quiet=True)
        self._join_follower()
        if message is None:
            ended = self.exit_info()
            state = ended.describe() if ended is not None else "is still running"
            message = f"engine {self.name} {state}"
        if pod is not None:
            ended_state = _terminated(pod)
            if ended_state is not None and ended_state.get("reason") == "OOMKilled":
                return self._failure_now(
                    "oom", message + " (OOMKilled: the container passed its memory limit)"
                )
        return self._failure_now(kind, message)

    def teardown(self) -> None:
        self._torn_down.set()
        backend = self._backend
        try:
            core = self._api.core
            pod = self._read_pod(quiet=True)
            if pod is not None:
                ended = _terminated(pod)
                if ended is not None:
                    self._last_exit = _exit_of(ended)
            grace = max(1, round(backend.grace_s))
            deletions: list[tuple[str, Callable[..., Any], str | None, dict[str, Any]]] = [
                ("pods", core.delete_namespaced_pod, self.name, {"grace_period_seconds": grace}),
                ("services", core.delete_namespaced_service, self.name, {}),
                ("secrets", core.delete_namespaced_secret, self.secret_name, {}),
                ("configmaps", core.delete_namespaced_config_map, self.files_name, {}),
            ]
            for resource, fn, obj_name, kwargs in deletions:
                # only what this deployment created (or tried to: a create whose answer was lost
                # may still have happened); never a foreign object that merely has the name
                if obj_name is None or resource not in self._attempted:
                    continue
                with contextlib.suppress(_NotFound):
                    self._api.call("delete", resource, self._ns, fn, obj_name, self._ns, **kwargs)
            if "pods" in self._attempted and not backend._wait_gone(self.name):
                self._log_line(
                    f"pod {self.name} was still there {backend.kill_wait_s:g} s after its deletion"
                )
        except Exception:  # never raise from teardown: it runs in finally blocks and at exit
            log.exception("tearing down pod %s failed", self.name)
        finally:
            if self._forwarder is not None:
                self._forwarder.close()
            self._join_follower(timeout=2.0)
            backend._forget(self)

    def log_tail(self, n_lines: int = DEFAULT_TAIL_LINES) -> str:
        from backends.deploy import procs

        return redact(procs.read_tail(self.log_path, n_lines), self._secrets)

    # ---------------------------------------------------------------------------- private

    def _create(self) -> None:
        """Create Secret, ConfigMap, Pod and Service; an API refusal becomes the start error."""
        backend = self._backend
        core = self._api.core
        image = self.plan.image
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if not image:
            self._start_error = EngineFailure(
                "image_unavailable",
                f"engine {self.name} has no container image",
                hint="set spec.engine.image (the kubernetes backend runs the engine from an image)",
            )
            self._log_line(self._start_error.message)
            return
        try:
            owner = backend.owner_refs()
            if self.secret_name is not None:
                secret = manifests.secret_env(
                    self._secret_env,
                    name=self.secret_name,
                    namespace=self._ns,
                    labels=self.labels,
                    owner=owner,
                )
                self._create_one(
                    "secrets", core.create_namespaced_secret, core.delete_namespaced_secret, secret
                )
            if self.files_name is not None:
                cm = manifests.files_configmap(
                    self.plan, name=self.files_name, namespace=self._ns, labels=self.labels, owner=owner
                )
                self._create_one(
                    "configmaps", core.create_namespaced_config_map, core.delete_namespaced_config_map, cm
                )
            pod = manifests.experiment_pod(
                backend.settings,
                self.plan,
                name=self.name,
                image=image,
                labels=self.labels,
                owner=owner,
                secret_name=self.secret_name,
                files_name=self.files_name,
                restart_policy=backend.restart_policy,
                active_deadline_s=backend.active_deadline_s,
            )
            self._log_line(
                f"creating pod {self._ns}/{self.name} (image {image}, "
                f"{self.plan.gpus if not self.plan.simulated else 0} x {backend.settings.gpu_resource}): "
                + " ".join(self.plan.container_args)
            )
            self._pod = self._create_one("pods", core.create_namespaced_pod, core.delete_namespaced_pod, pod)
            service = manifests.experiment_service(
                backend.settings,
                self.plan,
                name=self.name,
                labels=self.labels,
                selector={L_DEPLOYMENT: self.name},
                owner=owner,
            )
            self._create_one(
                "services", core.create_namespaced_service, core.delete_namespaced_service, service
            )
        except KubernetesAccessError as exc:
            self._start_error = EngineFailure("environment", exc.message, hint=exc.hint)
        except KubernetesApiError as exc:
            self._start_error = EngineFailure("environment", exc.message, hint=exc.hint)
        if self._start_error is not None:
            self._log_line(f"cannot start {self.name}: {self._start_error.message}")
            return
        self._follower = threading.Thread(target=self._follow_logs, name=f"k8s-log-{self.name}", daemon=True)
        self._follower.start()

    def _create_one(
        self, resource: str, create: Callable[..., Any], delete: Callable[..., Any], body: dict[str, Any]
    ) -> dict[str, Any]:
        """Create; a leftover of *ours* under the same name (a dead incarnation's) is replaced.

        Anything else of that name is not touched: the experiment fails with an environment
        error that names it. Secrets are never replaced, because the daemon may not read them
        to tell whose they are.
        """
        try:
            self._attempted.add(resource)
            return dict(self._api.call("create", resource, self._ns, create, self._ns, body))
        except _Exists:
            self._attempted.discard(resource)
        name = body["metadata"]["name"]
        if not self._is_our_leftover(resource, name):
            raise KubernetesApiError(
                f"{resource} {name} already exists in namespace {self._ns} and is not a leftover of "
                "this spec's experiments; it was left alone",
                hint="delete it, or run the spec in another namespace",
            )
        self._log_line(f"{resource} {name} exists (left by an earlier run); replacing it")
        with contextlib.suppress(_NotFound):
            self._api.call("delete", resource, self._ns, delete, name, self._ns)
        if resource == "pods":
            self._backend._wait_gone(name)
        self._attempted.add(resource)
        return dict(self._api.call("create", resource, self._ns, create, self._ns, body, conflict_retry=True))

    def _is_our_leftover(self, resource: str, name: str) -> bool:
        listers = {r: lister for r, lister, _ in self._backend._kinds()}
        if resource not in listers:
            return False
        labels = self._backend.base_labels()
        selector = ",".join(
            [
                *(f"{k}={v}" for k, v in MANAGED_BY.items()),
                f"{L_SPEC}={labels[L_SPEC]}",
                L_INCARNATION,
                f"{L_INCARNATION}!={labels[L_INCARNATION]}",
            ]
        )
        found = self._api.call(
            "list",
            resource,
            self._ns,
            listers[resource],
            self._ns,
            label_selector=selector,
            field_selector=f"metadata.name={name}",
        )
        return bool((found or {}).get("items"))

    def _read_pod(self, *, quiet: bool = False) -> dict[str, Any] | None:
        try:
            pod = self._api.call(
                "get", "pods", self._ns, self._api.core.read_namespaced_pod, self.name, self._ns
            )
        except _NotFound:
            return None
        except KubernetesAccessError as exc:
            if quiet:
                return self._pod
            raise EngineFailure("environment", exc.message, hint=exc.hint) from None
        except KubernetesApiError as exc:
            if quiet:
                return self._pod
            raise EngineFailure("environment", exc.message, hint=exc.hint) from None
        self._pod = pod
        return dict(pod)

    def _watch_change(self, pod: dict[str, Any], timeout_s: float) -> None:
        """Block until the pod changes (a watch from its resourceVersion) or ``timeout_s``."""
        if timeout_s <= 0:
            return
        from kubernetes import watch

        w = watch.Watch()
        started = time.monotonic()
        try:
            stream = w.stream(
                self._api.core.list_namespaced_pod,
                self._ns,
                field_selector=f"metadata.name={self.name}",
                resource_version=pod["metadata"]["resourceVersion"],
                # the server's timeout is whole seconds; the client's read timeout ends it on time
                timeout_seconds=max(1, int(timeout_s)),
                _request_timeout=max(0.1, timeout_s),
                deserialize=False,
            )
            for _event in stream:
                break
            stream.close()
        except Exception as exc:  # 410 Gone, a dropped stream, the read timeout: the next GET catches up
            log.debug("watch of pod %s ended: %s", self.name, exc)
            left = timeout_s - (time.monotonic() - started)
            if left > 0:  # failed early (not the timeout): do not spin
                self._torn_down.wait(min(left, self._backend.poll_interval_s))
        finally:
            w.stop()

    def _assess(self, pod: dict[str, Any], *, scheduling_late: bool) -> None:
        """Raise the failure the pod's status shows, if it shows one."""
        status = pod.get("status") or {}
        cs = _container_status(pod)
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason")
        if reason in IMAGE_REASONS:
            raise self._failure_now(
                "image_unavailable",
                f"the image {self.plan.image} of {self.name} cannot be pulled ({reason}): "
                + (self._event_words() or waiting.get("message", "")),
            )
        if reason in CONFIG_REASONS:
            raise self._failure_now(
                "environment",
                f"the container of {self.name} cannot be created ({reason}): {waiting.get('message', '')}",
            )
        ended = state.get("terminated")
        if reason == "CrashLoopBackOff":
            last = (cs.get("lastState") or {}).get("terminated") or {}
            self._join_follower(timeout=1.0)
            kind: FailureKind = "oom" if last.get("reason") == "OOMKilled" else "startup_crash"
            raise self._failure_now(
                kind,
                f"engine {self.name} keeps crashing (CrashLoopBackOff, "
                f"{cs.get('restartCount', 0)} restarts; last "
                f"{_exit_of(last).describe()}{', OOMKilled' if kind == 'oom' else ''}) before it was ready",
                exit_info=_exit_of(last),
            )
        if ended is not None:
            self._join_follower()
            if ended.get("reason") == "OOMKilled":
                raise self._failure_now(
                    "oom", f"engine {self.name} was OOMKilled (passed its memory limit) before it was ready"
                )
            raise self._failure_now(
                "startup_crash",
                f"engine {self.name} {_exit_of(ended).describe()} before it was ready"
                + (
                    f" ({ended['reason']}: {ended.get('message', '')})"
                    if ended.get("reason") not in (None, "Error")
                    else ""
                ),
            )
        if status.get("phase") in ("Failed", "Succeeded"):
            raise self._failure_now(
                "environment",
                f"pod {self.name} ended ({status.get('reason', status.get('phase'))}): "
                + str(status.get("message", "")),
            )
        scheduled = _condition(pod, "PodScheduled")
        if scheduled is not None and scheduled.get("status") == "False" and scheduling_late:
            words = self._event_words("FailedScheduling") or scheduled.get("message", "")
            raise self._failure_now(
                "unschedulable",
                f"pod {self.name} could not be scheduled within "
                f"{self._backend.settings.scheduling_timeout:g} s "
                f"({scheduled.get('reason', 'Unschedulable')}): {words}",
            )

    def _waiting_words(self, pod: dict[str, Any] | None) -> str:
        if pod is None:
            return "the pod is gone"
        if not _pod_ready(pod):
            cond = _condition(pod, "PodScheduled")
            if cond is not None and cond.get("status") == "False":
                return f"still unschedulable: {cond.get('message', '')}"
            return f"pod {((pod.get('status') or {}).get('phase') or 'Pending').lower()}, not Ready"
        return self._last_probe

    def _event_words(self, reason: str | None = None) -> str:
        """The pod's Warning events' messages, latest first (what ``kubectl describe`` shows)."""
        try:
            events = self._api.call(
                "list",
                "events",
                self._ns,
                self._api.core.list_namespaced_event,
                self._ns,
                field_selector=f"involvedObject.name={self.name}",
            )
        except Exception as exc:
            return f"(events unreadable: {exc})"
        items = [
            e
            for e in (events or {}).get("items") or []
            if (reason is None and e.get("type") == "Warning") or e.get("reason") == reason
        ]
        items.sort(key=lambda e: e.get("lastTimestamp") or "", reverse=True)
        words = list(dict.fromkeys(f"{e.get('reason')}: {e.get('message', '')}" for e in items))
        return "; ".join(words[:3])[:600]

    def _probe(self) -> bool:
        import http.client
        from urllib.parse import urlsplit

        url = urlsplit(self.base_url)
        for path in self.plan.health_paths:
            conn = http.client.HTTPConnection(
                url.hostname or "", url.port, timeout=self._backend.probe_timeout_s
            )
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                if not 200 <= resp.status < 300:
                    self._last_probe = f"{path} answered HTTP {resp.status}"
                    return False
            except (OSError, http.client.HTTPException) as exc:
                self._last_probe = f"{path}: {type(exc).__name__}: {exc}"
                return False
            finally:
                conn.close()
        self._last_probe = "ready"
        return True

    def _follow_logs(self) -> None:
        """Append the engine container's output to ``log_path`` as it comes (one stream per start)."""
        core = self._api.core
        while not self._torn_down.is_set():
            pod = self._read_pod(quiet=True)
            if pod is None:
                return
            cs = _container_status(pod)
            instance = int(cs.get("restartCount") or 0)
            state = cs.get("state") or {}
            if "running" not in state and "terminated" not in state:
                self._torn_down.wait(self._backend.poll_interval_s / 2)
                continue
            skip = self._written.get(instance, 0)
            try:
                resp: Any = core.read_namespaced_pod_log(
                    self.name, self._ns, container=manifests.CONTAINER, follow=True, _preload_content=False
                )
                for chunk in resp.stream(4096):
                    if skip:
                        cut = min(skip, len(chunk))
                        chunk, skip = chunk[cut:], skip - cut
                    if chunk:
                        with self._log_lock, open(self.log_path, "ab") as f:
                            f.write(chunk)
                        self._written[instance] = self._written.get(instance, 0) + len(chunk)
            except Exception as exc:  # the pod went, or the stream broke: look again
                log.debug("log stream of %s: %s", self.name, exc)
            pod = self._read_pod(quiet=True)
            if pod is None:
                return
            cs = _container_status(pod)
            if "terminated" in (cs.get("state") or {}) and int(cs.get("restartCount") or 0) == instance:
                return
            self._torn_down.wait(self._backend.poll_interval_s / 2)

    def _join_follower(self, timeout: float = 3.0) -> None:
        follower = self._follower
        if follower is not None and follower is not threading.current_thread():
            follower.join(timeout)

    def _failure_now(
        self, kind: FailureKind, message: str, *, exit_info: ExitInfo | None = None
    ) -> EngineFailure:
        ended = exit_info if exit_info is not None else self.exit_info()
        tail = self.log_tail(self._backend.tail_lines)
        final = (
            classify_failure(_engine_lines(tail), kind)
            if kind not in ("image_unavailable", "unschedulable", "environment")
            else kind
        )
        return EngineFailure(
            final,
            redact(message, self._secrets),
            log_tail=tail,
            exit_code=ended.returncode if ended is not None else None,
        )

    def _log_line(self, text: str) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_lock, open(self.log_path, "a", encoding="utf-8") as f:
            f.write(f"[autotuner {stamp}] {redact(text, self._secrets)}\n")


def _engine_lines(tail: str) -> str:
    """The engine's own lines (ours quote the command line, which must not look like an OOM)."""
    return "\n".join(line for line in tail.splitlines() if not line.startswith("[autotuner "))


def _container_status(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for cs in statuses:
        if cs.get("name") == manifests.CONTAINER:
            return dict(cs)
    return dict(statuses[0]) if statuses else {}


def _terminated(pod: dict[str, Any]) -> dict[str, Any] | None:
    cs = _container_status(pod)
    ended = (cs.get("state") or {}).get("terminated")
    if ended is None and (cs.get("state") or {}).get("waiting", {}).get("reason") == "CrashLoopBackOff":
        ended = (cs.get("lastState") or {}).get("terminated")
    return dict(ended) if ended is not None else None


def _exit_of(terminated: Mapping[str, Any]) -> ExitInfo:
    sig = terminated.get("signal")
    code = terminated.get("exitCode")
    if sig:
        return ExitInfo(signal=int(sig))
    if code is not None and int(code) > 128 and terminated.get("reason") != "Error":
        return ExitInfo(signal=int(code) - 128)
    return ExitInfo(exit_code=int(code) if code is not None else None)


def _condition(pod: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def _pod_scheduled(pod: dict[str, Any]) -> bool:
    cond = _condition(pod, "PodScheduled")
    return cond is not None and cond.get("status") == "True"


def _pod_ready(pod: dict[str, Any]) -> bool:
    cond = _condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


#: ``kubernetes.stream`` patches the client it streams on while it sets a stream up (see below)
_STREAM_LOCK = threading.Lock()


class _PortForwarder:
    """``kubectl port-forward`` in-process: a listener on 127.0.0.1 whose every connection is piped
    through the API server's ``pods/portforward`` subresource (``kubernetes.stream.portforward``).

    ``kubernetes.stream.portforward`` works by swapping the ``call_api`` of the ``ApiClient``
    behind the method it is given for the duration of the call: on the shared client, every
    other thread's request in that window would go out as a WebSocket (and fail). So streams
    use a client of their own, one stream set up at a time (:data:`_STREAM_LOCK`).
    """

    def __init__(self, api: _Api, pod: str, namespace: str, port: int) -> None:
        from kubernetes import client

        self._core = client.CoreV1Api(client.ApiClient(configuration=api.api_client.configuration))
        self._pod = pod
        self._ns = namespace
        self._port = port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.local_port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        threading.Thread(target=self._accept, name=f"k8s-forward-{pod}", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._pipe, args=(conn,), daemon=True).start()

    def _pipe(self, conn: socket.socket) -> None:
        from kubernetes.stream import portforward

        try:
            with _STREAM_LOCK:
                pf = portforward(
                    self._core.connect_get_namespaced_pod_portforward,
                    self._pod,
                    self._ns,
                    ports=str(self._port),
                )
            remote = pf.socket(self._port)
        except Exception as exc:
            log.warning("port-forward to %s/%s:%d failed: %s", self._ns, self._pod, self._port, exc)
            conn.close()
            return

        def copy(src: Any, dst: Any) -> None:
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for s in (src, dst):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        t = threading.Thread(target=copy, args=(remote, conn), daemon=True)
        t.start()
        copy(conn, remote)
        t.join(5)
        conn.close()
        remote.close()
        # the client's proxy thread leaves the WebSocket's socket open when the server closes
        # first (close() is a no-op once it is no longer "connected"); shutdown() closes it
        with contextlib.suppress(Exception):
            pf.websocket.shutdown()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
