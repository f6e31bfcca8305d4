"""The daemon's clone of the specs repository and its state directory: taking it, cloning,
fetching, and reading the desired state straight from git objects.

Layout of the state directory (mode 0700, owned by one process at a time: ``workspace.lock``):
``repo/`` is the clone, whose work tree is a read-only checkout of the spec branch (datasets and
model files named by specs are found there; nothing the daemon runs writes there). Desired state
is ``specs/*.yaml`` at the *fetched* revision, read with ``git cat-file --batch``, so it never
depends on what is checked out. What a killed process left (a partial clone, git's lock files,
the daemon's private index files, half-seeded results) is removed when the directory is taken.

The live results and the commit-back are :mod:`reconciler.workspace`, built on this class.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from core.faults import crash_point
from reconciler.git import GitError, git, git_stream, mask
from reconciler.gitplumbing import read_blobs, rev
from specs.errors import StateDirBusy

log = logging.getLogger(__name__)


def _with_token(url: str) -> str:
    """``https://host/...`` + ``AUTOTUNER_GIT_TOKEN`` → credentials for this process only. The token
    lives in the remote URL of the daemon's private clone (mode 0700 state dir) and is masked in
    every message; ssh URLs use the user's ssh agent/keys."""
    token = os.environ.get("AUTOTUNER_GIT_TOKEN")
    if token and url.startswith("https://") and "@" not in url.split("/")[2]:
        user = os.environ.get("AUTOTUNER_GIT_USER", "x-access-token")
        return url.replace("https://", f"https://{user}:{token}@", 1)
    return url


def is_local(repo: str) -> bool:
    return "://" not in repo and not repo.startswith("git@") and ":" not in repo.split("/")[0]


def resolve_repo(repo: str) -> str:
    """A repository given as a relative path is made absolute at start-up (the clone runs git in
    other directories, where the relative path means something else)."""
    return os.path.abspath(repo) if is_local(repo) else repo


@dataclass
class Clone:
    repo: str
    state_dir: Path
    branch: str | None = None

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.repo = resolve_repo(self.repo)
        self.state_dir = Path(os.path.abspath(self.state_dir))
        self.clone_dir = self.state_dir / "repo"
        self._lock_fd: int | None = None
        self._checked_out: str | None = None

    @property
    def spec_branch(self) -> str:
        if self.branch is None:
            self.ensure_clone()
        assert self.branch is not None
        return self.branch

    @property
    def results_dir(self) -> Path:
        """Where studies write: the live results, outside any git tree."""
        return self.state_dir / "results"

    # ------------------------------------------------------------------ start-up

    def _take_state_dir(self) -> None:
        """One process per state directory; then what a killed one left behind is ours to clean."""
        if self._lock_fd is not None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        fd = os.open(self.state_dir / "workspace.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateDirBusy(
                f"state directory {self.state_dir} is in use by another autotuner process",
                hint="give each daemon or reconcile run its own --state-dir",
            ) from None
        self._lock_fd = fd
        self._clean_leftovers()

    def _clean_leftovers(self) -> None:
        tmp = self.state_dir / "repo.tmp"
        if tmp.exists():
            log.info("removing the partial clone %s left by an interrupted start", tmp)
            shutil.rmtree(tmp, ignore_errors=True)
        gitdir = self.clone_dir / ".git"
        if gitdir.is_dir():
            # lock files of a git command that was killed: nobody else uses this clone
            for pattern in ("*.lock", "refs/**/*.lock", "autotuner-*.index*"):
                for stale in gitdir.glob(pattern):
                    with contextlib.suppress(OSError):
                        stale.unlink()
                        log.info("removed %s left by an interrupted git command", stale)
        if self.results_dir.is_dir():
            for stale in self.results_dir.glob(".*.seed"):
                shutil.rmtree(stale, ignore_errors=True)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def ensure_clone(self) -> None:
        with self.lock:
            self._take_state_dir()
            if not (self.clone_dir / ".git").is_dir():
                self._clone()
            if self.branch is None:
                self.branch = self._remote_head()
                log.info("spec branch: %s (the remote's HEAD)", self.branch)

    def _clone(self) -> None:
        if self.clone_dir.exists():  # an unusable folder: a clone never completed here
            shutil.rmtree(self.clone_dir)
        tmp = self.state_dir / "repo.tmp"
        git(
            ["clone", "--quiet", "--no-checkout", _with_token(self.repo), str(tmp)],
            self.state_dir,
            timeout=600,
        )
        crash_point("clone_done")
        os.replace(tmp, self.clone_dir)
        git(["config", "user.name", os.environ.get("GIT_AUTHOR_NAME", "autotuner")], self.clone_dir)
        git(
            ["config", "user.email", os.environ.get("GIT_AUTHOR_EMAIL", "autotuner@localhost")],
            self.clone_dir,
        )

    def _remote_head(self) -> str:
        """The branch the remote's HEAD names (``git init --bare`` gives ``master`` on many hosts)."""
        git(["remote", "set-head", "origin", "--auto"], self.clone_dir, check=False, timeout=60)
        out = git(["symbolic-ref", "-q", "refs/remotes/origin/HEAD"], self.clone_dir, check=False).strip()
        if out.startswith("refs/remotes/origin/") and rev(self.clone_dir, out):
            return out.removeprefix("refs/remotes/origin/")
        branches = [
            b.strip().removeprefix("origin/")
            for b in git(["branch", "-r", "--format=%(refname:short)"], self.clone_dir).splitlines()
            if b.strip() and b.strip() != "origin/HEAD" and b.strip() != "origin"
        ]
        if len(branches) == 1:
            return branches[0]
        raise GitError(
            f"cannot tell the spec branch of {mask(self.repo)}: its HEAD names no branch"
            + (
                f" and it has {len(branches)} ({', '.join(sorted(branches)[:5])})" if branches else " (empty)"
            ),
            hint="give --branch NAME",
        )

    # ------------------------------------------------------------------ the desired state

    def fetch(self) -> str:
        """Fetch and return the spec branch's revision (the checkout follows it)."""
        with self.lock:
            self.ensure_clone()
            git(["fetch", "--quiet", "--prune", "origin"], self.clone_dir, timeout=50)
            ref = f"refs/remotes/origin/{self.spec_branch}"
            revision = rev(self.clone_dir, ref)
            if revision is None:
                raise GitError(
                    f"branch {self.spec_branch!r} not found in {mask(self.repo)}",
                    hint="push the spec branch, or give --branch NAME",
                )
            if revision != self._checked_out:
                # datasets and model files are read from here; nothing writes to it
                git(["checkout", "-q", "-f", "--detach", revision], self.clone_dir, timeout=300)
                self._checked_out = revision
            return revision

    def specs_revision(self, revision: str) -> str:
        """The last commit at or before ``revision`` that changed ``specs/``."""
        out = git(["log", "-1", "--format=%H", revision, "--", "specs"], self.clone_dir).strip()
        return out or revision

    def file_revisions(self, revision: str, paths: Iterable[str]) -> dict[str, str]:
        """For each path, the last commit at or before ``revision`` that touched it: one history
        walk for all of them, stopped as soon as each is found (a spec's own last-applied revision,
        so that a push to one spec changes nothing in the others' status)."""
        wanted = set(paths)
        found: dict[str, str] = {}
        if not wanted:
            return found
        walk = ["log", "--format=%x01%H", "--name-only", "-z", "--no-renames", revision, "--", "specs"]
        with git_stream(walk, self.clone_dir) as chunks:
            commit = ""
            buf = b""
            for chunk in chunks:
                buf += chunk
                *items, buf = buf.split(b"\0")
                for item in items:
                    item = item.lstrip(b"\n")
                    if item.startswith(b"\x01"):
                        sha, _, item = item[1:].partition(b"\n")
                        commit = sha.decode()
                    name = item.decode(errors="surrogateescape")
                    if name in wanted and name not in found:
                        found[name] = commit
                if len(found) == len(wanted):
                    break
        for path in wanted - set(found):
            found[path] = revision
        return found

    def spec_files(self, revision: str) -> dict[str, bytes]:
        """``specs/*.yaml`` and ``*.yml`` (recursively) at ``revision``: path → content."""
        listing = git(["ls-tree", "-r", "-z", "--name-only", revision, "--", "specs"], self.clone_dir)
        paths = [p for p in listing.split("\0") if p.endswith((".yaml", ".yml"))]
        # -z: requests end with NUL, so a path holding a newline (a file name is the pusher's
        # choice) cannot split a request in two and shift every answer after it
        blobs = read_blobs(self.clone_dir, [f"{revision}:{p}" for p in paths], timeout=120)
        return {p: blob for p, blob in zip(paths, blobs, strict=True) if blob is not None}
