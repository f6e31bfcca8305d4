"""Hostile content under ``results/`` (the daemon's folder, but in a repository anyone may push to).

A pushed symlink where the daemon writes (``best/``, ``experiments/``, ``results/<spec>``,
``results/`` itself, ``study.journal``) must be replaced by a real folder or file, never written
through; a pushed symlink where the daemon or the site builder reads (``best/command.sh``, an
experiment record) is never followed. The documented rule (docs/security.md): the daemon owns
``results/``, so such symlinks are removed and their removal is committed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.security.hostile import SECRETS, HostileRepo, good_spec

pytestmark = pytest.mark.slow

SYMLINK = "120000"


def test_symlinked_results_folders_are_replaced_not_written_through(tmp_path: Path) -> None:
    repo = HostileRepo(tmp_path)
    repo.write("specs/good.yaml", good_spec())
    repo.write("specs/other.yaml", good_spec("other"))
    repo.symlink("results/good/best", repo.decoy / "dir")
    repo.symlink("results/good/experiments", repo.decoy)
    repo.symlink("results/good/study.journal", repo.decoy / "journal")
    repo.symlink("results/other", repo.decoy)
    repo.commit_push("plant symlinks")

    repo.reconcile()

    repo.assert_ready("good")
    repo.assert_ready("other")
    tree = repo.remote_tree()
    assert not [p for p, mode in tree.items() if mode == SYMLINK], tree
    for name in ("good", "other"):
        assert f"results/{name}/best/command.sh" in tree
        assert f"results/{name}/experiments/0001.json" in tree
    repo.assert_contained()


def test_a_symlinked_results_root_is_replaced(tmp_path: Path) -> None:
    repo = HostileRepo(tmp_path)
    repo.write("specs/good.yaml", good_spec())
    repo.symlink("results", repo.decoy)
    repo.commit_push("results is a symlink")

    repo.reconcile()

    repo.assert_ready("good")
    tree = repo.remote_tree(".")
    assert tree.get("results") is None, "the symlink itself must be gone"
    assert "results/good/status.json" in tree
    repo.assert_contained()


def test_symlinked_result_files_never_reach_the_site(tmp_path: Path) -> None:
    repo = HostileRepo(tmp_path)
    repo.write("specs/good.yaml", good_spec())
    repo.commit_push("good spec")
    repo.reconcile()
    repo.assert_ready("good")

    # the attacker points files the site shows at the daemon's environment and at a device
    repo.pull()
    repo.symlink("results/good/best/command.sh", "/proc/self/environ")
    repo.symlink("results/good/experiments/0002.json", "/proc/self/environ")
    repo.symlink("results/good/best/engine-args.json", "/dev/zero")
    repo.symlink("results/evil/status.json", "/proc/self/environ")
    repo.commit_push("point results at secrets")

    # a daemon that clones afresh (a new host, a lost state dir) finds the symlinks in its checkout
    fresh = tmp_path / "state2"
    repo.reconcile(state=fresh)
    proc = repo.report(fresh / "repo" / "results")
    assert proc.returncode == 0, proc.stderr

    pages = "\n".join(p.read_text(errors="replace") for p in repo.site.rglob("*.html"))
    assert "not a regular file" in pages  # the spec page lists them as unreadable
    for value in SECRETS.values():
        assert value not in pages
    repo.assert_ready("good")
    repo.state = fresh  # check the fresh daemon's folders too
    repo.assert_contained()


def test_a_huge_csv_header_does_not_make_a_huge_status(tmp_path: Path) -> None:
    repo = HostileRepo(tmp_path)
    repo.write("specs/good.yaml", good_spec())
    header = ",".join(f"column_{i:07d}" for i in range(200_000))  # about 3 MB on one line
    repo.write("data/wide.csv", header + "\n" + ",".join("x" for _ in range(200_000)) + "\n")
    text = good_spec("wide").replace(
        "dataset: {kind: synthetic, input: {mean: 200, stddev: 20}, output: {mean: 40}}",
        "dataset: {kind: csv, path: data/wide.csv, output: {mean: 8}}",
    )
    repo.write("specs/wide.yaml", text)
    repo.commit_push("a wide csv")

    repo.reconcile()

    repo.assert_ready("good")
    status = repo.remote_file("results/wide/status.json")
    assert len(status) < 16_000, f"status.json is {len(status)} bytes"
    stalled = repo.condition("wide", "Stalled")
    assert stalled["status"] == "True" and "no column 'prompt'" in stalled["message"]
    assert "and 199988 more" in stalled["message"]
    repo.assert_contained()
