"""Whose objects are whose: the labels, and the owner ConfigMap held by the live daemon.

Everything an experiment creates carries ``autotuner.dev/spec``, ``autotuner.dev/deployment``,
``autotuner.dev/daemon`` and ``autotuner.dev/incarnation`` labels and an ``ownerReference`` to
one ConfigMap per spec (``autotuner-<spec>``), so deleting that ConfigMap deletes the rest (the
garbage collector), and orphans are found with one ``labelSelector``.

**Who is alive** is written in the owner ConfigMap: the incarnation (one per backend object,
i.e. per daemon process) holding it and when it last renewed (a heartbeat thread, every
``heartbeat_s``). :meth:`OwnerLease.take` takes the owner over, with a ``resourceVersion``
precondition so two daemons cannot both win (409), when the holder is this daemon's own
earlier incarnation (a restart: the old process is dead by construction) or its heartbeat is
older than ``heartbeat_ttl_s``. A fresh holder of another daemon raises :class:`Held`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from backends.deploy.kubernetes.api import Api, Exists, NotFound
from specs.errors import KubernetesApiError

__all__ = [
    "A_HOLDER",
    "A_HOLDER_DAEMON",
    "A_RENEWED",
    "L_DAEMON",
    "L_DEPLOYMENT",
    "L_INCARNATION",
    "L_SPEC",
    "MANAGED_BY",
    "Held",
    "OwnerLease",
    "check_labels",
    "label_value",
]

log = logging.getLogger(__name__)

MANAGED_BY = {"app.kubernetes.io/managed-by": "autotuner"}
L_SPEC = "autotuner.dev/spec"
L_DEPLOYMENT = "autotuner.dev/deployment"
L_DAEMON = "autotuner.dev/daemon"
L_INCARNATION = "autotuner.dev/incarnation"
A_HOLDER = "autotuner.dev/holder"
A_HOLDER_DAEMON = "autotuner.dev/holder-daemon"
A_RENEWED = "autotuner.dev/renewed"

_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
#: the only change of the owner ConfigMap: its holder annotations
_MERGE_PATCH = {"_content_type": "application/merge-patch+json"}


def check_labels(labels: Mapping[str, str]) -> None:
    for key, value in labels.items():
        if not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            raise ValueError(f"label {key}={value!r} is not a valid Kubernetes label")


def label_value(text: str) -> str:
    """``text`` as a valid label value (at most 63 characters of ``[-A-Za-z0-9_.]``)."""
    cleaned = re.sub(r"[^-A-Za-z0-9_.]", "-", text)[:63].strip("-_.")
    return cleaned or "x"


class Held(Exception):
    """The owner ConfigMap is held by another live daemon (its id is the message)."""


class OwnerLease:
    """This incarnation's hold on the spec's owner ConfigMap, renewed by a heartbeat thread."""

    def __init__(
        self,
        api: Api,
        *,
        namespace: str,
        spec_name: str,
        daemon_id: str,
        incarnation: str,
        heartbeat_s: float,
        heartbeat_ttl_s: float,
        stop: threading.Event,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.spec_name = spec_name
        self.name = f"autotuner-{spec_name}"[:63].rstrip("-")
        self.daemon_id = daemon_id
        self.incarnation = incarnation
        self.heartbeat_s = heartbeat_s
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.uid: str | None = None
        self._stop = stop
        self._lock = threading.Lock()
        self._heartbeat: threading.Thread | None = None

    def owner_refs(self) -> list[dict[str, Any]]:
        uid = self.ensure()
        return [{"apiVersion": "v1", "kind": "ConfigMap", "name": self.name, "uid": uid}]

    def ensure(self) -> str:
        """The owner's uid, held by us if no other live daemon holds it."""
        if self.uid is not None:
            return self.uid
        try:
            uid = self.take()
        except Held:
            # another live daemon holds this spec: deploy anyway (its pods are not ours to touch,
            # ours carry our incarnation); the owner object is shared
            uid = self._read()["metadata"]["uid"]
        self.uid = uid
        return uid

    def take(self) -> str:
        """Become the holder of the owner ConfigMap (created if missing); its uid.

        Raises :class:`Held` when another daemon's incarnation holds it with a fresh heartbeat.
        """
        for _ in range(5):
            try:
                obj = self._read()
            except NotFound:
                try:
                    return self._create()
                except Exists:
                    continue
            meta = obj["metadata"]
            if not self._may_take(meta.get("annotations") or {}):
                return str(meta["uid"])
            try:
                self._patch({"resourceVersion": meta["resourceVersion"]})
                return str(meta["uid"])
            except Exists:  # 409: someone changed it between our read and write; read again
                continue
        raise KubernetesApiError(f"could not take over {self.name}: it kept changing")

    def start_heartbeat(self) -> None:
        with self._lock:
            if self._heartbeat is not None:
                return
            self._heartbeat = threading.Thread(
                target=self._beat, name=f"k8s-heartbeat-{self.spec_name}", daemon=True
            )
            self._heartbeat.start()

    # ---------------------------------------------------------------------------- private

    def _may_take(self, notes: Mapping[str, str]) -> bool:
        """False when we hold it already; raises :class:`Held` for a live foreign holder."""
        holder = notes.get(A_HOLDER)
        if holder == self.incarnation:
            return False
        renewed = float(notes.get(A_RENEWED) or 0)
        fresh = time.time() - renewed < self.heartbeat_ttl_s
        if holder and fresh and notes.get(A_HOLDER_DAEMON) != self.daemon_id:
            raise Held(notes.get(A_HOLDER_DAEMON) or holder)
        return True

    def _annotations(self) -> dict[str, str]:
        return {
            A_HOLDER: self.incarnation,
            A_HOLDER_DAEMON: self.daemon_id,
            A_RENEWED: f"{time.time():.3f}",
        }

    def _read(self) -> Any:
        core = self.api.core
        return self.api.call(
            "get", "configmaps", self.namespace, core.read_namespaced_config_map, self.name, self.namespace
        )

    def _create(self) -> str:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {**MANAGED_BY, L_SPEC: label_value(self.spec_name)},
                "annotations": self._annotations(),
            },
            "data": {"spec": self.spec_name},
        }
        core = self.api.core
        created = self.api.call(
            "create", "configmaps", self.namespace, core.create_namespaced_config_map, self.namespace, body
        )
        return str(created["metadata"]["uid"])

    def _patch(self, metadata: Mapping[str, Any], *, conflict_retry: bool = False) -> None:
        patch = {"metadata": {**metadata, "annotations": self._annotations()}}
        core = self.api.core
        self.api.call(
            "patch",
            "configmaps",
            self.namespace,
            core.patch_namespaced_config_map,
            self.name,
            self.namespace,
            patch,
            conflict_retry=conflict_retry,
            **_MERGE_PATCH,
        )

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                obj = self._read()
                if (obj["metadata"].get("annotations") or {}).get(A_HOLDER) not in (None, self.incarnation):
                    continue  # another daemon took over (we were presumed dead): don't fight
                self._patch({}, conflict_retry=True)
            except Exception as exc:  # a missed beat is retried at the next one
                log.warning("kubernetes heartbeat for %s failed: %s", self.name, exc)
