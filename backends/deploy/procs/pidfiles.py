"""Pid files of engines (written before the spawn, completed after) and the orphan cleanup that
reads them after a crash of their owner."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.deploy.procs.identity import (
    PROC,
    ProcessIdentity,
    is_running,
    marked_processes,
    read_identity,
    stop_identities,
)
from core import atomic

log = logging.getLogger(__name__)

PID_FILE_SCHEMA = 1


@dataclass
class PidRecord:
    """What a pid file holds. ``pid`` is ``None`` between the provisional write and the spawn."""

    name: str
    marker: str
    owner: ProcessIdentity | None
    argv: list[str]
    labels: dict[str, str] = field(default_factory=dict)
    pid: int | None = None
    pgid: int | None = None
    start_time: int | None = None
    boot_id: str | None = None
    log_path: str | None = None
    created_at: str = ""

    def engine_identity(self) -> ProcessIdentity | None:
        if self.pid is None or self.start_time is None or self.boot_id is None:
            return None
        return ProcessIdentity(self.pid, self.start_time, self.boot_id)

    def to_dict(self) -> dict[str, object]:
        return {
            "schemaVersion": PID_FILE_SCHEMA,
            "name": self.name,
            "marker": self.marker,
            "owner": self.owner.to_dict() if self.owner else None,
            "argv": list(self.argv),
            "labels": dict(self.labels),
            "pid": self.pid,
            "pgid": self.pgid,
            "startTime": self.start_time,
            "bootId": self.boot_id,
            "logPath": self.log_path,
            "createdAt": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PidRecord:
        owner = data.get("owner")
        return cls(
            name=str(data["name"]),
            marker=str(data["marker"]),
            owner=ProcessIdentity.from_dict(owner) if owner else None,
            argv=[str(a) for a in data.get("argv", [])],
            labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
            pid=data.get("pid"),
            pgid=data.get("pgid"),
            start_time=data.get("startTime"),
            boot_id=data.get("bootId"),
            log_path=data.get("logPath"),
            created_at=str(data.get("createdAt", "")),
        )


def pid_file_path(pid_dir: Path, name: str) -> Path:
    return pid_dir / f"{name}.json"


def read_pid_file(path: Path) -> PidRecord | None:
    """The record in one pid file; ``None`` when it is unreadable or not one of ours."""
    try:
        return PidRecord.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def read_pid_files(pid_dir: Path) -> list[tuple[Path, PidRecord | None]]:
    """Every pid file in ``pid_dir`` with its record (``None``: unreadable or not ours)."""
    if not pid_dir.is_dir():
        return []
    return [(path, read_pid_file(path)) for path in sorted(pid_dir.glob("*.json"))]


def _owner_alive(record: PidRecord) -> bool:
    return record.owner is not None and is_running(record.owner)


def cleanup_orphans(
    pid_dir: Path, *, names: Collection[str] | None = None, grace_s: float = 5.0, kill_wait_s: float = 30.0
) -> list[str]:
    """Stop what dead owners left behind in ``pid_dir``; return the names of deployments stopped.

    For every pid file whose owner process is gone (a crashed or ``kill -9``-ed daemon or
    ``run``), the engine's processes are found by marker in ``/proc/*/environ`` (this reaches
    children that left the group or outlived the leader) and by the recorded pid when its start
    time and boot id still match. They get SIGTERM, then SIGKILL after ``grace_s``. The pid file
    is then removed, also when nothing was running (a stale file, or a pid now used by an
    unrelated process, which is left alone). Pid files of live owners, this process included,
    are not touched: those deployments are not orphans. ``names`` limits the pass to those
    deployments.
    """
    stopped: list[str] = []
    if not PROC.is_dir():
        # without /proc no owner can be told alive from dead: removing files could orphan a live run
        log.warning(
            "no /proc on this system: orphaned engines cannot be found; pid files left in %s", pid_dir
        )
        return stopped
    records = [(p, r) for p, r in read_pid_files(pid_dir) if names is None or p.stem in names]
    if not records:
        return stopped
    marked = marked_processes()
    for path, record in records:
        if record is None:
            log.warning("removing unreadable pid file %s", path)
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        if _owner_alive(record):
            continue
        targets: dict[int, ProcessIdentity] = {}
        for pid in marked.get(record.marker, []):
            ident = read_identity(pid)
            if ident is not None:
                targets[pid] = ident
        leader = record.engine_identity()
        if leader is not None and is_running(leader):
            targets[leader.pid] = leader
        if targets:
            log.warning(
                "stopping orphaned engine %s (pids %s) left by a previous run", record.name, sorted(targets)
            )
            stop_identities(list(targets.values()), grace_s, kill_wait_s)
            stopped.append(record.name)
        with contextlib.suppress(OSError):
            path.unlink()
    _remove_stale_temp_files(pid_dir)
    return stopped


def _remove_stale_temp_files(pid_dir: Path, older_than_s: float = 60.0) -> None:
    """Temporary files a ``kill -9`` interrupted mid-write; young ones may be in use by a live writer."""
    now = time.time()
    for tmp in pid_dir.glob(f".*{atomic.TEMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
