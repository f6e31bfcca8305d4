"""Every error kind of the project, in one place (after pip's and httpx's exception trees).

Three kinds, because each is handled differently by the reconciler:

* :class:`UserError` — the input is wrong (invalid spec, missing dataset file). Located,
  actionable, never retried until the input changes. :class:`SpecError` carries a list of
  :class:`SpecProblem` so that *every* problem of a spec is reported at once.
* :class:`TransientError` — I/O, git or backend trouble that may pass. Retried with backoff.
* Anything else is a bug: it crashes loudly and systemd restarts the daemon.
"""

from __future__ import annotations

from dataclasses import dataclass


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
