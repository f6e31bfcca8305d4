"""Git, run as short-lived ``git`` subprocesses: the one place in the daemon that runs git.

GitPython's own README warns that it leaks system resources in long-running processes, so the
daemon never keeps a ``Repo`` object: every operation is one ``git`` command with a timeout,
no terminal prompts, and credentials taken from the environment (never written to disk or to a
log: URLs are shown with their userinfo masked).

Every failure a git command can have is a :class:`~specs.errors.GitError` (transient: the pass
backs off and retries): a non-zero exit, a timeout, git missing. Nothing else spawns git, so no
``TimeoutExpired`` or ``CalledProcessError`` can escape as if it were a bug. Three shapes of call:
:func:`git` (text out), :func:`git_bytes` (bytes in and out, for plumbing: blobs, index info,
``cat-file --batch``) and :func:`git_stream` (a history walk read as it comes, stopped early).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
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


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    return {**git_env(), **extra} if extra else git_env()


def _run(
    args: Sequence[str],
    cwd: Path | str,
    *,
    timeout: float,
    check: bool,
    env: Mapping[str, str] | None,
    data: bytes | None,
) -> subprocess.CompletedProcess[bytes]:
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=_env(env),
            input=data,
            capture_output=True,
            timeout=timeout,
            # no stdin to wait on when there is no input: git never prompts
            stdin=None if data is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise GitError(f"git {mask(' '.join(args[:2]))} timed out after {timeout:g}s") from None
    except FileNotFoundError:
        raise GitError("git is not installed (it is needed for specs repositories)") from None
    if check and proc.returncode != 0:
        out = (proc.stderr or proc.stdout).decode("utf-8", "replace").strip()
        detail = mask(out.splitlines()[-1] if out else "")
        raise GitError(f"git {mask(' '.join(args[:3]))} failed: {detail}")
    return proc


def git(
    args: Sequence[str],
    cwd: Path | str,
    *,
    timeout: float = 120,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    data: bytes | None = None,
) -> str:
    """Run ``git ARGS`` in ``cwd`` and return stdout; raise :class:`GitError` on failure.
    ``env`` adds to git's environment (e.g. ``GIT_INDEX_FILE``); ``data`` is fed on stdin."""
    proc = _run(args, cwd, timeout=timeout, check=check, env=env, data=data)
    # file names are bytes chosen by whoever pushed: never a UnicodeDecodeError
    return proc.stdout.decode("utf-8", "surrogateescape")


def git_bytes(
    args: Sequence[str],
    cwd: Path | str,
    *,
    timeout: float = 300,
    env: Mapping[str, str] | None = None,
    data: bytes | None = None,
) -> bytes:
    """:func:`git` for binary output (``cat-file --batch``): stdout as bytes."""
    return _run(args, cwd, timeout=timeout, check=True, env=env, data=data).stdout


@contextlib.contextmanager
def git_stream(args: Sequence[str], cwd: Path | str, *, timeout: float = 120) -> Iterator[Iterator[bytes]]:
    """Run ``git ARGS`` and yield its stdout in chunks as they come; leaving the ``with`` block
    stops git (a history walk that found what it wanted need not read the rest). Exceeding
    ``timeout`` while reading raises :class:`GitError`; the exit status is not checked (git is
    killed when the caller stops early), so callers treat a short read as "not found"."""
    try:
        proc = subprocess.Popen(
            ["git", *args],
            cwd=cwd,
            env=git_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise GitError("git is not installed (it is needed for specs repositories)") from None
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout

    def chunks() -> Iterator[bytes]:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(timeout=left):
                    raise GitError(f"git {mask(' '.join(args[:2]))} timed out after {timeout:g}s")
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    return
                yield chunk

    try:
        yield chunks()
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
