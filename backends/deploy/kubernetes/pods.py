"""What a pod's status and events say: the failure kind, the exit, and the words to quote.

Pure functions of the pod (a dict, as the API returns it), so the mapping is read in one place:

* ``ImagePullBackOff``/``ErrImagePull``/... → ``image_unavailable``;
* ``CreateContainerConfigError`` and kin (a missing Secret or ConfigMap) → ``environment``;
* the container could not start because its program is not in the image (``StartError`` or
  ``ContainerCannotRun`` saying so) → ``executable_missing``;
* ``OOMKilled`` → ``oom``; an exit or ``CrashLoopBackOff`` before ready → ``startup_crash``
  (after ready, the caller's ``crashed``);
* the pod itself ended (``Failed``/``Succeeded``, e.g. evicted, past its deadline) → ``environment``;
* ``Unschedulable`` for longer than ``schedulingTimeout`` → ``unschedulable``.

The log patterns of :func:`~backends.deploy.base.classify_failure` still win over the
configuration-side kinds (an engine that reports CUDA OOM and exits 1 is ``oom``). Messages
quote the pod's events (``0/3 nodes are available: 3 Insufficient nvidia.com/gpu.``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from backends.deploy import kube_manifests as manifests
from backends.deploy.base import ExitInfo, FailureKind, looks_like_missing_executable
from backends.deploy.shared import executable_missing

__all__ = [
    "CONFIG_REASONS",
    "IMAGE_REASONS",
    "PodProblem",
    "assess",
    "condition",
    "container_status",
    "exit_of",
    "pod_ready",
    "pod_scheduled",
    "terminated",
    "waiting_words",
]

IMAGE_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
CONFIG_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})
#: a terminated container's reasons when its runtime could not start the program at all
START_REASONS = frozenset({"StartError", "ContainerCannotRun"})

#: the pod's Warning events in words (``reason`` only those of that reason), latest first
EventWords = Callable[[str | None], str]


@dataclass(frozen=True)
class PodProblem:
    """A failure the pod's status shows before the engine was ready."""

    kind: FailureKind
    message: str
    exit_info: ExitInfo | None = None
    #: seconds to let the log follower finish first (the container ended: its last lines matter)
    settle_s: float = 0.0
    hint: str | None = None


def container_status(pod: Mapping[str, Any]) -> dict[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for cs in statuses:
        if cs.get("name") == manifests.CONTAINER:
            return dict(cs)
    return dict(statuses[0]) if statuses else {}


def terminated(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    """How the engine container last ended (also the last run of a crash loop), or None."""
    cs = container_status(pod)
    ended = (cs.get("state") or {}).get("terminated")
    if ended is None and (cs.get("state") or {}).get("waiting", {}).get("reason") == "CrashLoopBackOff":
        ended = (cs.get("lastState") or {}).get("terminated")
    return dict(ended) if ended is not None else None


def exit_of(ended: Mapping[str, Any]) -> ExitInfo:
    sig = ended.get("signal")
    code = ended.get("exitCode")
    if sig:
        return ExitInfo(signal=int(sig))
    if code is not None and int(code) > 128 and ended.get("reason") != "Error":
        return ExitInfo(signal=int(code) - 128)
    return ExitInfo(exit_code=int(code) if code is not None else None)


def condition(pod: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def pod_scheduled(pod: Mapping[str, Any]) -> bool:
    cond = condition(pod, "PodScheduled")
    return cond is not None and cond.get("status") == "True"


def pod_ready(pod: Mapping[str, Any]) -> bool:
    cond = condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


def waiting_words(pod: Mapping[str, Any] | None, last_probe: str) -> str:
    """Why a pod is not ready yet, for a readiness timeout's message."""
    if pod is None:
        return "the pod is gone"
    if not pod_ready(pod):
        cond = condition(pod, "PodScheduled")
        if cond is not None and cond.get("status") == "False":
            return f"still unschedulable: {cond.get('message', '')}"
        return f"pod {((pod.get('status') or {}).get('phase') or 'Pending').lower()}, not Ready"
    return last_probe


def assess(
    pod: Mapping[str, Any],
    *,
    name: str,
    image: str | None,
    program: str,
    events: EventWords,
    scheduling_late: bool,
    scheduling_timeout: float,
) -> PodProblem | None:
    """The failure the pod's status shows, if it shows one (see the module docstring).

    ``program`` is the container's first argument (the program itself when the image has no
    entrypoint); ``scheduling_late``: the pod has waited for a node longer than it may.
    """
    cs = container_status(pod)
    state = cs.get("state") or {}
    waiting = state.get("waiting") or {}
    return (
        _waiting_problem(waiting, cs, name=name, image=image, events=events)
        or _ended_problem(state.get("terminated"), name=name, program=program)
        or _pod_problem(pod, name=name, events=events, late=scheduling_late, timeout=scheduling_timeout)
    )


def _waiting_problem(
    waiting: Mapping[str, Any], cs: Mapping[str, Any], *, name: str, image: str | None, events: EventWords
) -> PodProblem | None:
    reason = waiting.get("reason")
    if reason in IMAGE_REASONS:
        words = events(None) or waiting.get("message", "")
        return PodProblem(
            "image_unavailable", f"the image {image} of {name} cannot be pulled ({reason}): {words}"
        )
    if reason in CONFIG_REASONS:
        return PodProblem(
            "environment",
            f"the container of {name} cannot be created ({reason}): {waiting.get('message', '')}",
        )
    if reason == "CrashLoopBackOff":
        last = (cs.get("lastState") or {}).get("terminated") or {}
        oom = last.get("reason") == "OOMKilled"
        ended = exit_of(last)
        return PodProblem(
            "oom" if oom else "startup_crash",
            f"engine {name} keeps crashing (CrashLoopBackOff, {cs.get('restartCount', 0)} restarts; last "
            f"{ended.describe()}{', OOMKilled' if oom else ''}) before it was ready",
            exit_info=ended,
            settle_s=1.0,
        )
    return None


def _ended_problem(ended: Mapping[str, Any] | None, *, name: str, program: str) -> PodProblem | None:
    if ended is None:
        return None
    reason = ended.get("reason")
    message = str(ended.get("message", ""))
    if reason == "OOMKilled":
        return PodProblem(
            "oom", f"engine {name} was OOMKilled (passed its memory limit) before it was ready", settle_s=3.0
        )
    if reason in START_REASONS and looks_like_missing_executable(message, program):
        missing = executable_missing(name, "the program of the image", f"{reason}: {message}", where="image")
        return PodProblem(missing.kind, missing.message, settle_s=3.0, hint=missing.hint)
    detail = f" ({reason}: {message})" if reason not in (None, "Error") else ""
    return PodProblem(
        "startup_crash",
        f"engine {name} {exit_of(ended).describe()} before it was ready{detail}",
        settle_s=3.0,
    )


def _pod_problem(
    pod: Mapping[str, Any], *, name: str, events: EventWords, late: bool, timeout: float
) -> PodProblem | None:
    status = pod.get("status") or {}
    if status.get("phase") in ("Failed", "Succeeded"):
        return PodProblem(
            "environment",
            f"pod {name} ended ({status.get('reason', status.get('phase'))}): {status.get('message', '')}",
        )
    scheduled = condition(pod, "PodScheduled")
    if scheduled is not None and scheduled.get("status") == "False" and late:
        words = events("FailedScheduling") or scheduled.get("message", "")
        return PodProblem(
            "unschedulable",
            f"pod {name} could not be scheduled within {timeout:g} s "
            f"({scheduled.get('reason', 'Unschedulable')}): {words}",
        )
    return None
