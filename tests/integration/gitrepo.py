"""A bare remote and a user's clone of it, for the integration and security tests on real git."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from reconciler.git import git


class Remote:
    """``remote.git`` (bare) plus ``user/`` (a user's clone). ``default`` is the branch git gives a
    plain ``git init --bare`` (``init.defaultBranch``); the user pushes to it."""

    def __init__(self, root: Path, default: str = "main") -> None:
        self.root = root
        self.branch = default
        self.remote = root / "remote.git"
        self.user = root / "user"
        self.remote.mkdir()
        git(["-c", f"init.defaultBranch={default}", "init", "-q", "--bare"], self.remote)
        git(["clone", "-q", str(self.remote), str(self.user)], root)
        git(["checkout", "-q", "-B", default], self.user)
        (self.user / "README.md").write_text("specs\n")
        self.commit_push("init")

    def commit_push(self, message: str, *, retries: int = 20) -> str:
        git(["add", "-A"], self.user)
        git(["commit", "-q", "-m", message], self.user)
        for _ in range(retries):
            try:
                git(["push", "-q", "origin", f"HEAD:{self.branch}"], self.user)
                return git(["rev-parse", "HEAD"], self.user).strip()
            except Exception:
                self.pull()
        raise AssertionError(f"push of {message!r} still rejected after {retries} tries")

    def put_spec(self, name: str, text: str) -> str:
        (self.user / "specs").mkdir(exist_ok=True)
        (self.user / "specs" / f"{name}.yaml").write_text(text)
        return self.commit_push(f"spec {name}")

    def pull(self) -> None:
        git(["pull", "-q", "--rebase", "origin", self.branch], self.user)

    def head(self, branch: str | None = None) -> str:
        return git(["rev-parse", branch or self.branch], self.remote).strip()

    def log(self, branch: str | None = None) -> list[str]:
        return git(["log", "--format=%s", branch or self.branch], self.remote).splitlines()

    def show(self, path: str, branch: str | None = None) -> str:
        return git(["show", f"{branch or self.branch}:{path}"], self.remote)

    def status(self, name: str) -> dict:
        return json.loads(self.show(f"results/{name}/status.json"))

    def records(self, name: str, branch: str | None = None) -> list[dict]:
        ref = branch or self.branch
        listing = git(
            ["ls-tree", "--name-only", f"{ref}:results/{name}/experiments"], self.remote, check=False
        )
        return [
            json.loads(self.show(f"results/{name}/experiments/{n}", ref))
            for n in listing.split()
            if n[0].isdigit()
        ]


def start_daemon(repo: Remote, state: Path | str, *extra: str, interval: str = "1") -> subprocess.Popen[str]:
    env = {**os.environ, "AUTOTUNER_INTERVAL": interval}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconciler",
            "daemon",
            "--repo",
            str(repo.remote),
            "--state-dir",
            str(state),
            *extra,
        ],
        cwd=repo.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_daemon(proc: subprocess.Popen[str], timeout: float = 90) -> str:
    """SIGTERM, wait, and return everything the daemon logged."""
    if proc.poll() is None:
        proc.terminate()
    _, err = proc.communicate(timeout=timeout)
    return err


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
