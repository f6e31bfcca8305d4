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

Why a ``typing.Protocol`` and not a base class: backends share no code worth inheriting (a
subprocess, a container and a pod have nothing in common below this surface), and a protocol
keeps ``docker``/``kubernetes`` free to be thin wrappers over their client libraries. What they
*must* share is behaviour, stated in the docstrings below and checked by the contract suite in
``tests/contract/backend_contract.py``, which every backend runs.

Failures are *classified* here, once, for every backend (:func:`classify_failure`): the record
and the optimizer need to know whether a configuration ran out of memory (a property of the
configuration: tell Optuna it failed) or whether the engine never answered (maybe a slow
download: the hint says to raise the start-up timeout).
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from backends.engines.base import LaunchPlan
from specs.errors import AutotunerError
from specs.model import SECRET_HINT

__all__ = [
    "ADDRESS_IN_USE_PATTERNS",
    "OOM_PATTERNS",
    "DeployBackend",
    "DeployCancelled",
    "Deployment",
    "EngineFailure",
    "ExitInfo",
    "FailureKind",
    "check_name",
    "classify_failure",
    "looks_like_address_in_use",
    "redact",
    "secret_values",
]

FailureKind = Literal[
    "startup_crash",
    "oom",
    "readiness_timeout",
    "crashed",
    "benchmark_errors",
    "timeout",
    # environment failures (see specs.records.ENVIRONMENT_FAILURES): the host, not the flags
    "executable_missing",
    "image_unavailable",
    "model_missing",
    "gpus_unavailable",
    "unschedulable",
    "environment",
]

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

_HINTS: dict[FailureKind, str] = {
    "oom": "the configuration does not fit in GPU memory: lower the memory fraction, the batch or "
    "sequence limits, the context length, or use more GPUs (tensor parallel)",
    "startup_crash": "the engine exited before it was ready; the log tail above shows why (often a "
    "flag value the engine rejects, or a missing model)",
    "readiness_timeout": "the engine did not answer its health checks in time; if the model is large or "
    "must be downloaded first, raise spec.backend.startupTimeout",
    "crashed": "the engine died after it was ready; the log tail above shows why",
    "benchmark_errors": "the engine answered with errors under load; see the log tail and the error counts",
    "timeout": "the experiment ran past its time limit (spec.search.experimentTimeout)",
    "executable_missing": "the engine's executable is not installed on this host; install it (the "
    "experiment is retried, not cached)",
    "image_unavailable": "the container image is neither present nor pullable; pull or build it on the "
    "host, or fix spec.engine.image (the experiment is retried, not cached)",
    "model_missing": "the model could not be found; check spec.model.id and the model cache",
    "gpus_unavailable": "this host has too few usable GPUs for the configuration; add GPUs or lower "
    "the parallel settings",
    "unschedulable": "the cluster could not place the experiment; check GPU capacity, node selectors "
    "and tolerations",
    "environment": "the host or the container engine is not usable right now; see the message",
}

# DNS-1123 label: the strictest of the three backends' naming rules (a Kubernetes pod name), so a
# name valid for one backend is valid for all of them.
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class EngineFailure(AutotunerError):
    """An engine could not serve: the *experiment* fails, the study goes on.

    ``kind`` is one of :data:`FailureKind`; ``log_tail`` holds the last lines of the engine's
    log (secrets redacted) so that the record explains itself; ``exit_code`` is the engine's
    exit status (negative: killed by that signal), ``None`` when it did not exit or never
    started.
    """

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        log_tail: str = "",
        exit_code: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint if hint is not None else _HINTS.get(kind))
        self.kind: FailureKind = kind
        self.log_tail = log_tail
        self.exit_code = exit_code

    def to_dict(self) -> dict[str, object]:
        """The failure as it goes into an experiment record."""
        return {
            "kind": self.kind,
            "message": self.message,
            "exitCode": self.exit_code,
            "logTail": self.log_tail,
        }


class DeployCancelled(AutotunerError):
    """:meth:`Deployment.wait_ready` stopped because the caller asked (cancel event or teardown).

    Not an engine failure: nothing is known about the configuration, so the experiment must not
    be recorded as FAILED; the runner re-queues it.
    """


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
    """``"oom"`` when the log shows the engine ran out of memory, else ``default``.

    Out of memory wins over every other kind: an engine that OOMs often hangs instead of exiting
    (a readiness timeout) or dies later under load (crashed), and the useful fact for the record
    and the optimizer is that the configuration does not fit.
    """
    low = log_text.lower()
    if any(p in low for p in OOM_PATTERNS):
        return "oom"
    return default


def looks_like_address_in_use(log_text: str) -> bool:
    low = log_text.lower()
    return any(p in low for p in ADDRESS_IN_USE_PATTERNS)


def secret_values(env: Mapping[str, str]) -> list[str]:
    """Values of secret-looking variables (``*TOKEN*``, ``*API_KEY*``...), longest first.

    An engine may echo its environment or a token-bearing URL into its log, and log tails go
    into records that are committed; these values are blanked out of every tail we hand out.
    Very short values are skipped: redacting "1" would shred the log and protect nothing.
    """
    values = {v for k, v in env.items() if SECRET_HINT.search(k) and len(v) >= 4}
    return sorted(values, key=len, reverse=True)


def redact(text: str, secrets: Sequence[str]) -> str:
    for value in secrets:
        text = text.replace(value, "***")
    return text


def check_name(name: str) -> str:
    """Validate a deployment name (a DNS-1123 label); a bad one is the caller's bug."""
    if not _NAME.match(name):
        raise ValueError(
            f"deployment name {name!r} must be a DNS-1123 label: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters"
        )
    return name


@runtime_checkable
class Deployment(Protocol):
    """One running (or failed) engine instance, owned by whoever called ``deploy``.

    Contract (checked by ``tests/contract/backend_contract.py``):

    * :attr:`base_url` is ``http://host:port`` of the OpenAI-compatible server. It may change
      while :meth:`wait_ready` runs (a backend may move the engine to another port when the
      first one was taken), so read it *after* ``wait_ready`` returns.
    * :meth:`wait_ready` blocks until every ``plan.health_paths`` answers 2xx, then returns.
      It raises :class:`EngineFailure` with kind ``"startup_crash"`` (exited first), ``"oom"``
      (exited or hung, and the log shows out of memory) or ``"readiness_timeout"`` (still not
      ready after ``timeout_s``), always with the log tail. It raises
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
    * ``gpu_ids`` come from a lease (``reconciler.leases``); the engine sees exactly those GPUs
      and no others (``CUDA_VISIBLE_DEVICES`` for local and docker). A backend whose cluster
      schedules GPUs (Kubernetes: the device plugin assigns ``plan.gpus`` devices) sets the
      class attribute ``schedules_gpus = True``: the runner then takes no lease, passes empty
      ``gpu_ids`` (anything else is a ``ValueError``) and keeps ``plan.gpus`` as the request.
      ``engine_host``, when a backend sets it, is the address the engine must listen on
      (``0.0.0.0`` in a pod, where the Service and the kubelet reach it from outside).
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
