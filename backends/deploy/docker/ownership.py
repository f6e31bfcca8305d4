"""Which containers are ours, and whose: the labels, the owner mark, and orphan cleanup.

Every container carries ``autotuner.owner`` (boot id, pid and start time of the process that
made it, the identity the local backend's pid files hold too) and ``autotuner.host``. A
container is an orphan when it is of this host and its owner is dead: a live owner's container
is never touched, whether it belongs to this process or to another ``autotuner`` on the same
container engine. Labels carry no environment value.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from backends.deploy import procs
from specs.errors import EngineFailure

__all__ = [
    "LABEL_DEPLOYMENT",
    "LABEL_HOST",
    "LABEL_MANAGED",
    "LABEL_OWNER",
    "container_name",
    "owner_alive",
    "owner_mark",
    "remove_leftover",
    "remove_orphans",
]

log = logging.getLogger(__name__)

LABEL_MANAGED = "autotuner.managed-by"
LABEL_OWNER = "autotuner.owner"
LABEL_HOST = "autotuner.host"
LABEL_DEPLOYMENT = "autotuner.deployment"


def container_name(name: str) -> str:
    """Container names are global in a container engine: prefixed, so that ours are recognisable."""
    return f"autotuner-{name}"


def owner_mark() -> str:
    """This process's ``autotuner.owner`` value."""
    me = procs.read_identity(os.getpid())
    if me is None:  # no /proc: nothing can tell this process alive later; mark it unknown
        return "unknown"
    return f"{me.boot_id}/{me.pid}/{me.start_time}"


def owner_alive(mark: str) -> bool:
    """Whether the process of an ``autotuner.owner`` label still runs (unknown marks: assume yes)."""
    try:
        boot_id, pid, start = mark.split("/")
        identity = procs.ProcessIdentity(pid=int(pid), start_time=int(start), boot_id=boot_id)
    except ValueError:
        return True
    return procs.is_running(identity)


def remove_orphans(get_client: Callable[[], Any], docker: Any, hostname: str) -> list[str]:
    """Remove the containers of ``hostname`` whose owning process is dead; their deployment names.

    A container engine that cannot be reached has nothing we could clean: the problem is
    logged, and every experiment then fails as an ``environment`` failure (retried later).
    """
    try:
        found = get_client().containers.list(all=True, filters={"label": f"{LABEL_MANAGED}=autotuner"})
    except Exception as exc:  # the SDK's errors, and requests' for a socket nobody answers
        log.warning("cannot look for orphaned containers: %s", exc)
        return []
    removed = []
    for container in found:
        labels = container.labels or {}
        if labels.get(LABEL_HOST) != hostname or owner_alive(labels.get(LABEL_OWNER, "")):
            continue
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.DockerException as exc:
            log.warning("cannot remove orphaned container %s: %s", container.name, exc)
            continue
        removed.append(labels.get(LABEL_DEPLOYMENT, container.name))
    return removed


def remove_leftover(client: Any, docker: Any, cname: str, *, me: str, deployment: str) -> None:
    """A container named ``cname`` already there: a dead owner's is removed, a live owner's
    (``me`` included) is refused with an ``environment`` failure."""
    try:
        old = client.containers.get(cname)
    except docker.errors.NotFound:
        return
    owner = (old.labels or {}).get(LABEL_OWNER, "")
    if owner == me or owner_alive(owner):
        raise EngineFailure(
            "environment",
            f"engine {deployment}: a container named {cname} already exists and belongs to a running "
            "process (another autotuner on this container engine?)",
        )
    old.remove(force=True)
