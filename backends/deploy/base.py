"""The deploy-backend protocol: how an engine instance is started, watched and stopped.

A *deploy backend* (local subprocess, docker, kubernetes) turns an engine's
:class:`~backends.engines.base.LaunchPlan` into a running server and gives back a
:class:`Deployment` handle. The reconciler's experiment runner is its only caller, and uses it
the same way whatever the backend::

    dep = backend.deploy(plan, name=..., gpu_ids=lease.ids, log_path=..., labels=...)
    try:
        dep.wait_ready(spec.backend.startup_timeout, cancel=stop)
        ...benchmark dep.base_url...
    except EngineFailure as failure:
        ...record failure.to_dict() (kind, message, exit code, log tail)...
    finally:
        dep.teardown()

Why a ``typing.Protocol``: the protocol is the contract the runner relies on, stated in the
docstrings below and checked by the contract suite in ``tests/contract/backend_contract.py``,
which every backend runs; a test double satisfies it without inheriting anything. What the
three real backends do the same way (the registry of live deployments, the checks and the
environment of ``deploy``, teardown once, the redacted log tail, the readiness clock, building a
classified failure) is written once in :mod:`backends.deploy.shared`, which they inherit.

Failures are *classified* here, once, for every backend (:func:`classify_failure`): the record
and the optimizer need to know whether a configuration ran out of memory (a property of the
configuration: tell Optuna it failed) or whether the engine never answered (maybe a slow
download: the hint says to raise the start-up timeout). A program the engine needs that is not
there (:func:`looks_like_missing_executable`) is ``executable_missing``, an *environment*
failure: installing the engine must re-measure the configuration, so it is never cached.
"""

from __future__ import annotations

import http.client
import re
import signal
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol, runtime_checkable

from backends.engines.base import LaunchPlan
from core.redact import redact, secret_values
from specs.errors import DeployCancelled, EngineFailure
from specs.records import ENVIRONMENT_FAILURES, EngineFailureKind

__all__ = [
    "ADDRESS_IN_USE_PATTERNS",
    "MISSING_EXECUTABLE_PATTERNS",
    "OOM_PATTERNS",
    "OWN_LINE_MARK",
    "DeployBackend",
    "DeployCancelled",
    "Deployment",
    "EngineFailure",
    "ExitInfo",
    "FailureKind",
    "check_files",
    "check_name",
    "classify_failure",
    "looks_like_address_in_use",
    "looks_like_missing_executable",
    "probe_health",
    "redact",
    "secret_values",
]

FailureKind = EngineFailureKind

#: Substrings (case-insensitive) that mean "this configuration does not fit in memory", taken from
#: the engines' own messages: PyTorch (``torch.OutOfMemoryError: CUDA out of memory``), vLLM
#: (``No available memory for the cache blocks``, ``... larger than the maximum number of tokens
#: that can be stored in KV cache``), SGLang (``Not enough memory. Please try to increase
#: --mem-fraction-static``), llama.cpp (``cudaMalloc failed: out of memory``).
OOM_PATTERNS: tuple[str, ...] = (
    "out of memory",
    "outofmemoryerror",
    "no available memory for the cache blocks",
    "not enough memory. please try to increase",
    "than the maximum number of tokens that can be stored in kv cache",
)

#: Substrings meaning the server could not bind its port (Python ``[Errno 98] Address already in
#: use``, Go/uvicorn spelling, llama.cpp's ``couldn't bind HTTP server socket``).
ADDRESS_IN_USE_PATTERNS: tuple[str, ...] = (
    "address already in use",
    "[errno 98]",
    "eaddrinuse",
    "couldn't bind http server socket",
)

#: Substrings meaning the container runtime could not find the program to run: runc/containerd
#: (``exec: "vllm": executable file not found in $PATH``), crun/Podman (``executable file `x`
#: not found in $PATH``, ``OCI runtime attempted to invoke a command that was not found``).
MISSING_EXECUTABLE_PATTERNS: tuple[str, ...] = (
    "executable file not found",
    "not found in $path",
    "command that was not found",
)

#: How our own lines in an engine log begin (``[autotuner <time>] ...``). They quote command
#: lines, which must never make a failure look like an out-of-memory one.
OWN_LINE_MARK = "[autotuner "

# DNS-1123 label: the strictest of the three backends' naming rules (a Kubernetes pod name), so a
# name valid for one backend is valid for all of them.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class ExitInfo:
    """How an engine's main process ended. Both fields ``None``: it never started."""

    exit_code: int | None = None
    #: the signal number when it was killed by a signal
    signal: int | None = None

    @property
    def returncode(self) -> int | None:
        """``subprocess`` convention: the exit code, or minus the signal number."""
        if self.signal is not None:
            return -self.signal
        return self.exit_code

    def describe(self) -> str:
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"killed by {name}"
        if self.exit_code is not None:
            return f"exited with code {self.exit_code}"
        return "never started"


def classify_failure(log_text: str, default: FailureKind) -> FailureKind:
    """``"oom"`` when the engine's log shows it ran out of memory, else ``default``.

    Out of memory wins over every configuration-side kind: an engine that OOMs often hangs
    instead of exiting (a readiness timeout) or dies later under load (crashed), and the useful
    fact for the record and the optimizer is that the configuration does not fit. It does not
    win over an environment failure (no image, no program, not schedulable): the engine never
    ran, so its log says nothing about the configuration. Our own marked lines
    (:data:`OWN_LINE_MARK`) are not the engine's and are not read.
    """
    if default in ENVIRONMENT_FAILURES:
        return default
    low = "\n".join(line for line in log_text.splitlines() if not line.startswith(OWN_LINE_MARK)).lower()
    if any(p in low for p in OOM_PATTERNS):
        return "oom"
    return default


def looks_like_address_in_use(log_text: str) -> bool:
    low = log_text.lower()
    return any(p in low for p in ADDRESS_IN_USE_PATTERNS)


def looks_like_missing_executable(text: str, program: str = "") -> bool:
    """Whether a runtime's refusal to start says the program is not there: one of
    :data:`MISSING_EXECUTABLE_PATTERNS`, or ``no such file or directory`` about ``program``
    itself (runc's ``stat /x: no such file or directory``; a missing mount source says the same
    words about another path, and is not this)."""
    low = text.lower()
    if any(p in low for p in MISSING_EXECUTABLE_PATTERNS):
        return True
    return bool(program) and "no such file or directory" in low and program.lower() in low


def check_name(name: str) -> str:
    """Validate a deployment name (a DNS-1123 label); a bad one is the caller's bug."""
    if not _NAME.match(name):
        raise ValueError(
            f"deployment name {name!r} must be a DNS-1123 label: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters"
        )
    return name


def probe_health(host: str, port: int, paths: Sequence[str], timeout_s: float) -> str | None:
    """One round of readiness checks over HTTP: ``None`` when every path answers 2xx, else why not."""
    for path in paths:
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            if not 200 <= resp.status < 300:
                return f"{path} answered HTTP {resp.status}"
        except (OSError, http.client.HTTPException) as exc:
            return f"{path}: {type(exc).__name__}: {exc}"
        finally:
            conn.close()
    return None


def check_files(name: str, files: Mapping[str, str]) -> None:
    """A plan's file paths must stay inside the working directory (a bad one is the caller's bug)."""
    for rel in files:
        path = PurePosixPath(rel)
        if not rel or path.is_absolute() or ".." in path.parts:
            raise ValueError(
                f"deployment {name}: file {rel!r} must be a relative path inside the working directory"
            )


@runtime_checkable
class Deployment(Protocol):
    """One running (or failed) engine instance, owned by whoever called ``deploy``.

    Contract (checked by ``tests/contract/backend_contract.py``):

    * :attr:`base_url` is ``http://host:port`` of the OpenAI-compatible server. It may change
      while :meth:`wait_ready` runs (a backend may move the engine to another port when the
      first one was taken), so read it *after* ``wait_ready`` returns.
    * :meth:`wait_ready` blocks until every ``plan.health_paths`` answers 2xx, then returns.
      It raises :class:`EngineFailure` with kind ``"startup_crash"`` (exited first), ``"oom"``
      (exited or hung, and the log shows out of memory), ``"readiness_timeout"`` (still not
      ready after ``timeout_s``), or an environment kind when the engine could not run at all
      (``"executable_missing"``: its program is not installed, or not in the image;
      ``"image_unavailable"``, ``"unschedulable"``, ``"environment"``), always with the log
      tail. It raises
      :class:`DeployCancelled` within about a poll interval of ``cancel`` being set or of
      :meth:`teardown` being called from another thread. It does not tear down: the caller
      always calls :meth:`teardown`.
    * :meth:`alive` is true while the engine's main process runs; false after it exited, after
      teardown, and for a deployment that never started.
    * :meth:`exit_info` is ``None`` while the engine runs, then how it ended.
    * :meth:`failure` builds a classified :class:`EngineFailure` for a problem the *caller*
      noticed (the engine died during the benchmark: ``"crashed"``; too many request errors:
      ``"benchmark_errors"``; the experiment ran out of time: ``"timeout"``), with the log
      tail and exit code filled in (and ``"oom"`` instead when the log shows one).
    * :meth:`teardown` stops everything the deployment started (the whole process group,
      container or pod, children included), waits until it is gone so that the GPUs are
      really free before the lease is released, and removes any bookkeeping (pid file). It is
      idempotent, safe from any thread, and never raises.
    * :meth:`log_tail` returns the last ``n_lines`` of the engine's combined stdout and stderr
      (also after teardown), with values of secret-looking environment variables redacted.

    Thread safety: :meth:`teardown`, :meth:`alive`, :meth:`exit_info` and :meth:`log_tail` may
    be called from any thread, also while another thread is inside :meth:`wait_ready`.
    """

    name: str
    log_path: Path

    @property
    def base_url(self) -> str: ...

    def wait_ready(self, timeout_s: float, *, cancel: threading.Event | None = None) -> None: ...

    def alive(self) -> bool: ...

    def exit_info(self) -> ExitInfo | None: ...

    def failure(self, kind: FailureKind = "crashed", message: str | None = None) -> EngineFailure: ...

    def teardown(self) -> None: ...

    def log_tail(self, n_lines: int = 50) -> str: ...


@runtime_checkable
class DeployBackend(Protocol):
    """Starts engines. One instance per daemon (or ``run``) process, shared by its threads.

    Contract (checked by ``tests/contract/backend_contract.py``):

    * :meth:`deploy` starts the engine and returns at once, without waiting for readiness and
      without raising for engine problems: an engine that cannot even be started (missing
      executable, image pull failure) gives a deployment whose :meth:`Deployment.wait_ready`
      raises :class:`EngineFailure`. So the caller has one failure path. It raises
      ``ValueError`` for caller bugs (bad name; ``len(gpu_ids) != plan.gpus``, or non-empty
      ``gpu_ids`` for a ``plan.simulated`` engine, which leases none; a file path in
      ``plan.files`` that leaves the working directory; a name already live in this backend),
      and :class:`~specs.errors.UserError` when a secret named in ``plan.env_from`` is not set
      in the daemon's environment (no experiment can run until the operator sets it).
    * ``gpu_ids`` come from a lease (``backends.deploy.leases``); the engine sees exactly those GPUs
      and no others (``CUDA_VISIBLE_DEVICES`` for local and docker). A backend whose cluster
      schedules GPUs (Kubernetes: the device plugin assigns ``plan.gpus`` devices) sets the
      class attribute ``schedules_gpus = True``: the runner then takes no lease, passes empty
      ``gpu_ids`` (anything else is a ``ValueError``) and keeps ``plan.gpus`` as the request.
      :attr:`bind_host` is the address the engine must listen on (loopback for a process,
      ``0.0.0.0`` in a container or a pod, whose own network namespace is reached from outside).
    * ``plan.env`` is passed as is; ``plan.env_from`` (engine variable → daemon variable) is
      resolved at deploy time, and those values are treated as secrets: never written to a
      file the backend creates, and redacted from log tails.
    * ``plan.files`` (relative path → content) are written into a fresh working directory of
      the deployment before the engine starts; relative paths in the argv resolve against it.
    * ``labels`` are attached to whatever the backend creates (pid file, container labels, pod
      labels) so that it can be found again after a crash; ``name`` is a DNS-1123 label,
      unique among this backend's live deployments.
    * The engine's output goes to ``log_path`` (the file is appended to, never truncated).
    * Every backend also attaches its own ownership mark, so that :meth:`cleanup_orphans`
      finds what an earlier, dead process of this tool left running: engine processes,
      containers or pods. It stops them and returns their names; it never touches
      deployments whose owner is still alive (another ``autotuner run`` on the same host, or
      this process's own), and never a process that merely reuses a recorded pid.
    """

    kind: str

    @property
    def bind_host(self) -> str:
        """The address the engine must listen on (the ``host`` given to the engine mapping): the
        loopback address for a local process, every address (``0.0.0.0``) inside a container's
        or pod's own network namespace, where only the published port or the service reaches it."""
        ...

    def deploy(
        self,
        plan: LaunchPlan,
        *,
        name: str,
        gpu_ids: Sequence[int],
        log_path: Path,
        labels: Mapping[str, str],
    ) -> Deployment: ...

    def cleanup_orphans(self) -> list[str]: ...
