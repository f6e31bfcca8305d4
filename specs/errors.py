"""Every error kind of the project, in one place (after pip's and httpx's exception trees).

Three kinds, because each is handled differently by the reconciler:

* :class:`UserError` — the input is wrong (invalid spec, missing dataset file). Located,
  actionable, never retried until the input changes. :class:`SpecError` carries a list of
  :class:`SpecProblem` so that *every* problem of a spec is reported at once.
* :class:`TransientError` — I/O, git or backend trouble that may pass. Retried with backoff.
* Anything else is a bug: it crashes loudly and systemd restarts the daemon.

Every exception the product raises on purpose is defined here. Two exceptions to the rule:

* the simulated engine (``backends/sim/``) is a separate program that imitates a real engine's
  failures (``CUDA out of memory``, an HTTP 400 with OpenAI's error type), and its exceptions
  model what that engine prints, not our error kinds;
* ``core.faults.InjectedFault`` is a simulated *bug* (it must not be one of our kinds, or a
  handler would contain it), and ``core`` imports nothing of ours, so it cannot live here.

Private control-flow exceptions (``_Refused``, ``_NotFound``) stay beside the one function that
raises and catches them; they never leave their module.

:class:`UnsafePath` is an ``OSError``, not a :class:`UserError`: the readers that raise it raise
``OSError`` for the same file too (missing, unreadable), their callers handle both in one
``except OSError``, and the reconciler treats an ``OSError`` that escapes as transient. It is a
user's mistake in substance, and every caller that can say so turns it into a located
:class:`SpecProblem` or :class:`DatasetError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from specs.records import EngineFailureKind


class AutotunerError(Exception):
    """Base of every error this project raises on purpose."""

    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class UserError(AutotunerError):
    """The user's input is wrong; retrying without a change cannot help."""


class TransientError(AutotunerError):
    """Something outside us failed and may work later (network, git remote, backend)."""


class MissingExtraError(UserError):
    """An optional dependency is needed by the spec but not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"this spec needs the Python package {module!r}, which is not installed",
            hint=f"pip install 'autotuner[{extra}]'",
        )
        self.module = module
        self.extra = extra


@dataclass(frozen=True, order=True)
class SpecProblem:
    """One located problem in a spec file: ``file:line: field.path: message``."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "path": self.path, "message": self.message}


class SpecError(UserError):
    """A spec is invalid; :attr:`problems` lists every located problem."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = sorted(set(problems), key=lambda p: (p.file, p.line or 0, p.path, p.message))
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid spec")


# -- paths (specs.paths) ------------------------------------------------------------------------


class UnsafePath(OSError):
    """A path that a rule of :mod:`specs.paths` refuses; ``str()`` is a message for the spec's author."""


class OutsideRoots(UnsafePath):
    """The path resolves outside every allowed root."""


class NotRegular(UnsafePath):
    """A symlink, device, pipe or socket where a regular file was expected."""


class TooLarge(UnsafePath):
    """The file is above the byte cap."""


# -- engines and backends ----------------------------------------------------------------------


@dataclass(frozen=True)
class Rejection:
    """Why one configuration cannot run on an engine.

    :attr:`fields` names what caused it, most responsible first: search-axis names
    (``parallel.dp``, ``quant.preset``, ``max-num-seqs``) or spec places written as dotted paths
    under ``spec`` (``engine.args.tp-size``, ``model.servedName``, ``backend.gpus``), so that
    ``check_spec`` can point at the YAML line.
    """

    message: str
    fields: tuple[str, ...] = ()


class ConfigRejected(UserError):
    """A configuration the engine would refuse; :attr:`rejections` says why."""

    def __init__(self, engine: str, rejections: list[Rejection]) -> None:
        self.engine = engine
        self.rejections = list(rejections)
        super().__init__(f"{engine}: " + "; ".join(r.message for r in self.rejections))


class ReplayTableError(UserError):
    """A replay table that cannot be read; the message is located (``file:line: column: message``)."""


class KubernetesAccessError(UserError):
    """The daemon's Kubernetes account may not do something it needs (401/403).

    A user error (the operator's configuration): retrying cannot help until the Role is fixed.
    """


class KubernetesApiError(TransientError):
    """The API server kept failing (429, 5xx, connection) after every retry."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(
            message, hint=hint or "the experiment is tried again later; check the API server's health"
        )
        self.status = status


#: the hint each engine failure kind carries unless the backend gives a better one
FAILURE_HINTS: dict[str, str] = {
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


class EngineFailure(AutotunerError):
    """An engine could not serve: the *experiment* fails, the study goes on.

    ``kind`` is one of :data:`specs.records.EngineFailureKind`; ``log_tail`` holds the last
    lines of the engine's log (secrets redacted) so that the record explains itself;
    ``exit_code`` is the engine's exit status (negative: killed by that signal), ``None`` when it
    did not exit or never started.
    """

    def __init__(
        self,
        kind: EngineFailureKind,
        message: str,
        *,
        log_tail: str = "",
        exit_code: int | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint if hint is not None else FAILURE_HINTS.get(kind))
        self.kind: EngineFailureKind = kind
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


class DatasetError(UserError):
    """A dataset cannot be read or turned into requests.

    The user's to fix (a missing file, a row without a prompt, a URL that answers 404): the
    reconciler marks the spec ``Stalled`` instead of retrying. It is raised while the workload is
    built, before any engine starts, and every message names the file (or URL) and, where there is
    one, the line, row or byte offset."""


class AdapterError(UserError):
    """Another tool's result file or folder cannot be converted."""


class ConstraintError(UserError):
    """A ``search.constraints`` expression is not one we accept."""


class ObjectiveMissing(UserError):
    """An objective metric was not measured, so the experiment cannot be scored."""


class FakeInventoryError(UserError):
    """A fake GPU inventory string (``AUTOTUNER_FAKE_GPUS``) cannot be parsed."""


class InsufficientGpusError(UserError):
    """An experiment needs more GPUs than this host has: waiting cannot help."""


class ConfigError(UserError):
    """A daemon setting is wrong: exit 2, which the unit's ``RestartPreventExitStatus=2`` does not
    restart (restarting cannot fix a configuration)."""


# -- git ----------------------------------------------------------------------------------------


class HostUnavailable(TransientError):
    """An experiment failed on the environment's side (``specs.records.ENVIRONMENT_FAILURES``:
    a missing executable or image, too few GPUs, an unschedulable pod): the study pauses instead
    of spending its budget on a host that cannot run anything, and is retried with backoff."""


class GitError(TransientError):
    """A git command failed or timed out (the remote may be down): retried with backoff."""


class StateDirBusy(TransientError):
    """Another daemon holds the lock of the state folder; it may exit, so this is retried."""
