"""The results folder of one spec (docs/architecture.md section 4), and the only code that writes it.

The layout's names are :mod:`core.results` and reading goes through the one reader,
:mod:`specs.results` (what the site, ``status`` and ``export`` read too); this class adds writing.

``experiments/NNNN.json`` files are written once, atomically, and never rewritten; ids are given
in completion order under a lock. ``status.json`` and ``best/`` are rewritten only when their
bytes change, so a reconcile pass with nothing new leaves git with nothing to commit.

The folder is in a repository anyone with push access writes to (docs/security.md), so nothing
here follows a symlink: every folder is checked component by component below the results root
(:func:`specs.paths.real_dir`: a symlink where our folder belongs is replaced by a real one, and
the commit-back then records its removal), files are read with ``O_NOFOLLOW`` and a byte cap,
and a symlinked ``study.journal`` is removed before Optuna opens it for appending. Messages about
unreadable files name the reason, never the content.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from core.atomic import TEMP_SUFFIX, json_text, write_bytes
from core.results import BEST_DIR, EXPERIMENTS_DIR, JOURNAL_FILE, STATUS_FILE, record_name, record_order
from specs.paths import is_real_dir, read_regular, real_dir
from specs.records import ExperimentRecord, StatusRecord
from specs.results import read_experiments, read_status, record_files, unreadable_reason

log = logging.getLogger(__name__)

#: when this module was loaded: a temp file older than that was left by an earlier process. The
#: margin covers the file system's coarse timestamps (a file made just after this instant may
#: carry a time a few milliseconds before it); a restart after a crash takes far longer than it.
_PROCESS_STARTED = time.time() - 0.05


def dumps(data: object) -> bytes:
    """Stable JSON bytes: sorted keys, two-space indent, final newline (diff-friendly in git)."""
    return json_text(data, default=str).encode()


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write atomically unless the file already holds exactly these bytes."""
    try:
        if read_regular(path, max(len(data), 1)) == data:
            return False
    except OSError:  # missing, a symlink, too large, ...: the rename below replaces the entry
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, data)
    return True


class ResultsStore:
    """``results/<name>/`` of one spec."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = Path(root)
        self.name = name
        self.dir = self.root / name
        self.experiments_dir = self.dir / EXPERIMENTS_DIR
        self.journal = self.dir / JOURNAL_FILE
        self.status_path = self.dir / STATUS_FILE
        self.best_dir = self.dir / BEST_DIR
        self._lock = threading.Lock()

    def _real(self, *parts: str) -> None:
        """Make ``results/<name>/<parts>`` real folders, replacing planted symlinks."""
        replaced: list[Path] = []
        self.root.mkdir(parents=True, exist_ok=True)
        real_dir(self.root, (self.name, *parts), replaced=replaced)
        for path in replaced:
            log.warning(
                "%s was a symlink or a file in the daemon's results folder: replaced by a folder "
                "(the daemon never writes through symlinks; docs/security.md)",
                path,
            )

    def ensure(self) -> None:
        self._real(EXPERIMENTS_DIR)
        if os.path.islink(self.journal) or (
            os.path.lexists(self.journal) and not os.path.isfile(self.journal)
        ):
            log.warning("%s is not a regular file: removed (Optuna would follow it)", self.journal)
            if is_real_dir(self.journal):
                shutil.rmtree(self.journal)
            else:
                os.unlink(self.journal)
        # temp files of an atomic write that a crash interrupted: garbage, never to be committed.
        # Only those older than this process: a younger one is another thread's write in flight,
        # and removing it made that write's rename fail (FileNotFoundError killed the daemon).
        for folder in (self.dir, self.experiments_dir, self.best_dir):
            for stale in folder.glob(f".*{TEMP_SUFFIX}") if is_real_dir(folder) else ():
                with contextlib.suppress(OSError):
                    if stale.lstat().st_mtime < _PROCESS_STARTED:
                        stale.unlink()

    # ------------------------------------------------------------------ experiments

    def experiments(self) -> list[ExperimentRecord]:
        """Every readable record, by number (:func:`specs.results.read_experiments`). A corrupt
        file is logged and skipped, never fatal."""
        records, unreadable = read_experiments(self.dir)
        for rel, why in unreadable:
            log.warning("skipping unreadable experiment record %s: %s", self.dir / rel, why)
        return [record for _, record in records]

    def next_id(self) -> str:
        numbers = [record_order(p.name)[0] for p in record_files(self.dir)]
        return f"{max(numbers, default=0) + 1:04d}"

    def add_experiment(self, record: ExperimentRecord) -> ExperimentRecord:
        """Give the record the next id and write it; returns the record as written."""
        with self._lock:
            self.ensure()
            record = record.model_copy(update={"id": self.next_id()})
            path = self.experiments_dir / record_name(int(record.id))
            if path.exists():  # pragma: no cover - guarded by the lock and next_id
                raise FileExistsError(path)
            write_bytes(path, dumps(record.dump()))
            return record

    # ------------------------------------------------------------------ status, best

    def status(self) -> StatusRecord | None:
        try:
            return read_status(self.dir)
        except (OSError, ValueError) as exc:
            log.warning("unreadable status %s: %s", self.status_path, unreadable_reason(exc))
            return None

    def write_status(self, status: StatusRecord) -> bool:
        self._real()
        return write_if_changed(self.status_path, dumps(status.dump()))

    def write_best(self, files: Mapping[str, str]) -> bool:
        """Replace ``best/`` with exactly these files; True when anything changed."""
        changed = False
        self._real(BEST_DIR)
        for name, content in files.items():
            changed |= write_if_changed(self.best_dir / name, content.encode())
        for stale in self.best_dir.iterdir():
            # a file or a symlink (unlinking a symlink removes the link, never its target)
            if stale.name not in files and (stale.is_symlink() or stale.is_file()):
                stale.unlink()
                changed = True
        return changed
