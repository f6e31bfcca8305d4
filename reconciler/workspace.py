"""The daemon's working clone of the specs repository, and the commit-back.

* The repository is a local path or a URL (https with a token from the environment, or ssh).
  The daemon keeps its own clone under ``<state dir>/repo``; it never works in the user's tree.
* Desired state is ``specs/*.yaml`` at the *fetched* revision of the spec branch, read straight
  from git objects (``git cat-file --batch``), so it never depends on what is checked out.
* Results are committed on the results branch (the spec branch unless configured otherwise):
  one writer (a lock), a commit only when ``git add`` staged something, a message naming the spec
  and experiment, then push; a rejected push (someone else pushed) is followed by fetch, rebase
  and retry. History is never rewritten on the remote and ``specs/`` is never staged.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from reconciler.git import GitError, git, git_env, mask

log = logging.getLogger(__name__)

PUSH_RETRIES = 5


def _with_token(url: str) -> str:
    """``https://host/...`` + ``AUTOTUNER_GIT_TOKEN`` → credentials for this process only. The token
    lives in the remote URL of the daemon's private clone (mode 0700 state dir) and is masked in
    every message; ssh URLs use the user's ssh agent/keys."""
    token = os.environ.get("AUTOTUNER_GIT_TOKEN")
    if token and url.startswith("https://") and "@" not in url.split("/")[2]:
        user = os.environ.get("AUTOTUNER_GIT_USER", "x-access-token")
        return url.replace("https://", f"https://{user}:{token}@", 1)
    return url


@dataclass
class Workspace:
    repo: str
    clone_dir: Path
    branch: str = "main"
    results_branch: str | None = None
    push: bool = True

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        if "://" not in self.repo and not self.repo.startswith("git@") and Path(self.repo).exists():
            self.repo = str(Path(self.repo).resolve())
        self.target = self.results_branch or self.branch

    # ------------------------------------------------------------------ sync

    def ensure_clone(self) -> None:
        with self.lock:
            if (self.clone_dir / ".git").is_dir():
                return
            self.clone_dir.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(self.clone_dir.parent, 0o700)
            tmp = self.clone_dir.with_name(self.clone_dir.name + ".tmp")
            if tmp.exists():
                subprocess.run(["rm", "-rf", str(tmp)], check=False)
            git(
                ["clone", "--quiet", "--no-checkout", _with_token(self.repo), str(tmp)],
                self.clone_dir.parent,
                timeout=600,
            )
            os.replace(tmp, self.clone_dir)
            git(["config", "user.name", os.environ.get("GIT_AUTHOR_NAME", "autotuner")], self.clone_dir)
            git(
                ["config", "user.email", os.environ.get("GIT_AUTHOR_EMAIL", "autotuner@localhost")],
                self.clone_dir,
            )
            self._checkout_target()

    def _checkout_target(self) -> None:
        remote = f"origin/{self.target}"
        if self._has_ref(f"refs/remotes/{remote}"):
            git(["checkout", "-q", "-B", self.target, remote], self.clone_dir)
        elif self._has_ref(f"refs/remotes/origin/{self.branch}"):
            # a results branch that does not exist yet starts from the spec branch
            git(["checkout", "-q", "-B", self.target, f"origin/{self.branch}"], self.clone_dir)
        else:
            raise GitError(f"branch {self.branch!r} not found in {mask(self.repo)}")

    def _has_ref(self, ref: str) -> bool:
        try:
            git(["rev-parse", "--verify", "-q", ref], self.clone_dir)
            return True
        except GitError:
            return False

    def fetch(self) -> str:
        """Fetch and return the spec branch's revision."""
        with self.lock:
            self.ensure_clone()
            git(["fetch", "--quiet", "--prune", "origin"], self.clone_dir, timeout=50)
            return git(["rev-parse", f"origin/{self.branch}"], self.clone_dir).strip()

    def specs_revision(self, revision: str) -> str:
        """The last commit at or before ``revision`` that changed ``specs/``: the revision of the
        desired state. Results commits on the same branch do not change it, so the daemon's own
        commits never look like new work (and never rewrite ``lastAppliedRevision``)."""
        out = git(["log", "-1", "--format=%H", revision, "--", "specs"], self.clone_dir).strip()
        return out or revision

    def spec_files(self, revision: str) -> dict[str, bytes]:
        """``specs/*.yaml`` and ``*.yml`` (recursively) at ``revision``: path → content."""
        listing = git(["ls-tree", "-r", "-z", "--name-only", revision, "--", "specs"], self.clone_dir)
        paths = [p for p in listing.split("\0") if p.endswith((".yaml", ".yml"))]
        if not paths:
            return {}
        # -z: requests end with NUL, so a path holding a newline (a file name is the pusher's
        # choice) cannot split a request in two and shift every answer after it
        proc = subprocess.run(
            ["git", "cat-file", "--batch", "-z"],
            cwd=self.clone_dir,
            env=git_env(),
            check=True,
            timeout=120,
            input=b"".join(f"{revision}:{p}".encode("utf-8", "surrogateescape") + b"\0" for p in paths),
            capture_output=True,
        )
        out: dict[str, bytes] = {}
        data = proc.stdout
        pos = 0
        for path in paths:
            header_end = data.index(b"\n", pos)
            header = data[pos:header_end].split()
            if header[-1:] == [b"missing"]:  # e.g. a submodule's commit: no content follows
                pos = header_end + 1
                continue
            if len(header) != 3 or not header[2].isdigit():
                raise GitError(f"unexpected answer from git cat-file for {path!r}")
            size = int(header[2])
            if header[1] != b"blob":
                pos = header_end + 1 + size + 1
                continue
            out[path] = data[header_end + 1 : header_end + 1 + size]
            pos = header_end + 1 + size + 1
        return out

    # ------------------------------------------------------------------ commit-back

    @property
    def results_dir(self) -> Path:
        return self.clone_dir / "results"

    def commit(self, message: str) -> bool:
        """Commit everything under ``results/``; False when nothing changed."""
        with self.lock:
            if not self.results_dir.exists():
                return False
            # lock files (Optuna's journal lock) and temp files of atomic writes come and go
            # while studies run: never stage them
            git(
                [
                    "add",
                    "-A",
                    "--",
                    "results",
                    ":(exclude,glob)results/**/*.lock",
                    ":(exclude,glob)results/**/*.tmp",
                ],
                self.clone_dir,
            )
            staged = subprocess.run(
                ["git", "diff", "--cached", "--quiet"], cwd=self.clone_dir, env=git_env(), timeout=60
            ).returncode
            if staged == 0:
                return False
            git(["commit", "-q", "--no-verify", "-m", message], self.clone_dir)
            return True

    def publish(self) -> bool:
        """Push local commits; on rejection fetch, rebase onto the remote and retry."""
        if not self.push:
            return False
        with self.lock:
            for attempt in range(1, PUSH_RETRIES + 1):
                if not self._ahead():
                    return False
                try:
                    git(
                        ["push", "--quiet", "origin", f"HEAD:refs/heads/{self.target}"],
                        self.clone_dir,
                        timeout=300,
                    )
                    return True
                except GitError as exc:
                    log.info(
                        "push rejected (attempt %d/%d): %s; fetching and rebasing", attempt, PUSH_RETRIES, exc
                    )
                    git(["fetch", "--quiet", "origin"], self.clone_dir, timeout=300)
                    if self._has_ref(f"refs/remotes/origin/{self.target}"):
                        try:
                            git(
                                ["rebase", "--quiet", "--autostash", f"origin/{self.target}"],
                                self.clone_dir,
                                timeout=300,
                            )
                        except GitError:
                            git(["rebase", "--abort"], self.clone_dir, check=False)
                            raise
                    time.sleep(min(2.0, 0.2 * attempt))
            raise GitError(f"push to {mask(self.repo)} still rejected after {PUSH_RETRIES} attempts")

    def _ahead(self) -> bool:
        if not self._has_ref(f"refs/remotes/origin/{self.target}"):
            return True
        count = git(["rev-list", "--count", f"origin/{self.target}..HEAD"], self.clone_dir).strip()
        return count != "0"

    def head(self) -> str:
        return git(["rev-parse", "HEAD"], self.clone_dir).strip()
