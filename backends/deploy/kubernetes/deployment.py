"""One experiment's pod after ``deploy``: readiness, exit, failures, its log, and teardown.

* **Scheduling is not start-up.** Time spent waiting for the cluster to place the pod (queued
  behind other pods for GPUs, a node scaling up) is bounded by ``schedulingTimeout``; the
  engine's start-up clock runs from the moment the pod is scheduled.
* **Watch, then look.** While the pod is not ready, a short watch from its
  ``resourceVersion`` wakes the loop at its next change; every round then reads the pod and
  maps its status (:func:`.pods.assess`).
* **Logs** are followed (``pods/log?follow=true``) into ``log_path`` by a thread, one stream per
  container start, so the file has the same shape as the local backend's and outlives the pod.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from backends.deploy import kube_manifests as manifests
from backends.deploy.base import EngineFailure, ExitInfo
from backends.deploy.kubernetes import pods
from backends.deploy.kubernetes.access import PortForwarder, engine_url
from backends.deploy.kubernetes.api import NotFound
from backends.deploy.kubernetes.objects import ExperimentObjects
from backends.deploy.kubernetes.ownership import L_DEPLOYMENT
from backends.deploy.shared import DeploymentCore, DeployRequest, Readiness
from specs.errors import KubernetesAccessError, KubernetesApiError

if TYPE_CHECKING:
    from backends.deploy.kubernetes.backend import KubernetesBackend

__all__ = ["KubernetesDeployment"]

log = logging.getLogger(__name__)


class KubernetesDeployment(DeploymentCore):
    """One experiment's pod (see :class:`~backends.deploy.base.Deployment` for the contract)."""

    _backend: KubernetesBackend

    def __init__(self, backend: KubernetesBackend, request: DeployRequest) -> None:
        super().__init__(backend, request)
        self._api = backend.api
        self._ns = backend.namespace
        self.labels = {**request.labels, **backend.base_labels(), L_DEPLOYMENT: self.name}
        self.objects = ExperimentObjects(self, request.secrets)
        self._start_error: EngineFailure | None = None
        self._follower: threading.Thread | None = None
        self._written: dict[int, int] = {}
        self._pod: dict[str, Any] | None = None
        self._last_exit: ExitInfo | None = None
        #: the container's restart count when it became ready (None: not ready yet)
        self._ready_restarts: int | None = None
        self._forwarder: PortForwarder | None = None

    # ------------------------------------------------------------------------------ public

    @property
    def secret_name(self) -> str | None:
        return self.objects.secret_name

    @property
    def files_name(self) -> str | None:
        return self.objects.files_name

    @property
    def base_url(self) -> str:
        port = self.plan.port
        if self._backend.access == "portForward":
            if self._forwarder is None:
                self._forwarder = PortForwarder(self._api, self.name, self._ns, port)
            return self._forwarder.url
        pod_ip = ((self._pod or {}).get("status") or {}).get("podIP")
        return engine_url(self._backend.access, name=self.name, namespace=self._ns, port=port, pod_ip=pod_ip)

    def wait_ready(self, timeout_s: float, *, cancel: threading.Event | None = None) -> None:
        clock = self._readiness(timeout_s, cancel)
        scheduling_deadline = clock.began + self._backend.settings.scheduling_timeout
        scheduled = False
        while True:
            clock.check_cancelled()
            if self._start_error is not None:
                raise self._with_tail(self._start_error)
            pod = self._read_pod()
            if pod is None and not self._torn_down.is_set():
                self._join_follower(timeout=1.0)
                raise self._failure_now(
                    "environment",
                    f"pod {self._ns}/{self.name} was deleted by someone else before it was ready",
                )
            if pod is not None:
                self._assess(pod, scheduling_late=time.monotonic() >= scheduling_deadline)
                if pods.pod_ready(pod) and self._probe_url():
                    self._ready_restarts = int(pods.container_status(pod).get("restartCount") or 0)
                    return
                scheduled = self._track_scheduling(pod, clock, scheduled)
            if clock.expired():
                # the engine still runs: its log streams in as it comes, there is no end to wait for
                raise self._not_ready(clock, pods.waiting_words(pod, self._last_probe))
            if pod is not None and not pods.pod_ready(pod):
                # a watch wakes us at the pod's next change; short, so that cancel stays prompt
                self._watch_change(pod, min(1.0, max(0.2, 2 * clock.interval_s), clock.left()))
            else:
                clock.pause()

    def alive(self) -> bool:
        if self._torn_down.is_set():
            return False
        pod = self._read_pod(quiet=True)
        if pod is None:
            return False
        cs = pods.container_status(pod)
        # a restart after ready (restartPolicy OnFailure) is a crash of the engine we measured
        restarted = (
            self._ready_restarts is not None and int(cs.get("restartCount") or 0) > self._ready_restarts
        )
        return "running" in (cs.get("state") or {}) and not restarted

    def exit_info(self) -> ExitInfo | None:
        pod = self._read_pod(quiet=True) if not self._torn_down.is_set() else None
        if pod is not None:
            ended = pods.terminated(pod)
            if ended is None:
                return ExitInfo() if self._start_error is not None else None
            self._last_exit = pods.exit_of(ended)
        if self._last_exit is not None:
            return self._last_exit
        if self._torn_down.is_set():
            return ExitInfo(signal=int(signal.SIGTERM))
        return ExitInfo() if self._start_error is not None else None

    # ---------------------------------------------------------------------------- private

    def _create(self) -> None:
        """Create the experiment's objects; an API refusal becomes the start error."""
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
            self._pod = self.objects.create(image)
        except (KubernetesAccessError, KubernetesApiError) as exc:
            self._start_error = EngineFailure("environment", exc.message, hint=exc.hint)
            self._log_line(f"cannot start {self.name}: {self._start_error.message}")
            return
        self._follower = threading.Thread(target=self._follow_logs, name=f"k8s-log-{self.name}", daemon=True)
        self._follower.start()

    def _track_scheduling(self, pod: dict[str, Any], clock: Readiness, scheduled: bool) -> bool:
        """The start-up clock restarts when the pod is scheduled; until then it does not run out."""
        if not scheduled and pods.pod_scheduled(pod):
            clock.restart()
            return True
        if not scheduled:
            clock.extend(clock.interval_s)
        return scheduled

    def _assess(self, pod: dict[str, Any], *, scheduling_late: bool) -> None:
        """Raise the failure the pod's status shows, if it shows one."""
        problem = pods.assess(
            pod,
            name=self.name,
            image=self.plan.image,
            program=self.plan.container_args[0] if self.plan.container_args else "",
            events=self._event_words,
            scheduling_late=scheduling_late,
            scheduling_timeout=self._backend.settings.scheduling_timeout,
        )
        if problem is None:
            return
        if problem.settle_s:
            self._join_follower(timeout=problem.settle_s)
        raise self._failure_now(problem.kind, problem.message, exit_info=problem.exit_info, hint=problem.hint)

    def _memory_kill(self, message: str) -> str | None:
        pod = self._read_pod(quiet=True)
        self._join_follower()
        ended = pods.terminated(pod) if pod is not None else None
        if ended is not None and ended.get("reason") == "OOMKilled":
            return message + " (OOMKilled: the container passed its memory limit)"
        return None

    def _release(self) -> None:
        try:
            pod = self._read_pod(quiet=True)
            ended = pods.terminated(pod) if pod is not None else None
            if ended is not None:
                self._last_exit = pods.exit_of(ended)
            self.objects.delete(self._backend.grace_s)
        finally:
            if self._forwarder is not None:
                self._forwarder.close()
            self._join_follower(timeout=2.0)

    def _probe_url(self) -> bool:
        from urllib.parse import urlsplit

        url = urlsplit(self.base_url)
        return self._probe(url.hostname or "", url.port, self._backend.probe_timeout_s)

    def _read_pod(self, *, quiet: bool = False) -> dict[str, Any] | None:
        """The pod now (None: it is gone); an API failure is an ``environment`` failure, or when
        ``quiet`` the pod as last seen."""
        try:
            pod = self._api.call(
                "get", "pods", self._ns, self._api.core.read_namespaced_pod, self.name, self._ns
            )
        except NotFound:
            return None
        except (KubernetesAccessError, KubernetesApiError) as exc:
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

    def _follow_logs(self) -> None:
        """Append the engine container's output to ``log_path`` as it comes (one stream per start)."""
        while not self._torn_down.is_set():
            pod = self._read_pod(quiet=True)
            if pod is None:
                return
            cs = pods.container_status(pod)
            instance = int(cs.get("restartCount") or 0)
            state = cs.get("state") or {}
            if "running" not in state and "terminated" not in state:
                self._torn_down.wait(self._backend.poll_interval_s / 2)
                continue
            self._stream_log(instance)
            pod = self._read_pod(quiet=True)
            if pod is None:
                return
            cs = pods.container_status(pod)
            if "terminated" in (cs.get("state") or {}) and int(cs.get("restartCount") or 0) == instance:
                return
            self._torn_down.wait(self._backend.poll_interval_s / 2)

    def _stream_log(self, instance: int) -> None:
        """One container start's output, skipping what an earlier stream of it already wrote."""
        skip = self._written.get(instance, 0)
        try:
            resp: Any = self._api.core.read_namespaced_pod_log(
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

    def _join_follower(self, timeout: float = 3.0) -> None:
        follower = self._follower
        if follower is not None and follower is not threading.current_thread():
            follower.join(timeout)
