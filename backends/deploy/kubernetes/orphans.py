"""Finding and deleting what dead incarnations of this spec left: pods, services, config maps, secrets.

An object is an orphan when it carries this spec's label and an incarnation that is not ours,
and this daemon holds the owner ConfigMap (:class:`~.ownership.OwnerLease`): only the holder
cleans, so a live daemon's pods are never touched. Secrets are deleted by name (``<name>-env``
of every orphaned deployment), never listed: ``list secrets`` would let the daemon read every
Secret of the namespace, and the minimal Role does not grant it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from backends.deploy.kubernetes.api import Api, NotFound
from backends.deploy.kubernetes.ownership import L_DEPLOYMENT, L_INCARNATION, L_SPEC, MANAGED_BY

__all__ = ["Kind", "delete_orphans", "kinds", "leftover_selector", "wait_gone"]

log = logging.getLogger(__name__)

#: (resource, its list call, its delete call)
Kind = tuple[str, Callable[..., Any], Callable[..., Any]]


def kinds(api: Api) -> list[Kind]:
    """The labelled kinds an experiment creates (Secrets are not listed, see the module docstring)."""
    core = api.core
    return [
        ("pods", core.list_namespaced_pod, core.delete_namespaced_pod),
        ("services", core.list_namespaced_service, core.delete_namespaced_service),
        ("configmaps", core.list_namespaced_config_map, core.delete_namespaced_config_map),
    ]


def leftover_selector(spec_label: str, incarnation: str) -> str:
    """Objects of this spec from any incarnation but ``incarnation``.

    ``k!=v`` also matches objects without ``k``: the bare ``k`` term keeps the owner ConfigMap,
    which has no incarnation, out.
    """
    return ",".join(
        [
            *(f"{k}={v}" for k, v in MANAGED_BY.items()),
            f"{L_SPEC}={spec_label}",
            L_INCARNATION,
            f"{L_INCARNATION}!={incarnation}",
        ]
    )


def delete_orphans(api: Api, namespace: str, selector: str) -> list[str]:
    """Delete every object ``selector`` matches, and the Secrets of their deployments; the names
    of the deployments whose pods were deleted (the caller waits for them to go)."""
    removed: set[str] = set()
    names: set[str] = set()
    for resource, lister, deleter in kinds(api):
        items = api.call("list", resource, namespace, lister, namespace, label_selector=selector)
        for item in (items or {}).get("items") or []:
            meta = item["metadata"]
            with contextlib.suppress(NotFound):
                api.call("delete", resource, namespace, deleter, meta["name"], namespace)
            name = (meta.get("labels") or {}).get(L_DEPLOYMENT, meta["name"])
            names.add(name)
            if resource == "pods":
                removed.add(name)
    for name in sorted(names):
        with contextlib.suppress(NotFound):
            api.call(
                "delete", "secrets", namespace, api.core.delete_namespaced_secret, f"{name}-env", namespace
            )
    return sorted(removed)


def wait_gone(api: Api, namespace: str, name: str, *, timeout_s: float, poll_s: float) -> bool:
    """Whether pod ``name`` is gone within ``timeout_s`` (its GPUs free again)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            api.call("get", "pods", namespace, api.core.read_namespaced_pod, name, namespace)
        except NotFound:
            return True
        except Exception as exc:
            log.warning("waiting for pod %s to go: %s", name, exc)
        time.sleep(min(0.2, poll_s))
    return False
