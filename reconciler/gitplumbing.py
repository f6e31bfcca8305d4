"""Git plumbing on the daemon's clone: blobs in and out, a private index, commits and leased pushes.

Why plumbing (and never the work tree) is in :mod:`reconciler.workspace`'s docstring. This module
is the mechanism: each function is one or two git commands through :mod:`reconciler.git`, on a
clone given by its directory, with no state of its own beyond an index file named for its use
(``.git/autotuner-<name>.index``, so that the commit-back, the probe of a live tree and the site
branch never share one, and a killed command's index is cleaned at start-up).

Everything read from git here is content a pusher chose: names with newlines or invalid UTF-8,
symlinks and submodules where files belong. Requests to ``cat-file --batch`` are NUL-terminated
(``-z``) so that no name can split a request, and tree listings keep regular files only.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from reconciler.git import GitError, git, git_bytes

#: the id of git's empty tree (the same in every repository)
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


def read_blobs(clone: Path, objects: list[str], *, timeout: float = 300) -> list[bytes | None]:
    """The content of each object named (``<sha>`` or ``<rev>:<path>``), in order: None for one
    that is missing (a submodule's commit) or not a blob."""
    if not objects:
        return []
    request = b"".join(o.encode("utf-8", "surrogateescape") + b"\0" for o in objects)
    data = git_bytes(["cat-file", "--batch", "-z"], clone, timeout=timeout, data=request)
    out: list[bytes | None] = []
    pos = 0
    for name in objects:
        header_end = data.index(b"\n", pos)
        header = data[pos:header_end].split()
        if header[-1:] == [b"missing"]:  # no content follows
            pos = header_end + 1
            out.append(None)
            continue
        if len(header) != 3 or not header[2].isdigit():
            raise GitError(f"unexpected answer from git cat-file for {name!r}")
        size = int(header[2])
        body = data[header_end + 1 : header_end + 1 + size]
        out.append(body if header[1] == b"blob" else None)
        pos = header_end + 1 + size + 1
    return out


def regular_files_of_tree(clone: Path, tree: str) -> list[tuple[str, str]]:
    """(relative path, blob) of the regular files of ``tree``: a symlink or submodule pushed into
    it is never materialised, nor a name with a dot component or a control character."""
    listing = git(["ls-tree", "-r", "-z", tree], clone)
    blobs: list[tuple[str, str]] = []
    for entry in listing.split("\0"):
        meta, _, rel = entry.partition("\t")
        parts = meta.split()
        if len(parts) != 3 or parts[1] != "blob" or parts[0] not in ("100644", "100755"):
            continue
        if any(p in ("", ".", "..") or p.startswith(".") for p in rel.split("/")) or any(
            ord(c) < 32 for c in rel
        ):
            continue
        blobs.append((rel, parts[2]))
    return blobs


def subtrees(clone: Path, commit: str, folder: str) -> dict[str, str]:
    """``folder/<name>`` tree ids at ``commit``, by name (one ``ls-tree`` for all of them)."""
    out = git(["ls-tree", "-z", commit, "--", f"{folder}/"], clone)
    trees: dict[str, str] = {}
    for entry in out.split("\0"):
        meta, _, path = entry.partition("\t")
        parts = meta.split()
        if len(parts) == 3 and parts[1] == "tree":
            trees[path.removeprefix(f"{folder}/")] = parts[2]
    return trees


def hash_blob(clone: Path, data: bytes) -> str:
    """Write ``data`` as a blob; its id."""
    return git(["hash-object", "-w", "--stdin"], clone, timeout=300, data=data).strip()


def hash_files(clone: Path, paths: list[Path]) -> list[str]:
    """Write each file as a blob, byte for byte (no filters); their ids, in order."""
    if not paths:
        return []
    request = "".join(f"{p}\n" for p in paths).encode("utf-8", "surrogateescape")
    return git(
        ["hash-object", "-w", "--no-filters", "--stdin-paths"], clone, timeout=300, data=request
    ).split()


def rev(clone: Path, ref: str) -> str | None:
    """The commit ``ref`` names, or None when there is none."""
    return git(["rev-parse", "--verify", "-q", ref], clone, check=False).strip() or None


def tree_of(clone: Path, commit: str | None) -> str:
    return git(["rev-parse", f"{commit}^{{tree}}"], clone).strip() if commit else EMPTY_TREE


def commit_tree(clone: Path, tree: str, parent: str | None, message: str) -> str:
    return git(
        ["commit-tree", tree, *(["-p", parent] if parent else []), "-F", "-"],
        clone,
        timeout=300,
        data=message.encode(),
    ).strip()


def push_onto(clone: Path, commit: str, branch: str, expected: str | None) -> None:
    """Push ``commit`` to ``branch`` only if the remote still has ``expected`` there (a lease).
    A fast-forward check is not enough: after a user force-pushed the branch *back* (to drop a
    leaked credential), a commit built on the dropped commit is a fast-forward of the rewound
    branch, and a plain push would quietly bring the dropped commit back."""
    lease = f"--force-with-lease=refs/heads/{branch}:{expected or ''}"
    git(["push", "--quiet", lease, "origin", f"{commit}:refs/heads/{branch}"], clone, timeout=300)


class PrivateIndex:
    """A git index of our own (``GIT_INDEX_FILE``): trees are built here, never in the work tree."""

    def __init__(self, clone: Path, name: str) -> None:
        self.clone = clone
        self.env = {"GIT_INDEX_FILE": str(clone / ".git" / f"autotuner-{name}.index")}

    def _git(self, args: list[str], data: bytes | None = None) -> str:
        return git(args, self.clone, timeout=300, env=self.env, data=data)

    def reset(self, base: str | None = None) -> None:
        """Start from the tree of ``base``, or empty."""
        self._git(["read-tree", base] if base else ["read-tree", "--empty"])

    def remove(self, prefix: str) -> None:
        """Drop every entry under ``prefix`` (a folder, ending in ``/``)."""
        old = self._git(["ls-files", "-z", "--", prefix])
        if old:
            self._git(
                ["update-index", "-z", "--force-remove", "--stdin"], old.encode("utf-8", "surrogateescape")
            )

    def add(self, entries: Iterable[tuple[str, str]]) -> None:
        """Add (path, blob) entries as regular files."""
        info = "".join(f"100644 {sha}\t{path}\0" for path, sha in entries)
        if info:
            self._git(
                ["update-index", "-z", "--add", "--index-info"], info.encode("utf-8", "surrogateescape")
            )

    def write_tree(self, prefix: str | None = None) -> str:
        return self._git(["write-tree", *([f"--prefix={prefix}"] if prefix else [])]).strip()


def live_files(folder: Path) -> Iterator[tuple[str, Path]]:
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
