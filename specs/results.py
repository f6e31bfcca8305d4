"""The one reader of a results folder: spec folders, status and experiment records, typed.

The names and rules of the layout are :mod:`core.results`; this module applies them to the file
system with the rules every reader of ``results/`` needs, since that folder is in a repository
anyone with push access writes to (docs/security.md): nothing is followed through a symlink (a
spec folder, ``experiments/`` or a record that is one is not a spec's results), and every file is
read with a byte cap. A file that cannot be read is reported with a reason that names what is
wrong and never quotes the content.

Who uses it: the site and ``autotuner report`` (:mod:`reports.results`, which lists unreadable
files on the spec's page), ``autotuner status`` and ``export`` (:mod:`reconciler.table`), and the
daemon (:class:`reconciler.results.ResultsStore`, which adds the one writer on top). It lives in
``specs`` because it returns ``specs.records`` types and all three layers above need it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from core.results import (
    EXPERIMENTS_DIR,
    MAX_RECORD_BYTES,
    STATUS_FILE,
    is_record_name,
    is_spec_folder_name,
    record_order,
)
from specs.errors import NotRegular, TooLarge
from specs.paths import is_real_dir, read_regular
from specs.records import ExperimentRecord, StatusRecord

__all__ = [
    "SpecFolder",
    "Unreadable",
    "is_spec_dir",
    "read_experiment",
    "read_experiments",
    "read_spec_folder",
    "read_status",
    "record_files",
    "spec_dirs",
    "unreadable_reason",
]

#: (path relative to the spec folder, reason) of a file that could not be read
Unreadable = tuple[str, str]


def unreadable_reason(exc: Exception) -> str:
    """Why a file could not be read, without quoting its content."""
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        if not errors:
            return "not a valid record"
        first = errors[0]
        where = ".".join(str(x) for x in first.get("loc", ())) or "file"
        return f"not a valid record: {where}: {first.get('msg', 'invalid')}"
    if isinstance(exc, NotRegular):
        return "not a regular file (a symlink, device or pipe): not read"
    if isinstance(exc, TooLarge):
        return "larger than the size limit: not read"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"[:200]


def is_spec_dir(path: Path) -> bool:
    return (
        is_spec_folder_name(path.name)
        and is_real_dir(path)
        and (os.path.lexists(path / STATUS_FILE) or is_real_dir(path / EXPERIMENTS_DIR))
    )


def spec_dirs(results_dir: Path) -> list[Path]:
    """Spec folders under ``results_dir``, by name (``results_dir`` itself is the caller's)."""
    if not results_dir.is_dir():
        return []
    return sorted((p for p in results_dir.iterdir() if is_spec_dir(p)), key=lambda p: p.name)


def record_files(spec_dir: Path) -> list[Path]:
    """The record files of a spec folder, by number (none when ``experiments/`` is no real folder)."""
    folder = spec_dir / EXPERIMENTS_DIR
    if not is_real_dir(spec_dir) or not is_real_dir(folder):
        return []
    return sorted((p for p in folder.iterdir() if is_record_name(p.name)), key=lambda p: record_order(p.name))


def read_status(spec_dir: Path) -> StatusRecord | None:
    """The spec's status, or None when it has none yet. Raises ``OSError`` or ``ValueError``
    (pydantic's ``ValidationError`` is one) when ``status.json`` is there but unreadable."""
    if not is_real_dir(spec_dir):
        return None
    try:
        data = read_regular(spec_dir / STATUS_FILE, MAX_RECORD_BYTES)
    except FileNotFoundError:
        return None
    return StatusRecord.model_validate_json(data)


def read_experiment(path: Path) -> ExperimentRecord:
    return ExperimentRecord.model_validate_json(read_regular(path, MAX_RECORD_BYTES))


def read_experiments(spec_dir: Path) -> tuple[list[tuple[str, ExperimentRecord]], list[Unreadable]]:
    """Every readable record as (its file relative to the spec folder, the record), by number,
    and the files that could not be read. Two files claiming one id: the first holds it."""
    records: list[tuple[str, ExperimentRecord]] = []
    unreadable: list[Unreadable] = []
    seen: dict[str, str] = {}
    for path in record_files(spec_dir):
        rel = f"{EXPERIMENTS_DIR}/{path.name}"
        try:
            record = read_experiment(path)
        except (OSError, ValueError) as exc:
            unreadable.append((rel, unreadable_reason(exc)))
            continue
        if record.id in seen:
            unreadable.append(
                (rel, f"duplicate experiment id {record.id!r} (also in {seen[record.id]}); skipped")
            )
            continue
        seen[record.id] = rel
        records.append((rel, record))
    return records, unreadable


@dataclass
class SpecFolder:
    """What one spec folder holds: its status, its readable records by number, and the files
    that could not be read (the caller decides whether to list or log them)."""

    name: str
    status: StatusRecord | None
    experiments: list[ExperimentRecord]
    #: record id -> its file, relative to the spec folder
    sources: dict[str, str] = field(default_factory=dict)
    unreadable: list[Unreadable] = field(default_factory=list)


def read_spec_folder(spec_dir: Path) -> SpecFolder:
    """Read a spec folder's status and records; unreadable files are collected, not raised."""
    unreadable: list[Unreadable] = []
    status: StatusRecord | None = None
    try:
        status = read_status(spec_dir)
    except (OSError, ValueError) as exc:
        unreadable.append((STATUS_FILE, unreadable_reason(exc)))
    pairs, bad = read_experiments(spec_dir)
    return SpecFolder(
        spec_dir.name,
        status,
        [record for _, record in pairs],
        {record.id: rel for rel, record in pairs},
        unreadable + bad,
    )
