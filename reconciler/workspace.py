"""The daemon's live results and the commit-back, on top of its clone (:mod:`reconciler.clone`).

Layout under the state directory (mode 0700, owned by one daemon at a time: ``workspace.lock``):

* ``repo/``: the daemon's clone (:mod:`reconciler.clone`: taking the directory, cloning,
  fetching, reading the desired state from git objects).
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

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from core.atomic import json_text, write_bytes
from core.faults import crash_point
from core.results import JOURNAL_FILE
from reconciler.clone import Clone
from reconciler.git import GitError, git, mask
from reconciler.gitplumbing import (
    PrivateIndex,
    commit_tree,
    hash_blob,
    hash_files,
    journal_snapshot,
    live_files,
    push_onto,
    read_blobs,
    regular_files_of_tree,
    rev,
    subtrees,
    tree_of,
)

__all__ = ["CommitBack", "Workspace"]

log = logging.getLogger(__name__)

PUSH_RETRIES = 5


@dataclass
class CommitBack:
    """What one commit-back did, for truthful summaries."""

    commit: str | None = None
    pushed: bool = False
    specs: list[str] = field(default_factory=list)

    @property
    def committed(self) -> bool:
        return self.commit is not None


@dataclass
class Workspace(Clone):
    results_branch: str | None = None
    push: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
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

    def _take_state_dir(self) -> None:
        if self._lock_fd is not None:
            return
        super()._take_state_dir()
        # read once the directory is ours: what the last owner synced
        try:
            self._synced = json.loads(self._synced_path.read_text())
        except (OSError, ValueError):
            self._synced = {}

    def fetch(self) -> str:
        with self.lock:
            self._base_memo = None  # the remote refs move
            return super().fetch()

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
            sha = rev(self.clone_dir, ref + "^{commit}")
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
        trees = subtrees(self.clone_dir, base, "results")
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
            if name not in self._first_seen:
                self._first_seen.add(name)
                if self._first_look(name, committed):
                    return
            live = self.results_dir / name
            synced = self._synced.get(name, "never")
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

    def _first_look(self, name: str, committed: str | None) -> bool:
        """The first time this process sees a spec that has live results: True when they stay as
        they are (they match the committed tree, or they are ours and not committed yet)."""
        if not (self.results_dir / name).is_dir():
            return False
        tree = self._tree_of_live(name)
        if tree == committed:
            self._set_synced({name: committed})
            return True
        synced = self._synced.get(name, "never")
        if synced == "never" or tree != synced:
            # results of ours that never reached the remote (a crash, a failing push)
            log.info("spec=%s: live results not committed yet; committing them", name)
            self.mark(name)
            return True
        return False

    def _seed(self, name: str, tree: str) -> None:
        blobs = regular_files_of_tree(self.clone_dir, tree)
        tmp = self.results_dir / f".{name}.seed"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        contents = read_blobs(self.clone_dir, [sha for _, sha in blobs])
        for (rel, _), data in zip(blobs, contents, strict=True):
            if data is None:  # gone from the object store (a shallow or broken clone): not ours
                continue
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
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
            write_bytes(self._synced_path, json_text(self._synced).encode())

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

    def _entries(self, name: str) -> list[tuple[str, str]]:
        """(path in git, blob) of the live files of one spec (objects written)."""
        folder = self.results_dir / name
        if not folder.is_dir():
            return []
        lines: list[tuple[str, str]] = []
        journal = folder / JOURNAL_FILE
        if journal.is_file() and not journal.is_symlink():
            # first: every trial told in this snapshot has its record among the files listed next
            lines.append(
                (f"results/{name}/{JOURNAL_FILE}", hash_blob(self.clone_dir, journal_snapshot(journal)))
            )
        for attempt in range(3):
            files = [(rel, path) for rel, path in live_files(folder) if rel != JOURNAL_FILE]
            try:
                shas = hash_files(self.clone_dir, [path for _, path in files])
                break
            except GitError:
                # a study replaced best/ between the listing and the hashing: list again
                if attempt == 2:
                    raise
        lines += [(f"results/{name}/{rel}", sha) for (rel, _), sha in zip(files, shas, strict=True)]
        return lines

    def _build_tree(self, base: str | None, names: Iterable[str], index: PrivateIndex) -> str:
        index.reset(base)
        for name in names:
            index.remove(f"results/{name}/")
            index.add(self._entries(name))
        return index.write_tree()

    def _tree_of_live(self, name: str) -> str | None:
        index = PrivateIndex(self.clone_dir, "probe")
        index.reset()
        entries = self._entries(name)
        if not entries:
            return None
        index.add(entries)
        return index.write_tree(prefix=f"results/{name}/")

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
        index = PrivateIndex(self.clone_dir, "commit")
        for attempt in range(1, PUSH_RETRIES + 1):
            base = self._base()
            tree = self._build_tree(base, names, index)
            if tree == tree_of(self.clone_dir, base):
                self._after_sync(names, base)
                return CommitBack(specs=names)
            commit = commit_tree(self.clone_dir, tree, base, message)
            if not self.push:
                git(["update-ref", f"refs/heads/{self.target}", commit], self.clone_dir)
                self._after_sync(names, commit)
                return CommitBack(commit=commit, specs=names)
            crash_point("commit_back_push")
            try:
                push_onto(
                    self.clone_dir,
                    commit,
                    self.target,
                    rev(self.clone_dir, f"refs/remotes/origin/{self.target}"),
                )
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
            index = PrivateIndex(self.clone_dir, "site")
            files = list(live_files(folder))
            shas = hash_files(self.clone_dir, [p for _, p in files])
            index.reset()
            index.add((rel, sha) for (rel, _), sha in zip(files, shas, strict=True))
            tree = index.write_tree()
            ref = f"refs/remotes/origin/{branch}" if self.push else f"refs/heads/{branch}"
            for attempt in range(1, PUSH_RETRIES + 1):
                base = rev(self.clone_dir, ref)
                if base and tree_of(self.clone_dir, base) == tree:
                    return None
                commit = commit_tree(self.clone_dir, tree, base, message)
                if not self.push:
                    git(["update-ref", ref, commit], self.clone_dir)
                    return commit
                try:
                    push_onto(self.clone_dir, commit, branch, base)
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
