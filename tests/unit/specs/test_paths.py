"""The path rules for untrusted repositories (specs/paths.py), on real files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from specs.errors import NotRegular, OutsideRoots, TooLarge
from specs.paths import excerpt, inside_roots, read_regular, real_dir


def test_inside_roots_resolves_symlinks_first(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "ok.txt").write_text("x")
    (tmp_path / "repo" / "link").symlink_to("/etc/passwd")
    assert inside_roots("ok.txt", [tmp_path / "repo"], base=tmp_path / "repo") == (
        tmp_path / "repo" / "ok.txt"
    )
    for bad in ("link", "../outside", "/etc/passwd"):
        with pytest.raises(OutsideRoots):
            inside_roots(bad, [tmp_path / "repo"], base=tmp_path / "repo")


def test_read_regular_refuses_devices_proc_symlinks_and_big_files(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"12345")
    assert read_regular(tmp_path / "f", 5) == b"12345"
    with pytest.raises(TooLarge):
        read_regular(tmp_path / "f", 4)
    (tmp_path / "l").symlink_to(tmp_path / "f")
    with pytest.raises(NotRegular):
        read_regular(tmp_path / "l", 100)
    assert read_regular(tmp_path / "l", 100, follow=True) == b"12345"
    with pytest.raises(NotRegular):
        read_regular(Path("/dev/zero"), 100, follow=True)
    # /proc files say size 0 and are regular: the cap on the read itself stops them
    with pytest.raises(TooLarge):
        read_regular(Path("/proc/self/maps"), 10, follow=True)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(NotRegular):  # opened non-blocking: a FIFO never hangs the reader
        read_regular(tmp_path / "fifo", 100)


def test_real_dir_replaces_symlinks_and_never_touches_their_target(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    root = tmp_path / "results"
    (root / "spec").mkdir(parents=True)
    (root / "spec" / "best").symlink_to(outside)
    replaced: list[Path] = []
    best = real_dir(root, ["spec", "best"], replaced=replaced)
    assert best.is_dir() and not best.is_symlink() and list(best.iterdir()) == []
    assert replaced == [root / "spec" / "best"]
    assert (outside / "precious").read_text() == "keep"
    with pytest.raises(OSError, match="folder name"):
        real_dir(root, [".."])


def test_excerpt_is_short_and_redacted() -> None:
    assert excerpt("GIT_TOKEN=ghp_secret\0HOME=/root") == "GIT_TOKEN=***"
    assert excerpt("a" * 100).endswith("...") and len(excerpt("a" * 100)) == 43
    assert excerpt("line\nnext") == "line\\nnext"
