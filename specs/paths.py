"""File system access on behalf of an untrusted spec repository (docs/security.md).

Whoever can push to the specs repository controls every name in it: a dataset path, a folder
under ``results/``, a symlink where the daemon expects a folder. Three rules, each one function,
so that every reader and writer applies them the same way:

* :func:`inside_roots` — a path named by a spec (dataset, model, docker volume) is resolved
  *after* following symlinks and must then lie inside one of the allowed roots (the checkout,
  plus what the operator allowed). Checking the text (``..``, a leading ``/``) is not enough: a
  committed symlink ``data.csv -> /proc/self/environ`` has neither.
* :func:`read_regular` — such a file is opened with ``O_NOFOLLOW`` (the last component) after the
  resolution above, must be a *regular* file (``/dev/zero`` and ``/proc`` files are character
  devices or report size 0), and is read with a byte cap, never "until EOF".
* :func:`real_dir` — every folder the daemon writes into under a root it owns (``results/``, the
  site) is checked component by component with ``lstat``; a symlink there was planted by a user
  and is replaced by a fresh, empty folder owned by the daemon (unlinking a symlink never touches
  its target). Writing *through* it would let a push choose where the daemon writes and deletes.

Why not ``openat2(RESOLVE_BENEATH)``: Python has no binding for it, and the daemon's folders are
not written by anyone else while it runs, so a check-then-use on its own folders is enough; the
repository's content only changes when the daemon itself checks it out.

These helpers live in ``specs`` (which imports nothing of ours) because backends, reports and the
reconciler all need them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from specs.errors import NotRegular, OutsideRoots, TooLarge, UnsafePath

__all__ = [
    "excerpt",
    "inside_roots",
    "is_real_dir",
    "is_regular",
    "read_regular",
    "real_dir",
]

#: the most of a file's content an error message may quote
EXCERPT_CHARS = 40


def inside_roots(path: str | os.PathLike[str], roots: Sequence[Path], *, base: Path | None = None) -> Path:
    """``path`` (relative to ``base``, or absolute) with every symlink resolved, provided it lies
    inside one of ``roots`` (each resolved too). Raises :class:`UnsafePath` naming the roots.

    A path that does not exist yet resolves as far as it can (``strict=False``), so the answer is
    the same whether or not the file is there; whether it exists is the reader's question.
    """
    p = Path(path)
    if "\x00" in str(p):
        raise UnsafePath("the path contains a NUL character")
    if not p.is_absolute():
        if base is None:
            raise UnsafePath(f"{path}: a relative path needs a base folder")
        p = base / p
    resolved = p.resolve(strict=False)
    allowed = [Path(r).resolve(strict=False) for r in roots]
    for root in allowed:
        if resolved == root or resolved.is_relative_to(root):
            return resolved
    shown = ", ".join(str(r) for r in allowed) or "none"
    raise OutsideRoots(
        f"{path} resolves to {resolved}, outside the folders a spec may read ({shown}); "
        "keep the file inside the repository, or ask the operator to allow its folder "
        "(dataRoots in the operator policy, docs/security.md)"
    )


def is_real_dir(path: Path) -> bool:
    """True for a folder that is not a symlink (``lstat``, never follows)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def is_regular(path: Path) -> bool:
    """True for a regular file that is not a symlink (``lstat``, never follows)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def read_regular(path: Path, max_bytes: int, *, follow: bool = False) -> bytes:
    """The bytes of ``path``, which must be a regular file of at most ``max_bytes``.

    ``follow=False`` (the default) refuses a symlink as the last component (``O_NOFOLLOW``); use
    ``follow=True`` only for a path already checked with :func:`inside_roots`. The size is checked
    on the open descriptor (no race with a rename) and the read stops at ``max_bytes + 1`` either
    way, since ``/proc`` files report size 0. Raises :class:`UnsafePath` or ``OSError``.
    """
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    if not follow:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegular(f"{path} is a symlink; it is not followed") from None
        raise
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
        if not stat.S_ISREG(st.st_mode):
            raise NotRegular(f"{path} is not a regular file (a device, pipe or socket); it is not read")
        if st.st_size > max_bytes:
            raise TooLarge(f"{path} is {st.st_size:,} bytes, above the {max_bytes:,} byte limit")
        chunks: list[bytes] = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise TooLarge(f"{path} is above the {max_bytes:,} byte limit")
        return data
    finally:
        os.close(fd)


def real_dir(root: Path, parts: Iterable[str] = (), *, replaced: list[Path] | None = None) -> Path:
    """``root/parts...`` as real folders: each component below ``root`` that is a symlink (or a
    file) is removed and made a fresh folder; missing ones are created. ``root`` itself is
    trusted (the operator chose it, or the caller checked it). Returns the folder; every path
    that had to be replaced is appended to ``replaced``.
    """
    current = Path(root)
    for part in parts:
        if part in ("", ".", "..") or "/" in part or "\x00" in part:
            raise UnsafePath(f"{part!r} is not a folder name")
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            with contextlib.suppress(FileExistsError):
                os.mkdir(current)
            st = os.lstat(current)
        if not stat.S_ISDIR(st.st_mode):
            # a symlink or file where our folder belongs: unlink the entry itself (never its target)
            os.unlink(current)
            os.mkdir(current)
            if replaced is not None:
                replaced.append(current)
    return current


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """A short, redacted quote of file content for an error message: at most ``limit``
    characters, control characters escaped, and anything after ``=`` or ``:`` in a
    ``KEY=value`` shape hidden (that is how environment files and ``/proc/*/environ`` look)."""
    out = text[:limit]
    for sep in ("=", ":"):
        head, found, _ = out.partition(sep)
        if found and head.replace("_", "").isalnum():
            out = f"{head}{sep}***"
            break
    shown = out.encode("unicode_escape").decode("ascii")
    return shown + ("..." if len(text) > limit else "")
