"""The API objects of one experiment: created in order, leftovers replaced, deleted at teardown.

An experiment is a Secret (its ``fromEnv`` values, when it has any), a ConfigMap (the plan's
files, when it has any), the Pod and a Service, all built by :mod:`backends.deploy.kube_manifests`
and owned by the spec's owner ConfigMap. Rules:

* **Only ours is replaced.** A create that finds the name taken replaces the object only when
  it is a leftover of this spec from another incarnation (:func:`.orphans.leftover_selector`);
  anything else fails the experiment with an ``environment`` error that names it. Secrets are
  never replaced, because the daemon may not read them to tell whose they are.
* **Only what we created is deleted** (or tried to: a create whose answer was lost may still
  have happened); never a foreign object that merely has the name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from backends.deploy import kube_manifests as manifests
from backends.deploy.kubernetes.api import Exists, NotFound
from backends.deploy.kubernetes.orphans import kinds, leftover_selector
from backends.deploy.kubernetes.ownership import L_DEPLOYMENT, L_SPEC
from specs.errors import KubernetesApiError

if TYPE_CHECKING:
    from backends.deploy.kubernetes.deployment import KubernetesDeployment

__all__ = ["ExperimentObjects"]


class ExperimentObjects:
    """The objects of one deployment, and which kinds of them it created (or tried to)."""

    def __init__(self, dep: KubernetesDeployment, secrets: Mapping[str, str]) -> None:
        self._dep = dep
        self._backend = dep._backend
        self._api = dep._backend.api
        self._ns = dep._backend.namespace
        self._secret_env = dict(secrets)
        self.secret_name = f"{dep.name}-env" if secrets else None
        self.files_name = f"{dep.name}-files" if dep.plan.files else None
        #: kinds of objects this deployment created or tried to (teardown deletes only those)
        self.attempted: set[str] = set()

    def create(self, image: str) -> dict[str, Any]:
        """Secret, ConfigMap, Pod and Service; the pod as created. Raises the API's errors."""
        dep, backend, core = self._dep, self._backend, self._api.core
        owner = backend.ownership.owner_refs()
        if self.secret_name is not None:
            secret = manifests.secret_env(self._secret_env, **self._meta(self.secret_name, owner))
            self._create_one("secrets", core.create_namespaced_secret, core.delete_namespaced_secret, secret)
        if self.files_name is not None:
            cm = manifests.files_configmap(dep.plan, **self._meta(self.files_name, owner))
            self._create_one(
                "configmaps", core.create_namespaced_config_map, core.delete_namespaced_config_map, cm
            )
        pod = manifests.experiment_pod(
            backend.settings,
            dep.plan,
            name=dep.name,
            image=image,
            labels=dep.labels,
            owner=owner,
            secret_name=self.secret_name,
            files_name=self.files_name,
            restart_policy=backend.restart_policy,
            active_deadline_s=backend.active_deadline_s,
        )
        dep._log_line(
            f"creating pod {self._ns}/{dep.name} (image {image}, "
            f"{dep.plan.gpus if not dep.plan.simulated else 0} x {backend.settings.gpu_resource}): "
            + " ".join(dep.plan.container_args)
        )
        created = self._create_one("pods", core.create_namespaced_pod, core.delete_namespaced_pod, pod)
        service = manifests.experiment_service(
            backend.settings,
            dep.plan,
            name=dep.name,
            labels=dep.labels,
            selector={L_DEPLOYMENT: dep.name},
            owner=owner,
        )
        self._create_one("services", core.create_namespaced_service, core.delete_namespaced_service, service)
        return created

    def _meta(self, name: str, owner: list[dict[str, Any]]) -> manifests.ObjectMeta:
        return {"name": name, "namespace": self._ns, "labels": self._dep.labels, "owner": owner}

    def delete(self, grace_s: float) -> None:
        """Delete what this deployment created; wait until its pod is gone (its GPUs free)."""
        core, name = self._api.core, self._dep.name
        grace = max(1, round(grace_s))
        deletions: list[tuple[str, Callable[..., Any], str | None, dict[str, Any]]] = [
            ("pods", core.delete_namespaced_pod, name, {"grace_period_seconds": grace}),
            ("services", core.delete_namespaced_service, name, {}),
            ("secrets", core.delete_namespaced_secret, self.secret_name, {}),
            ("configmaps", core.delete_namespaced_config_map, self.files_name, {}),
        ]
        for resource, fn, obj_name, kwargs in deletions:
            if obj_name is None or resource not in self.attempted:
                continue
            with contextlib.suppress(NotFound):
                self._api.call("delete", resource, self._ns, fn, obj_name, self._ns, **kwargs)
        if "pods" in self.attempted and not self._backend.wait_gone(name):
            self._dep._log_line(
                f"pod {name} was still there {self._backend.kill_wait_s:g} s after its deletion"
            )

    def _create_one(
        self, resource: str, create: Callable[..., Any], delete: Callable[..., Any], body: dict[str, Any]
    ) -> dict[str, Any]:
        """Create; a leftover of *ours* under the same name (a dead incarnation's) is replaced."""
        try:
            self.attempted.add(resource)
            return dict(self._api.call("create", resource, self._ns, create, self._ns, body))
        except Exists:
            self.attempted.discard(resource)
        name = body["metadata"]["name"]
        if not self._is_our_leftover(resource, name):
            raise KubernetesApiError(
                f"{resource} {name} already exists in namespace {self._ns} and is not a leftover of "
                "this spec's experiments; it was left alone",
                hint="delete it, or run the spec in another namespace",
            )
        self._dep._log_line(f"{resource} {name} exists (left by an earlier run); replacing it")
        with contextlib.suppress(NotFound):
            self._api.call("delete", resource, self._ns, delete, name, self._ns)
        if resource == "pods":
            self._backend.wait_gone(name)
        self.attempted.add(resource)
        return dict(self._api.call("create", resource, self._ns, create, self._ns, body, conflict_retry=True))

    def _is_our_leftover(self, resource: str, name: str) -> bool:
        listers = {r: lister for r, lister, _ in kinds(self._api)}
        if resource not in listers:
            return False
        labels = self._backend.base_labels()
        found = self._api.call(
            "list",
            resource,
            self._ns,
            listers[resource],
            self._ns,
            label_selector=leftover_selector(labels[L_SPEC], self._backend.incarnation),
            field_selector=f"metadata.name={name}",
        )
        return bool((found or {}).get("items"))
