"""The results folder of one spec (docs/architecture.md section 4), and the only code that writes it.

``experiments/NNNN.json`` files are written once, atomically, and never rewritten; ids are given
in completion order under a lock. ``status.json`` and ``best/`` are rewritten only when their
bytes change, so a reconcile pass with nothing new leaves git with nothing to commit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from backends.atomic import TEMP_SUFFIX, write_bytes
from specs.records import ExperimentRecord, StatusRecord

log = logging.getLogger(__name__)

#: when this module was loaded: a temp file older than that was left by an earlier process. The
#: margin covers the file system's coarse timestamps (a file made just after this instant may
#: carry a time a few milliseconds before it); a restart after a crash takes far longer than it.
_PROCESS_STARTED = time.time() - 0.05


def dumps(data: object) -> bytes:
    """Stable JSON bytes: sorted keys, two-space indent, final newline (diff-friendly in git)."""
    return (json.dumps(data, indent=2, sort_keys=True, allow_nan=False, default=str) + "\n").encode()


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write atomically unless the file already holds exactly these bytes."""
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
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
        self.experiments_dir = self.dir / "experiments"
        self.journal = self.dir / "study.journal"
        self.status_path = self.dir / "status.json"
        self.best_dir = self.dir / "best"
        self._lock = threading.Lock()

    def ensure(self) -> None:
        self.experiments_dir.mkdir(parents=True, exist_ok=True)
        # temp files of an atomic write that a crash interrupted: garbage, never to be committed.
        # Only those older than this process: a younger one is another thread's write in flight,
        # and removing it made that write's rename fail (FileNotFoundError killed the daemon).
        for folder in (self.dir, self.experiments_dir, self.best_dir):
            for stale in folder.glob(f".*{TEMP_SUFFIX}") if folder.is_dir() else ():
                with contextlib.suppress(OSError):
                    if stale.stat().st_mtime < _PROCESS_STARTED:
                        stale.unlink()

    # ------------------------------------------------------------------ experiments

    def experiments(self) -> list[ExperimentRecord]:
        """Every readable record, by id. A corrupt file is logged and skipped, never fatal."""
        out: list[ExperimentRecord] = []
        if not self.experiments_dir.is_dir():
            return out
        for path in sorted(self.experiments_dir.glob("[0-9][0-9][0-9][0-9]*.json")):
            try:
                out.append(ExperimentRecord.model_validate_json(path.read_bytes()))
            except (OSError, ValidationError, ValueError) as exc:
                log.warning("skipping unreadable experiment record %s: %s", path, exc)
        return out

    def next_id(self) -> str:
        ids = [
            int(p.stem) for p in self.experiments_dir.glob("[0-9][0-9][0-9][0-9]*.json") if p.stem.isdigit()
        ]
        return f"{max(ids, default=0) + 1:04d}"

    def add_experiment(self, record: ExperimentRecord) -> ExperimentRecord:
        """Give the record the next id and write it; returns the record as written."""
        with self._lock:
            self.ensure()
            record = record.model_copy(update={"id": self.next_id()})
            path = self.experiments_dir / f"{record.id}.json"
            if path.exists():  # pragma: no cover - guarded by the lock and next_id
                raise FileExistsError(path)
            write_bytes(path, dumps(record.dump()))
            return record

    # ------------------------------------------------------------------ status, best

    def status(self) -> StatusRecord | None:
        try:
            return StatusRecord.model_validate_json(self.status_path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError, ValueError) as exc:
            log.warning("unreadable status %s: %s", self.status_path, exc)
            return None

    def write_status(self, status: StatusRecord) -> bool:
        return write_if_changed(self.status_path, dumps(status.dump()))

    def write_best(self, files: Mapping[str, str]) -> bool:
        """Replace ``best/`` with exactly these files; True when anything changed."""
        changed = False
        self.best_dir.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            changed |= write_if_changed(self.best_dir / name, content.encode())
        for stale in self.best_dir.iterdir():
            if stale.name not in files and stale.is_file():
                stale.unlink()
                changed = True
        return changed
