"""The kubernetes backend object: settings, credentials, identity, deploy checks, orphan cleanup.

* **The cluster schedules GPUs, not us.** :attr:`KubernetesBackend.schedules_gpus` tells the
  experiment runner to take no GPU lease; the pod requests ``plan.gpus`` of ``gpuResource`` and
  the device plugin picks the devices. How many experiments run at once is bounded by
  ``search.parallelism`` (the study's threads) and then by what the cluster can place: a pod that
  does not fit waits ``Pending`` like any other workload.
* **Identity.** ``daemon_id`` names this daemon across restarts (stored once in the state
  directory); the incarnation (random, one per backend object) names this process. Both are
  labels of everything it creates (:mod:`.ownership`).
* **Environment.** The engine gets the plan's ``env`` and nothing of the daemon's environment;
  ``env_from`` values are read from the daemon's environment at deploy time into a Secret owned
  by the experiment's owner and referenced with ``secretKeyRef``. Values never go into labels,
  annotations, the Pod, or the log (they are redacted from tails).
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from backends.deploy.kubernetes.api import Api, RetryPolicy, load_client, running_in_cluster
from backends.deploy.kubernetes.deployment import KubernetesDeployment
from backends.deploy.kubernetes.orphans import delete_orphans, leftover_selector, wait_gone
from backends.deploy.kubernetes.ownership import (
    L_DAEMON,
    L_INCARNATION,
    L_SPEC,
    MANAGED_BY,
    Held,
    OwnerLease,
    check_labels,
    label_value,
)
from backends.deploy.shared import DEFAULT_TAIL_LINES, BackendCore, DeployRequest
from backends.engines.base import LaunchPlan
from core import atomic
from specs.errors import UserError
from specs.model import KubernetesBackend as KubernetesSettings
from specs.policy import Policy

__all__ = ["KubernetesBackend"]

log = logging.getLogger(__name__)


class KubernetesBackend(BackendCore[KubernetesDeployment]):
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
            api_client = load_client(kubeconfig, context, in_cluster)
        self.api = Api(api_client, retry or RetryPolicy())
        self.in_cluster = running_in_cluster() if in_cluster is None else in_cluster
        self.access = settings.access
        if self.access == "auto":
            self.access = "service" if self.in_cluster else "portForward"
        self.daemon_id = label_value(daemon_id or self._stored_daemon_id())
        self.incarnation = uuid.uuid4().hex[:16]
        self.environ = environ
        self.policy = policy
        self.allow_host_paths = tuple(allow_host_paths)
        self.grace_s = grace_s
        self.kill_wait_s = kill_wait_s
        self.poll_interval_s = poll_interval_s
        self.probe_timeout_s = probe_timeout_s
        self.restart_policy = restart_policy
        self.tail_lines = tail_lines
        self.active_deadline_s = active_deadline_s
        #: set when this backend stops (teardown_all): the heartbeat ends with it
        self._stop = threading.Event()
        self.ownership = OwnerLease(
            self.api,
            namespace=self.namespace,
            spec_name=spec_name,
            daemon_id=self.daemon_id,
            incarnation=self.incarnation,
            heartbeat_s=heartbeat_s,
            heartbeat_ttl_s=heartbeat_ttl_s,
            stop=self._stop,
        )
        self.owner_name = self.ownership.name
        self._init_registry()

    # ---------------------------------------------------------------------------- public

    def cleanup_orphans(self) -> list[str]:
        """Delete what dead earlier daemons left of this spec; their deployment names.

        Raises :class:`specs.errors.KubernetesAccessError` when the account lacks a permission it needs.
        """
        try:
            owner = self.ownership.take()
        except Held as held:
            log.warning("%s is held by live daemon %s; leaving its pods alone", self.owner_name, held)
            return []
        selector = leftover_selector(label_value(self.spec_name), self.incarnation)
        removed = delete_orphans(self.api, self.namespace, selector)
        for name in removed:
            self.wait_gone(name)
        self.ownership.uid = owner
        self.ownership.start_heartbeat()
        return removed

    def teardown_all(self) -> None:
        """Tear down every live deployment and stop the heartbeat (end of a session; never raises)."""
        super().teardown_all()
        self._stop.set()

    def base_labels(self) -> dict[str, str]:
        return {
            **MANAGED_BY,
            L_SPEC: label_value(self.spec_name),
            L_DAEMON: self.daemon_id,
            L_INCARNATION: self.incarnation,
        }

    def wait_gone(self, name: str) -> bool:
        """Whether pod ``name`` is gone within ``kill_wait_s``."""
        return wait_gone(
            self.api, self.namespace, name, timeout_s=self.kill_wait_s, poll_s=self.poll_interval_s
        )

    # --------------------------------------------------------------------------- private

    def _check_gpus(self, plan: LaunchPlan, name: str, gpu_ids: Sequence[int]) -> None:
        if gpu_ids:
            raise ValueError(
                f"deployment {name}: GPU ids {list(gpu_ids)} were leased, but on Kubernetes the cluster "
                "picks the GPUs (take no lease: backend.schedules_gpus)"
            )

    def _check_request(self, plan: LaunchPlan, name: str, labels: Mapping[str, str]) -> None:
        check_labels(labels)
        host_path = self.settings.model_cache_host_path
        if host_path is not None and not any(
            host_path == p or host_path.startswith(p.rstrip("/") + "/") for p in self.allow_host_paths
        ):
            raise UserError(
                f"the spec mounts the node directory {host_path} (modelCacheHostPath), "
                "which this daemon does not allow",
                hint="allow it with AUTOTUNER_KUBERNETES_HOST_PATHS on the daemon, or use modelCachePvc",
            )

    def _new_deployment(self, request: DeployRequest) -> KubernetesDeployment:
        return KubernetesDeployment(self, request)

    def _launch(self, dep: KubernetesDeployment) -> None:
        self.ownership.start_heartbeat()
        dep._create()

    def _stored_daemon_id(self) -> str:
        path = self.state_dir / "kubernetes-daemon-id"
        try:
            return path.read_text().strip()
        except OSError:
            value = f"{socket.gethostname()[:40]}-{uuid.uuid4().hex[:8]}"
            atomic.write_text(path, value + "\n")
            return value
