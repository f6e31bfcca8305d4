"""Git, run as short-lived ``git`` subprocesses.

GitPython's own README warns that it leaks system resources in long-running processes, so the
daemon never keeps a ``Repo`` object: every operation is one ``git`` command with a timeout,
no terminal prompts, and credentials taken from the environment (never written to disk or to a
log: URLs are shown with their userinfo masked).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from core.redact import mask_urls
from specs.errors import GitError

mask = mask_urls  # the one masker (core.redact); kept under git's name for its callers


def git_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "true",
            "LC_ALL": "C",
            "GIT_AUTHOR_NAME": env.get("GIT_AUTHOR_NAME", "autotuner"),
            "GIT_AUTHOR_EMAIL": env.get("GIT_AUTHOR_EMAIL", "autotuner@localhost"),
            "GIT_COMMITTER_NAME": env.get("GIT_COMMITTER_NAME", "autotuner"),
            "GIT_COMMITTER_EMAIL": env.get("GIT_COMMITTER_EMAIL", "autotuner@localhost"),
        }
    )
    return env


def git(args: Sequence[str], cwd: Path | str, *, timeout: float = 120, check: bool = True) -> str:
    """Run ``git ARGS`` in ``cwd`` and return stdout; raise :class:`GitError` on failure."""
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=git_env(),
            capture_output=True,
            text=True,
            # file names are bytes chosen by whoever pushed: never a UnicodeDecodeError
            errors="surrogateescape",
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise GitError(f"git {mask(' '.join(args[:2]))} timed out after {timeout:g}s") from None
    except FileNotFoundError:
        raise GitError("git is not installed (it is needed for specs repositories)") from None
    if check and proc.returncode != 0:
        detail = mask(
            (proc.stderr or proc.stdout).strip().splitlines()[-1]
            if (proc.stderr or proc.stdout).strip()
            else ""
        )
        raise GitError(f"git {mask(' '.join(args[:3]))} failed: {detail}")
    return proc.stdout
