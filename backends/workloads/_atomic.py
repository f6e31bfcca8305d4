"""Crash-safe file replacement for the dataset cache.

``backends`` may import only ``specs``, and ``specs`` has no file-writing helper, so the cache
carries this small one: write to a temporary file in the same folder, fsync it, rename it over the
target, fsync the folder. A reader then sees either the old bytes or the new ones, never a torn
file, even after kill -9 or a power cut. Merge it into the project's shared helper once one exists
below ``backends``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(folder: Path) -> None:
    """Persist a rename: the directory entry lives in the folder, not in the file."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def temp_file_in(folder: Path, prefix: str) -> Iterator[tuple[BinaryIO, Path]]:
    """A temporary file next to its final place (same filesystem, so rename is atomic).

    The file is removed on exit unless the caller renamed it away.
    """
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    path = Path(name)
    try:
        with os.fdopen(fd, "w+b") as handle:
            yield handle, path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def commit(handle: BinaryIO, temp: Path, target: Path) -> None:
    """fsync ``handle`` (open on ``temp``) and rename it to ``target``."""
    handle.flush()
    os.fsync(handle.fileno())
    os.replace(temp, target)
    fsync_dir(target.parent)


def write_bytes_atomic(target: Path, data: bytes) -> None:
    with temp_file_in(target.parent, f".{target.name}.") as (handle, temp):
        handle.write(data)
        commit(handle, temp, target)
