"""The one atomic-write helper: whole files or nothing, never a stray temporary file."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest

from core import atomic


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "status.json"
    atomic.write_json(target, {"b": 1, "a": [1, 2]})
    atomic.write_json(target, {"b": 2, "a": "é"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": "é", "b": 2}
    assert sorted(p.name for p in target.parent.iterdir()) == ["status.json"]


def test_json_is_deterministic_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    atomic.write_json(a, {"z": 1, "y": {"k": 2, "j": 3}})
    atomic.write_json(b, {"y": {"j": 3, "k": 2}, "z": 1})
    assert a.read_bytes() == b.read_bytes()
    assert a.read_text().endswith("}\n")


def test_a_failed_write_keeps_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    atomic.write_json(target, {"ok": True})
    with pytest.raises(ValueError):
        atomic.write_json(target, {"score": math.nan})  # NaN is not JSON
    with pytest.raises(TypeError):
        atomic.write_json(target, {"obj": object()})
    assert json.loads(target.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_interrupted_write_removes_its_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    # a directory in the way of os.replace makes the rename fail after the temp file exists
    blocked = tmp_path / "dir-target"
    blocked.mkdir()
    (blocked / "inside").write_text("x")
    with pytest.raises(OSError):
        atomic.write_bytes(blocked, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir-target", "x.bin"]
    assert target.read_bytes() == b"old"


def test_mode_is_applied(tmp_path: Path) -> None:
    target = tmp_path / "site.html"
    atomic.write_text(target, "<p>hi</p>")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
    atomic.write_text(target, "secret", mode=0o600)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert target.read_text() == "secret"


def test_fast_mode_still_replaces_atomically_and_skips_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "page.html"
    target.write_text("old")
    synced: list[int] = []
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: synced.append(fd))
    atomic.write_text(target, "new", durable=False)
    assert target.read_text() == "new"
    assert synced == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page.html"]
    atomic.write_text(target, "newer")
    assert len(synced) == 2  # the file, then its folder
