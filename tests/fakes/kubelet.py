"""A FAKE kubelet and scheduler for :class:`~tests.fakes.kube_api.FakeKubeApiServer`.

It plays the cluster's part for the kubernetes backend's tests: it schedules the pods it finds
on fake nodes (node selectors, taints and tolerations, GPU capacity), "pulls" images from a table
of known images, and runs each pod's engine container as a **real local process** (the sim engine,
the contract suite's stand-in engine), so that the backend's readiness checks and the load
generator talk to a real server. Everything it learns goes back into the pod's status and into
Events, spelled as a real kubelet spells them:

* no node fits → ``PodScheduled=False`` reason ``Unschedulable``, Event ``FailedScheduling``
  (``0/1 nodes are available: 1 Insufficient nvidia.com/gpu.``); retried as capacity frees;
* unknown image → container ``waiting`` ``ErrImagePull`` then ``ImagePullBackOff``, Events
  ``Failed`` and ``BackOff``;
* a ``secretKeyRef`` to a missing Secret → ``waiting`` ``CreateContainerConfigError``;
* the process's resident memory above ``limits.memory`` → SIGKILL and ``terminated``
  ``OOMKilled`` with exit code 137 (the cgroup OOM killer, watched from ``/proc``);
* exit with ``restartPolicy: Never`` → ``terminated`` with its exit code, phase ``Failed`` or
  ``Succeeded``; with ``OnFailure``/``Always`` → restarted with a doubling back-off, ``waiting``
  ``CrashLoopBackOff`` in between, ``restartCount`` and ``lastState`` kept;
* the readiness probe (``httpGet``) decides ``ContainersReady`` and ``Ready``;
* deletion → SIGTERM to the process group, the pod's grace period (capped by ``max_grace_s``),
  SIGKILL, then the object is removed.

**Networking.** Every pod gets ``podIP: 127.0.0.1`` and its container listens on this host, on
the port of its command line. The backend's ``podIP`` access mode reaches it there directly,
and its ``portForward`` mode through the fake API server's WebSocket ``pods/portforward``,
which connects to that same port (the stand-in for the kubelet's stream server). The Service's
DNS name (``access: service``) does not resolve here, so that path is not exercised.

**Images** are a table: image name → the local command that is its entrypoint, plus a map from
program names the pod's arguments may start with (``autotuner``) to local commands, which is how
``autotuner engine sim`` in a pod becomes this checkout's ``python -m reconciler engine sim``.
The process gets the pod's environment only (plus ``PATH`` and ``HOME``), like a container.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fakes.kube_api import FakeKubeApiServer, LogSource, Obj, now_iso

WORKDIR_PLACEHOLDER = "/autotuner/work"


@dataclass
class FakeImage:
    #: the image's ENTRYPOINT as a local command ([] when it has none: args are the command)
    entrypoint: list[str] = field(default_factory=list)
    #: program names that may start the args → local command
    programs: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class FakeNode:
    name: str = "gpu-node-1"
    labels: dict[str, str] = field(default_factory=dict)
    #: (key, value, effect)
    taints: list[tuple[str, str, str]] = field(default_factory=list)
    allocatable: dict[str, int] = field(default_factory=lambda: {"nvidia.com/gpu": 8})


def sim_image() -> FakeImage:
    """The autotuner image: ``autotuner engine sim ...`` runs this checkout's CLI."""
    return FakeImage(programs={"autotuner": [sys.executable, "-m", "reconciler"]})


def _quantity_bytes(q: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, mult in units.items():
        if q.endswith(suffix):
            return int(float(q[: -len(suffix)]) * mult)
    return int(float(q))


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class _PodRun:
    """One pod's life on the fake node."""

    def __init__(self, kubelet: FakeKubelet, namespace: str, name: str, *, uid: str) -> None:
        self.kubelet = kubelet
        self.uid = uid
        self.ns = namespace
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"pod-{name}-", dir=kubelet.root))
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.node: str | None = None
        self.deleting = False
        self.done = False
        self.next_start = 0.0
        self.backoff = kubelet.crash_backoff_s
        self.ready = False
        self.last_probe = 0.0
        self.pull_failures = 0
        self.log_path = self.dir / "engine-0.log"
        self.oom_killed = False
        #: ended for good (restartPolicy says no restart)
        self.finished = False

    # ---- status helpers

    def _pod(self) -> Obj | None:
        return self.kubelet.api.get("pods", self.ns, self.name)

    def _container(self, pod: Obj) -> dict[str, Any]:
        c: dict[str, Any] = pod["spec"]["containers"][0]
        return c

    def _set_status(self, **changes: Any) -> None:
        def fn(pod: Obj) -> None:
            status = pod.setdefault("status", {})
            status.update(changes)

        self.kubelet.api.update("pods", self.ns, self.name, fn)

    def _conditions(
        self, scheduled: bool, ready: bool, reason: str | None = None, message: str = ""
    ) -> list[Obj]:
        t = now_iso()
        sched: Obj = {
            "type": "PodScheduled",
            "status": "True" if scheduled else "False",
            "lastTransitionTime": t,
        }
        if not scheduled:
            sched.update(reason=reason or "Unschedulable", message=message)
        out = [sched]
        if scheduled:
            state = "True" if ready else "False"
            out += [
                {"type": "Initialized", "status": "True", "lastTransitionTime": t},
                {"type": "ContainersReady", "status": state, "lastTransitionTime": t},
                {"type": "Ready", "status": state, "lastTransitionTime": t},
            ]
        return out

    def _container_status(self, pod: Obj, state: Obj, *, ready: bool = False, last: Obj | None = None) -> Obj:
        c = self._container(pod)
        status: Obj = {
            "name": c["name"],
            "image": c.get("image", ""),
            "imageID": "",
            "ready": ready,
            "restartCount": self.restarts,
            "started": "running" in state,
            "state": state,
            "lastState": last or {},
        }
        return status

    # ---- the state machine, one step per kubelet tick

    def step(self) -> None:
        pod = self._pod()
        if pod is None:
            self.done = True
            return
        if pod["metadata"].get("deletionTimestamp") and not self.deleting:
            self.deleting = True
            threading.Thread(target=self._stop_and_remove, args=(pod,), daemon=True).start()
            return
        if self.deleting:
            return
        if self.node is None:
            self._schedule(pod)
            return
        if self.proc is None:
            if not self.finished and time.monotonic() >= self.next_start:
                self._start(pod)
            return
        code = self.proc.poll()
        if code is None:
            self._watch_memory(pod)
            self._probe(pod)
            return
        self._exited(pod, code)

    def _schedule(self, pod: Obj) -> None:
        kubelet = self.kubelet
        want = kubelet.gpu_request(pod)
        resource = next(iter(want), "nvidia.com/gpu")
        reasons: dict[str, int] = {}
        for node in kubelet.nodes:
            sel = pod["spec"].get("nodeSelector") or {}
            if any(node.labels.get(k) != v for k, v in sel.items()):
                reasons["node(s) didn't match Pod's node affinity/selector"] = (
                    reasons.get("node(s) didn't match Pod's node affinity/selector", 0) + 1
                )
                continue
            tolerations = pod["spec"].get("tolerations") or []
            untolerated = [
                t
                for t in node.taints
                if t[2] in ("NoSchedule", "NoExecute")
                and not any(
                    (tol.get("operator") == "Exists" and tol.get("key") in (None, t[0]))
                    or (tol.get("key") == t[0] and tol.get("value") == t[1])
                    for tol in tolerations
                )
            ]
            if untolerated:
                key = f"node(s) had untolerated taint {{{untolerated[0][0]}: {untolerated[0][1]}}}"
                reasons[key] = reasons.get(key, 0) + 1
                continue
            used = kubelet.used(node.name)
            if any(used.get(r, 0) + n > node.allocatable.get(r, 0) for r, n in want.items()):
                key = f"Insufficient {resource}"
                reasons[key] = reasons.get(key, 0) + 1
                continue
            self.node = node.name
            kubelet.api.update(
                "pods", self.ns, self.name, lambda p, n=node.name: p["spec"].update(nodeName=n)
            )
            self._set_status(phase="Pending", conditions=self._conditions(True, False))
            kubelet.api.record_event(
                self.ns, pod, "Scheduled", f"Successfully assigned {self.ns}/{self.name} to {node.name}"
            )
            return
        message = (
            f"0/{len(kubelet.nodes)} nodes are available: "
            + ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
            + ". preemption: 0/{0} nodes are available: {0} Preemption is not helpful for scheduling.".format(
                len(kubelet.nodes)
            )
        )
        if (pod.get("status") or {}).get("conditions") != self._conditions(False, False, message=message)[:1]:
            self._set_status(phase="Pending", conditions=self._conditions(False, False, message=message))
        kubelet.api.record_event(self.ns, pod, "FailedScheduling", message, "Warning")

    def _waiting(self, pod: Obj, reason: str, message: str) -> None:
        self._set_status(
            phase="Pending",
            conditions=self._conditions(True, False),
            containerStatuses=[
                self._container_status(pod, {"waiting": {"reason": reason, "message": message}})
            ],
        )

    def _start(self, pod: Obj) -> None:
        kubelet = self.kubelet
        c = self._container(pod)
        image_name = c.get("image", "")
        image = kubelet.images.get(image_name)
        if image is None:
            self.pull_failures += 1
            msg = (
                f'Failed to pull image "{image_name}": rpc error: code = NotFound desc = failed to pull and '
                f'unpack image "{image_name}": not found'
            )
            if self.pull_failures == 1:
                kubelet.api.record_event(self.ns, pod, "Failed", msg, "Warning")
                kubelet.api.record_event(self.ns, pod, "Failed", "Error: ErrImagePull", "Warning")
                self._waiting(pod, "ErrImagePull", msg)
            else:
                kubelet.api.record_event(
                    self.ns, pod, "BackOff", f'Back-off pulling image "{image_name}"', "Normal"
                )
                self._waiting(pod, "ImagePullBackOff", f'Back-off pulling image "{image_name}"')
            self.next_start = time.monotonic() + kubelet.crash_backoff_s
            return
        try:
            env = self._env(pod, c)
        except LookupError as exc:
            kubelet.api.record_event(self.ns, pod, "Failed", f"Error: {exc}", "Warning")
            self._waiting(pod, "CreateContainerConfigError", str(exc))
            self.next_start = time.monotonic() + kubelet.crash_backoff_s
            return
        argv = list(c.get("command") or image.entrypoint) + list(c.get("args") or [])
        if argv and argv[0] in image.programs:
            argv = image.programs[argv[0]] + argv[1:]
        cwd = self.dir / "work"
        cwd.mkdir(exist_ok=True)
        self._mount_files(pod, cwd)
        self.log_path = self.dir / f"engine-{self.restarts}.log"
        with open(self.log_path, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            except OSError as exc:
                log.write(f"exec {argv[0]}: {exc}\n".encode())
                start_error: OSError | None = exc
            else:
                start_error = None
        if start_error is not None:
            self._record_exit(pod, 128, reason="StartError", message=str(start_error))
            return
        proc = self.proc
        kubelet.api.logs[(self.ns, self.name, c["name"])] = LogSource(
            self.log_path, running=lambda: proc.poll() is None
        )
        self.ready = False
        kubelet.api.record_event(
            self.ns, pod, "Pulled", f'Container image "{image_name}" already present on machine'
        )
        kubelet.api.record_event(self.ns, pod, "Created", f"Created container: {c['name']}")
        kubelet.api.record_event(self.ns, pod, "Started", f"Started container {c['name']}")
        self._running_status(pod, ready=False)

    def _running_status(self, pod: Obj, *, ready: bool) -> None:
        last = ((pod.get("status") or {}).get("containerStatuses") or [{}])[0].get("lastState")
        self._set_status(
            phase="Running",
            podIP="127.0.0.1",
            podIPs=[{"ip": "127.0.0.1"}],
            hostIP="127.0.0.1",
            startTime=(pod.get("status") or {}).get("startTime") or now_iso(),
            conditions=self._conditions(True, ready),
            containerStatuses=[
                self._container_status(pod, {"running": {"startedAt": now_iso()}}, ready=ready, last=last)
            ],
        )

    def _env(self, pod: Obj, c: Obj) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.dir)}
        for item in c.get("env") or []:
            if "value" in item:
                env[item["name"]] = item["value"]
                continue
            ref = item["valueFrom"]["secretKeyRef"]
            secret = self.kubelet.api.get("secrets", self.ns, ref["name"])
            if secret is None:
                raise LookupError(f'secret "{ref["name"]}" not found')
            data = secret.get("data") or {}
            if ref["key"] not in data:
                raise LookupError(f"couldn't find key {ref['key']} in Secret {self.ns}/{ref['name']}")
            value = data[ref["key"]]
            try:  # data is base64 on a real server; the fake keeps stringData as given
                env[item["name"]] = base64.b64decode(value, validate=True).decode()
            except ValueError:
                env[item["name"]] = value
        return env

    def _mount_files(self, pod: Obj, cwd: Path) -> None:
        c = self._container(pod)
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts") or []}
        for vol in pod["spec"].get("volumes") or []:
            cm = vol.get("configMap")
            if cm is None or mounts.get(vol["name"]) != c.get("workingDir", WORKDIR_PLACEHOLDER):
                continue
            obj = self.kubelet.api.get("configmaps", self.ns, cm["name"])
            data = (obj or {}).get("data") or {}
            for item in cm.get("items") or [{"key": k, "path": k} for k in data]:
                target = cwd / item["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(data.get(item["key"], ""))

    def _watch_memory(self, pod: Obj) -> None:
        limit = ((self._container(pod).get("resources") or {}).get("limits") or {}).get("memory")
        if limit is None or self.proc is None:
            return
        if _rss_bytes(self.proc.pid) > _quantity_bytes(str(limit)):
            self.oom_killed = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def _probe(self, pod: Obj) -> None:
        c = self._container(pod)
        probe = (c.get("readinessProbe") or {}).get("httpGet")
        now = time.monotonic()
        if now - self.last_probe < self.kubelet.probe_interval_s:
            return
        self.last_probe = now
        ready = True
        if probe is not None:
            port = probe["port"]
            if isinstance(port, str):
                port = next(p["containerPort"] for p in c.get("ports") or [] if p.get("name") == port)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{probe['path']}", timeout=1.0) as r:
                    ready = 200 <= r.status < 400
            except OSError:
                ready = False
        if ready != self.ready:
            self.ready = ready
            self._running_status(pod, ready=ready)

    def _exited(self, pod: Obj, code: int) -> None:
        assert self.proc is not None
        signalled = code < 0
        exit_code = 128 - code if signalled else code
        if self.oom_killed:
            reason = "OOMKilled"
        elif exit_code == 0:
            reason = "Completed"
        else:
            reason = "Error"
        self.proc = None
        self._record_exit(pod, exit_code, reason=reason, signal_no=-code if signalled else None)

    def _record_exit(
        self, pod: Obj, exit_code: int, *, reason: str, message: str = "", signal_no: int | None = None
    ) -> None:
        kubelet = self.kubelet
        terminated: Obj = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": now_iso(),
            "finishedAt": now_iso(),
            "containerID": f"fake://{self.name}-{self.restarts}",
        }
        if message:
            terminated["message"] = message
        if signal_no is not None:
            terminated["signal"] = signal_no
        policy = pod["spec"].get("restartPolicy", "Always")
        restart = policy == "Always" or (policy == "OnFailure" and exit_code != 0)
        self.oom_killed = False
        if not restart:
            self.finished = True
            self._set_status(
                phase="Succeeded" if exit_code == 0 else "Failed",
                conditions=self._conditions(True, False),
                containerStatuses=[self._container_status(pod, {"terminated": terminated})],
            )
            return
        self.restarts += 1
        kubelet.api.record_event(
            self.ns,
            pod,
            "BackOff",
            f"Back-off restarting failed container {self._container(pod)['name']} "
            f"in pod {self.name}_{self.ns}({pod['metadata']['uid']})",
            "Warning",
        )
        self._set_status(
            phase="Running",
            conditions=self._conditions(True, False),
            containerStatuses=[
                self._container_status(
                    pod,
                    {
                        "waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": f"back-off {self.backoff:g}s restarting failed container",
                        }
                    },
                    last={"terminated": terminated},
                )
            ],
        )
        self.next_start = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, 30.0)

    def _stop_and_remove(self, pod: Obj) -> None:
        grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        deletion_grace = pod["metadata"].get("deletionGracePeriodSeconds")
        if deletion_grace is not None:
            grace = deletion_grace
        self.kill(min(float(grace), self.kubelet.max_grace_s))
        if self.proc is not None:
            code = self.proc.poll()
            if code is not None:
                exit_code = 128 - code if code < 0 else code
                self.kubelet.api.update(
                    "pods",
                    self.ns,
                    self.name,
                    lambda p: p["status"].update(
                        phase="Failed" if exit_code else "Succeeded",
                        containerStatuses=[
                            self._container_status(
                                p,
                                {
                                    "terminated": {
                                        "exitCode": exit_code,
                                        "reason": "Error" if exit_code else "Completed",
                                    }
                                },
                            )
                        ],
                    ),
                )
        self.kubelet.api.remove("pods", self.ns, self.name)
        self.done = True

    def kill(self, grace_s: float) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        # children that outlived the main process (same group)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


class FakeKubelet:
    """Runs the pods of a :class:`FakeKubeApiServer` on fake nodes (see the module docstring)."""

    def __init__(
        self,
        api: FakeKubeApiServer,
        *,
        images: Mapping[str, FakeImage],
        nodes: Sequence[FakeNode] = (FakeNode(),),
        root: Path,
        tick_s: float = 0.05,
        probe_interval_s: float = 0.2,
        crash_backoff_s: float = 0.3,
        max_grace_s: float = 2.0,
    ) -> None:
        self.api = api
        self.images = dict(images)
        self.nodes = list(nodes)
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.tick_s = tick_s
        self.probe_interval_s = probe_interval_s
        self.crash_backoff_s = crash_backoff_s
        self.max_grace_s = max_grace_s
        self.runs: dict[tuple[str, str], _PodRun] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fake-kubelet", daemon=True)
        self._lock = threading.Lock()
        api.on_pod_delete = self._on_delete

    def start(self) -> FakeKubelet:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the loop and kill every process still running (end of a test)."""
        self._stop.set()
        self._thread.join(10)
        with self._lock:
            runs = list(self.runs.values())
        for run in runs:
            run.kill(0.5)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> FakeKubelet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def running_pids(self) -> list[int]:
        with self._lock:
            return [r.proc.pid for r in self.runs.values() if r.proc is not None and r.proc.poll() is None]

    def gpu_request(self, pod: Obj) -> dict[str, int]:
        limits = ((pod["spec"]["containers"][0].get("resources") or {}).get("limits")) or {}
        return {k: int(v) for k, v in limits.items() if k.endswith("/gpu")}

    def used(self, node: str) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._lock:
            runs = [r for r in self.runs.values() if r.node == node and not r.done]
        for run in runs:
            pod = self.api.get("pods", run.ns, run.name)
            if pod is None or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            for r, n in self.gpu_request(pod).items():
                out[r] = out.get(r, 0) + n
        return out

    def _on_delete(self, namespace: str, name: str) -> None:
        with self._lock:
            run = self.runs.get((namespace, name))
        if run is None:  # never picked up: nothing runs, remove it now
            self.api.remove("pods", namespace, name)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pod in self.api.list("pods"):
                key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
                with self._lock:
                    run = self.runs.get(key)
                    if run is None or run.uid != pod["metadata"]["uid"]:
                        run = _PodRun(self, *key, uid=pod["metadata"]["uid"])
                        self.runs[key] = run
                try:
                    run.step()
                except Exception as exc:  # a fake's bug must show, not hang the test
                    print(f"fake kubelet: {key}: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._stop.wait(self.tick_s)
