"""The one atomic-write helper: every file the project writes for others to read goes through here.

Why one helper: results, pid files, status and checkpoints must survive ``kill -9`` or a power cut
at any instant, and a reader (the site builder, ``git add``, a restarted daemon) must see either
the old file or the new one, never half of one. The recipe is the classic one and easy to get
subtly wrong when copied, so it lives in one place:

1. write to a temporary file *in the same directory* (``os.replace`` is atomic only within one
   file system),
2. ``fsync`` the file, so its bytes are on disk before its name is,
3. ``os.replace`` it over the target,
4. ``fsync`` the directory, so the rename itself survives a crash.

Temporary files are named ``.<name>.<random>.tmp``: hidden, so globs such as ``*.json`` never
pick up a half-written file, and recognisable, so a leftover after a crash can be removed.

JSON is written strictly (``allow_nan=False``): ``NaN`` is not JSON, and a record that browsers
and other tools cannot parse is worse than a loud error at write time.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.faults import crash_point

__all__ = ["fsync_dir", "json_text", "write_bytes", "write_json", "write_text"]

TEMP_SUFFIX = ".tmp"


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (creations, renames, deletions) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: Path | str, data: bytes, *, mode: int = 0o644, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically; create missing parent directories.

    ``mode`` is applied to the new file (``mkstemp`` creates files readable by the owner only,
    which would make results unreadable to a web server serving the site). ``durable=False``
    keeps the atomic rename but skips both fsyncs: for files that can always be rebuilt (the
    site's pages), where ten thousand fsyncs would dominate the work.
    """
    target = Path(path)
    parent = target.parent
    if not parent.is_dir():
        parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=parent, prefix=f".{target.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        crash_point("atomic_replace")
        os.replace(tmp_name, target)
    except BaseException:
        # also on KeyboardInterrupt: never leave a stray temporary file behind
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    if durable:
        fsync_dir(parent)


def write_text(
    path: Path | str, text: str, *, encoding: str = "utf-8", mode: int = 0o644, durable: bool = True
) -> None:
    """Replace ``path`` with ``text`` atomically (see :func:`write_bytes`)."""
    write_bytes(path, text.encode(encoding), mode=mode, durable=durable)


def json_text(
    obj: Any, *, indent: int | None = 2, sort_keys: bool = True, default: Callable[[Any], Any] | None = None
) -> str:
    """The project's JSON file convention, the one dumper: sorted keys, a fixed indent, UTF-8
    as is (no ``\\u`` escapes), a trailing newline, and strict JSON (NaN and infinity raise
    ``ValueError`` rather than writing what other JSON readers reject). Deterministic, so that
    rewriting an unchanged object gives identical bytes and git sees no change."""
    return (
        json.dumps(
            obj, indent=indent, sort_keys=sort_keys, ensure_ascii=False, allow_nan=False, default=default
        )
        + "\n"
    )


def write_json(
    path: Path | str, obj: Any, *, indent: int | None = 2, sort_keys: bool = True, mode: int = 0o644
) -> None:
    """Replace ``path`` with ``obj`` as JSON, atomically.

    Output is deterministic (sorted keys, fixed indent, trailing newline) so that rewriting an
    unchanged object produces identical bytes and the commit-back sees no change. Raises
    ``ValueError`` for NaN/infinity and ``TypeError`` for objects JSON cannot hold, *before* the
    target is touched.
    """
    write_text(path, json_text(obj, indent=indent, sort_keys=sort_keys), mode=mode)
