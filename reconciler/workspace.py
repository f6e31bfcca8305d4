"""The daemon's clone of the specs repository, its live results, and the commit-back.

Layout under the state directory (mode 0700, owned by one daemon at a time: ``workspace.lock``):

* ``repo/``: the daemon's clone. Its work tree is a read-only checkout of the spec branch, where
  datasets and model files named by specs are found; nothing the daemon runs writes there.
  Desired state is ``specs/*.yaml`` at the *fetched* revision, read straight from git objects
  (``git cat-file --batch``), so it never depends on what is checked out.
* ``results/``: the **live** results. Studies write here and only here: experiment records,
  ``status.json``, ``best/``, the Optuna journal and its lock, the temp files of atomic writes.
* ``commit-back.json``: for each spec, the git tree of ``results/<spec>`` at the last sync.

Commit-back uses git plumbing on a private index, never the work tree: ``read-tree`` of the
fetched remote head, ``update-index`` to replace ``results/<spec>/`` of each spec that changed by
its live files (``hash-object -w``), ``write-tree``, ``commit-tree -p <remote head>``, push. Why
plumbing and not ``git add`` + ``rebase`` in the working clone (the first design): a rebase or
``--autostash`` rewrites files in the tree it runs in, and a study appending to ``study.journal``
in that tree lost appends and crashed inside Optuna (issue 11). Why not a second worktree that we
copy into: it would still need a rebase on every rejected push, and a rebase replays *every* local
commit onto the fetched remote, resurrecting commits a user removed by force-push (issue 10). With
plumbing a rejected push is answered by fetching and rebuilding the one new commit on top of the
fetched head: only the daemon's own change (the live contents of the specs it wrote) is replayed,
the user's history, rewritten or not, is taken as it is, and nothing can conflict. Every push
holds a lease (``--force-with-lease=<branch>:<the head we built on>``): a user who force-pushed
the branch back makes our commit a fast-forward of the rewound branch, and only the lease keeps
it, and the commit it was built on, out.

The journal is committed as a **snapshot**: its bytes up to the last complete line, read *before*
the experiment records are listed (a trial told in the snapshot always has its record in the same
commit, since records are written before the tell). A fresh state directory seeds ``results/<spec>``
from the committed tree and resumes from that snapshot.

Live or committed, which wins: the live copy of a spec is refreshed from the committed tree when
the committed tree changed since the last sync and the daemon has nothing of its own to commit
for that spec (another host ran it, or a user reset it); otherwise the daemon's live copy is what
it commits (results are the daemon's, docs/architecture.md section 4).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from core.atomic import write_bytes
from core.faults import crash_point
from reconciler.git import GitError, git, git_env, mask
from specs.errors import StateDirBusy

log = logging.getLogger(__name__)

PUSH_RETRIES = 5
JOURNAL = "study.journal"
_EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


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
class CommitBack:
    """What one commit-back did, for truthful summaries."""

    commit: str | None = None
    pushed: bool = False
    specs: list[str] = field(default_factory=list)

    @property
    def committed(self) -> bool:
        return self.commit is not None


def _live_files(folder: Path) -> Iterator[tuple[str, Path]]:
    """Regular files under ``folder`` that belong in git, as (relative posix path, path): never a
    symlink, a lock (Optuna's journal lock, also while it is being renamed) or the temp file of
    an atomic write."""
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            # Optuna's lock also lives as ``study.journal.lock<uuid>.rename`` for an instant
            if ".lock" in name or name.endswith(".tmp") or name.startswith("."):
                continue
            path = Path(dirpath) / name
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:  # a study's own short-lived file, gone since the listing
                continue
            if not stat.S_ISREG(mode):
                continue
            yield path.relative_to(folder).as_posix(), path


def journal_snapshot(path: Path) -> bytes:
    """The journal up to its last complete line: a line being appended is not part of the snapshot."""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1]


@dataclass
class Workspace:
    repo: str
    state_dir: Path
    branch: str | None = None
    results_branch: str | None = None
    push: bool = True

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.repo = resolve_repo(self.repo)
        self.state_dir = Path(os.path.abspath(self.state_dir))
        self.clone_dir = self.state_dir / "repo"
        self._lock_fd: int | None = None
        self._checked_out: str | None = None
        self._pending: set[str] = set()
        # its own lock: a study thread marking a change must never wait for a push in progress
        self._pending_lock = threading.Lock()
        self._first_seen: set[str] = set()
        self._synced_path = self.state_dir / "commit-back.json"
        self._synced: dict[str, str | None] = {}
        self._trees_cache: tuple[str, dict[str, str]] | None = None
        self._base_memo: tuple[str | None] | None = None

    @property
    def target(self) -> str:
        return self.results_branch or self.spec_branch

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
        try:
            self._synced = json.loads(self._synced_path.read_text())
        except (OSError, ValueError):
            self._synced = {}

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
            if self.branch is None:
                self.branch = self._remote_head()
                log.info("spec branch: %s (the remote's HEAD)", self.branch)

    def _remote_head(self) -> str:
        """The branch the remote's HEAD names (``git init --bare`` gives ``master`` on many hosts)."""
        git(["remote", "set-head", "origin", "--auto"], self.clone_dir, check=False, timeout=60)
        out = git(["symbolic-ref", "-q", "refs/remotes/origin/HEAD"], self.clone_dir, check=False).strip()
        if out.startswith("refs/remotes/origin/") and self._has_ref(out):
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

    def _has_ref(self, ref: str) -> bool:
        return bool(git(["rev-parse", "--verify", "-q", ref], self.clone_dir, check=False).strip())

    def fetch(self) -> str:
        """Fetch and return the spec branch's revision (the checkout follows it)."""
        with self.lock:
            self.ensure_clone()
            self._base_memo = None
            git(["fetch", "--quiet", "--prune", "origin"], self.clone_dir, timeout=50)
            ref = f"refs/remotes/origin/{self.spec_branch}"
            if not self._has_ref(ref):
                raise GitError(
                    f"branch {self.spec_branch!r} not found in {mask(self.repo)}",
                    hint="push the spec branch, or give --branch NAME",
                )
            revision = git(["rev-parse", ref], self.clone_dir).strip()
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
        proc = subprocess.Popen(
            ["git", "log", "--format=%x01%H", "--name-only", "-z", "--no-renames", revision, "--", "specs"],
            cwd=self.clone_dir,
            env=git_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        try:
            commit = ""
            buf = b""
            while len(found) < len(wanted):
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
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
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
        for path in wanted - set(found):
            found[path] = revision
        return found

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

    # ------------------------------------------------------------------ live ↔ committed

    def _base(self) -> str | None:
        """The commit the next results commit goes on top of (remembered until a ref moves: a
        pass asks once per spec)."""
        if self._base_memo is not None:
            return self._base_memo[0]
        base = self._find_base()
        self._base_memo = (base,)
        return base

    def _find_base(self) -> str | None:
        candidates = [f"refs/remotes/origin/{self.target}", f"refs/remotes/origin/{self.spec_branch}"]
        if not self.push:
            candidates.insert(0, f"refs/heads/{self.target}")
        for ref in candidates:
            sha = git(["rev-parse", "--verify", "-q", ref + "^{commit}"], self.clone_dir, check=False).strip()
            if sha:
                return sha
        return None

    def _committed_trees(self, base: str | None) -> dict[str, str]:
        """``results/<spec>`` tree ids at ``base`` (one ``ls-tree`` per commit, not per spec)."""
        if base is None:
            return {}
        cached = self._trees_cache
        if cached is not None and cached[0] == base:
            return cached[1]
        out = git(["ls-tree", "-z", base, "--", "results/"], self.clone_dir)
        trees: dict[str, str] = {}
        for entry in out.split("\0"):
            meta, _, path = entry.partition("\t")
            parts = meta.split()
            if len(parts) == 3 and parts[1] == "tree":
                trees[path.removeprefix("results/")] = parts[2]
        self._trees_cache = (base, trees)
        return trees

    def sync_live(self, name: str, *, running: bool) -> None:
        """Make ``results/<name>`` current before a pass reads it: seed it from the committed tree
        on a fresh host, refresh it when the committed tree changed and the daemon has nothing of
        its own for this spec, else keep it (it is committed next)."""
        with self.lock:
            if running or name in self.pending:
                return
            self.ensure_clone()
            committed = self._committed_trees(self._base()).get(name)
            live = self.results_dir / name
            synced = self._synced.get(name, "never")
            if name not in self._first_seen:
                self._first_seen.add(name)
                if live.is_dir():
                    tree = self._tree_of_live(name)
                    if tree == committed:
                        self._set_synced({name: committed})
                        return
                    if synced == "never" or tree != synced:
                        # results of ours that never reached the remote (a crash, a failing push)
                        log.info("spec=%s: live results not committed yet; committing them", name)
                        self.mark(name)
                        return
            if committed == synced and live.is_dir():
                return
            if committed is None:
                if live.is_dir() and synced not in ("never", None):
                    log.info("spec=%s: results were removed from the repository; starting over", name)
                    shutil.rmtree(live)
                self._set_synced({name: None})
                return
            self._seed(name, committed)
            self._set_synced({name: committed})

    def _seed(self, name: str, tree: str) -> None:
        listing = git(["ls-tree", "-r", "-z", tree], self.clone_dir)
        blobs: list[tuple[str, str]] = []
        for entry in listing.split("\0"):
            meta, _, rel = entry.partition("\t")
            parts = meta.split()
            # regular files only: a symlink or submodule pushed into results/ is never materialised
            if len(parts) != 3 or parts[1] != "blob" or parts[0] not in ("100644", "100755"):
                continue
            if any(p in ("", ".", "..") or p.startswith(".") for p in rel.split("/")) or any(
                ord(c) < 32 for c in rel
            ):
                continue
            blobs.append((rel, parts[2]))
        tmp = self.results_dir / f".{name}.seed"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if blobs:
            proc = subprocess.run(
                ["git", "cat-file", "--batch"],
                cwd=self.clone_dir,
                env=git_env(),
                check=True,
                timeout=300,
                input="".join(f"{sha}\n" for _, sha in blobs).encode(),
                capture_output=True,
            )
            data, pos = proc.stdout, 0
            for rel, _ in blobs:
                header_end = data.index(b"\n", pos)
                size = int(data[pos:header_end].split()[2])
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data[header_end + 1 : header_end + 1 + size])
                pos = header_end + 1 + size + 1
        live = self.results_dir / name
        old = self.results_dir / f".{name}.old.seed"
        if live.exists():
            os.replace(live, old)
        os.replace(tmp, live)
        shutil.rmtree(old, ignore_errors=True)
        log.info("spec=%s: results taken from the committed tree (%d files)", name, len(blobs))

    def _set_synced(self, trees: dict[str, str | None]) -> None:
        changed = {k: v for k, v in trees.items() if self._synced.get(k, "absent") != v}
        if changed:
            self._synced.update(changed)
            write_bytes(
                self._synced_path, (json.dumps(self._synced, indent=1, sort_keys=True) + "\n").encode()
            )

    # ------------------------------------------------------------------ commit-back

    def mark(self, name: str) -> None:
        """``results/<name>`` changed: the next commit-back takes it."""
        with self._pending_lock:
            self._pending.add(name)
            self._first_seen.add(name)

    @property
    def pending(self) -> set[str]:
        with self._pending_lock:
            return set(self._pending)

    def _index_env(self, name: str) -> dict[str, str]:
        return {**git_env(), "GIT_INDEX_FILE": str(self.clone_dir / ".git" / f"autotuner-{name}.index")}

    def _git_index(self, args: list[str], env: dict[str, str], data: bytes | None = None) -> str:
        proc = subprocess.run(
            ["git", *args],
            cwd=self.clone_dir,
            env=env,
            input=data,
            capture_output=True,
            timeout=300,
            stdin=None if data is not None else subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            detail = mask(proc.stderr.decode(errors="replace").strip()[-300:])
            raise GitError(f"git {' '.join(args[:2])} failed: {detail}")
        return proc.stdout.decode()

    def _entries(self, name: str) -> list[str]:
        """``update-index --index-info`` lines for the live files of one spec (objects written)."""
        folder = self.results_dir / name
        if not folder.is_dir():
            return []
        lines: list[tuple[str, str]] = []
        journal = folder / JOURNAL
        if journal.is_file() and not journal.is_symlink():
            # first: every trial told in this snapshot has its record among the files listed next
            snap = journal_snapshot(journal)
            sha = self._git_index(["hash-object", "-w", "--stdin"], git_env(), snap).strip()
            lines.append((f"results/{name}/{JOURNAL}", sha))
        for attempt in range(3):
            files = [(rel, path) for rel, path in _live_files(folder) if rel != JOURNAL]
            try:
                shas = self._hash_files([path for _, path in files])
                break
            except GitError:
                # a study replaced best/ between the listing and the hashing: list again
                if attempt == 2:
                    raise
        lines += [(f"results/{name}/{rel}", sha) for (rel, _), sha in zip(files, shas, strict=True)]
        return [f"100644 {sha}\t{path}\0" for path, sha in lines]

    def _hash_files(self, paths: list[Path]) -> list[str]:
        if not paths:
            return []
        return self._git_index(
            ["hash-object", "-w", "--no-filters", "--stdin-paths"],
            git_env(),
            "".join(f"{p}\n" for p in paths).encode(),
        ).split()

    def _build_tree(self, base: str | None, names: Iterable[str], env: dict[str, str]) -> str:
        self._git_index(["read-tree", base] if base else ["read-tree", "--empty"], env)
        for name in names:
            old = self._git_index(["ls-files", "-z", "--", f"results/{name}/"], env)
            if old:
                self._git_index(["update-index", "-z", "--force-remove", "--stdin"], env, old.encode())
            entries = self._entries(name)
            if entries:
                self._git_index(
                    ["update-index", "-z", "--add", "--index-info"], env, "".join(entries).encode()
                )
        return self._git_index(["write-tree"], env).strip()

    def _tree_of_live(self, name: str) -> str | None:
        env = self._index_env("probe")
        self._git_index(["read-tree", "--empty"], env)
        entries = self._entries(name)
        if not entries:
            return None
        self._git_index(["update-index", "-z", "--add", "--index-info"], env, "".join(entries).encode())
        return self._git_index(["write-tree", f"--prefix=results/{name}/"], env).strip()

    def commit_back(self, message: str) -> CommitBack:
        """Commit the live results of every spec marked since the last commit-back on top of the
        remote head and push; a rejected push is answered by fetching and building the commit
        again on the new head (never a rebase: see the module docstring)."""
        with self.lock:
            # taken out now: a change marked while this commit is built or pushed goes in the next
            with self._pending_lock:
                names = sorted(self._pending)
                self._pending.clear()
            if not names:
                return CommitBack()
            try:
                return self._commit_back(names, message)
            except BaseException:
                with self._pending_lock:
                    self._pending.update(names)
                raise

    def _commit_back(self, names: list[str], message: str) -> CommitBack:
        try:
            return self._commit_back_once(names, message)
        finally:
            self._base_memo = None  # refs moved (a push, a fetch) or may have

    def _commit_back_once(self, names: list[str], message: str) -> CommitBack:
        self.ensure_clone()
        env = self._index_env("commit")
        for attempt in range(1, PUSH_RETRIES + 1):
            base = self._base()
            tree = self._build_tree(base, names, env)
            base_tree = (
                git(["rev-parse", f"{base}^{{tree}}"], self.clone_dir).strip() if base else _EMPTY_TREE
            )
            if tree == base_tree:
                self._after_sync(names, base)
                return CommitBack(specs=names)
            commit = self._git_index(
                ["commit-tree", tree, *(["-p", base] if base else []), "-F", "-"],
                git_env(),
                message.encode(),
            ).strip()
            if not self.push:
                git(["update-ref", f"refs/heads/{self.target}", commit], self.clone_dir)
                self._after_sync(names, commit)
                return CommitBack(commit=commit, specs=names)
            crash_point("commit_back_push")
            try:
                self._push_onto(commit, self.target, self._remote_sha(self.target))
            except GitError as exc:
                if attempt == PUSH_RETRIES:
                    raise GitError(
                        f"push to {mask(self.repo)} still rejected after {PUSH_RETRIES} attempts: {exc}"
                    ) from None
                log.info(
                    "push rejected (attempt %d/%d): %s; fetching and committing again on the new head",
                    attempt,
                    PUSH_RETRIES,
                    exc,
                )
                git(["fetch", "--quiet", "--prune", "origin"], self.clone_dir, timeout=300)
                self._base_memo = None
                time.sleep(min(2.0, 0.2 * attempt))
                continue
            crash_point("commit_back_pushed")
            git(["update-ref", f"refs/remotes/origin/{self.target}", commit], self.clone_dir)
            self._after_sync(names, commit)
            return CommitBack(commit=commit, pushed=True, specs=names)
        raise AssertionError("unreachable")  # pragma: no cover

    def _remote_sha(self, branch: str) -> str | None:
        """Where our last fetch saw ``branch`` on the remote (None: not there)."""
        ref = f"refs/remotes/origin/{branch}"
        return git(["rev-parse", "--verify", "-q", ref], self.clone_dir, check=False).strip() or None

    def _push_onto(self, commit: str, branch: str, expected: str | None) -> None:
        """Push ``commit`` to ``branch`` only if the remote still has ``expected`` there (a lease).
        A fast-forward check is not enough: after a user force-pushed the branch *back* (to drop a
        leaked credential), a commit built on the dropped commit is a fast-forward of the rewound
        branch, and a plain push would quietly bring the dropped commit back."""
        lease = f"--force-with-lease=refs/heads/{branch}:{expected or ''}"
        git(
            ["push", "--quiet", lease, "origin", f"{commit}:refs/heads/{branch}"], self.clone_dir, timeout=300
        )

    def _after_sync(self, names: list[str], commit: str | None) -> None:
        trees = self._committed_trees(commit)
        self._set_synced({n: trees.get(n) for n in names})

    # ------------------------------------------------------------------ the site branch

    def publish_tree(self, folder: Path, branch: str, message: str) -> str | None:
        """Commit ``folder`` as the whole tree of ``branch`` (an orphan branch: the built site,
        ready for GitHub or GitLab Pages) when it differs from the branch's head, and push it.
        Unchanged files keep their blobs, so a commit's diff is exactly the pages that changed."""
        with self.lock:
            self.ensure_clone()
            env = self._index_env("site")
            files = list(_live_files(folder))
            shas = self._hash_files([p for _, p in files])
            self._git_index(["read-tree", "--empty"], env)
            if files:
                info = "".join(f"100644 {sha}\t{rel}\0" for (rel, _), sha in zip(files, shas, strict=True))
                self._git_index(["update-index", "-z", "--add", "--index-info"], env, info.encode())
            tree = self._git_index(["write-tree"], env).strip()
            ref = f"refs/remotes/origin/{branch}" if self.push else f"refs/heads/{branch}"
            for attempt in range(1, PUSH_RETRIES + 1):
                base = git(["rev-parse", "--verify", "-q", ref], self.clone_dir, check=False).strip() or None
                if base and git(["rev-parse", f"{base}^{{tree}}"], self.clone_dir).strip() == tree:
                    return None
                commit = self._git_index(
                    ["commit-tree", tree, *(["-p", base] if base else []), "-F", "-"],
                    git_env(),
                    message.encode(),
                ).strip()
                if not self.push:
                    git(["update-ref", ref, commit], self.clone_dir)
                    return commit
                try:
                    self._push_onto(commit, branch, base)
                except GitError:
                    if attempt == PUSH_RETRIES:
                        raise
                    git(
                        ["fetch", "--quiet", "origin", f"+refs/heads/{branch}:{ref}"],
                        self.clone_dir,
                        check=False,
                    )
                    continue
                git(["update-ref", ref, commit], self.clone_dir)
                return commit
            return None  # pragma: no cover
