"""Every git call goes through reconciler.git, and every way it can fail is a GitError (transient:
the pass backs off), never a TimeoutExpired or CalledProcessError escaping as a bug."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from reconciler.git import git, git_bytes, git_stream
from specs.errors import GitError, TransientError


@pytest.fixture
def hanging_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``git`` on PATH that prints a little and then never finishes (a hung remote)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "git"
    script.write_text("#!/bin/sh\necho started\nexec sleep 30\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_a_timeout_is_a_transient_git_error(hanging_git: Path) -> None:
    for call in (
        lambda: git(["fetch", "origin"], hanging_git, timeout=0.5),
        lambda: git_bytes(["cat-file", "--batch"], hanging_git, timeout=0.5, data=b"x\n"),
    ):
        started = time.monotonic()
        with pytest.raises(GitError, match="timed out") as info:
            call()
        assert isinstance(info.value, TransientError)
        assert time.monotonic() - started < 10


def test_a_stream_that_stalls_times_out_and_stops_git(hanging_git: Path) -> None:
    got = b""
    with pytest.raises(GitError, match="timed out"), git_stream(["log"], hanging_git, timeout=0.5) as chunks:
        for chunk in chunks:
            got += chunk
    assert got == b"started\n"


def test_a_failing_plumbing_command_is_a_git_error(tmp_path: Path) -> None:
    git(["init", "-q"], tmp_path)
    with pytest.raises(GitError, match="cat-file"):
        git_bytes(["cat-file", "-p", "no-such-object"], tmp_path)
    # check=False: a non-zero exit is an answer (no such ref), not an error
    assert git(["rev-parse", "--verify", "-q", "HEAD"], tmp_path, check=False) == ""


def test_input_and_extra_environment_reach_git(tmp_path: Path) -> None:
    git(["init", "-q"], tmp_path)
    sha = git(["hash-object", "-w", "--stdin"], tmp_path, data=b"hello\n").strip()
    assert git_bytes(["cat-file", "blob", sha], tmp_path) == b"hello\n"
    index = tmp_path / "private.index"
    git(["read-tree", "--empty"], tmp_path, env={"GIT_INDEX_FILE": str(index)})
    assert index.is_file()
