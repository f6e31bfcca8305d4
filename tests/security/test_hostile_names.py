"""Hostile spec *names* and *file names*: the identity rule and NUL-safe reading of ``specs/``.

The rule (docs/security.md, reconciler/reconcile.py): a name is held by the file that
``status.json`` already names, else by the file added first, else by the first path. Newcomers
are refused with a located message naming the holder, write nothing, and never stop the holder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reconciler.git import git
from tests.e2e.helpers import sim_spec
from tests.security.hostile import SECRETS, HostileRepo, good_spec

pytestmark = pytest.mark.slow


def events(repo: HostileRepo, what: str) -> list[str]:
    return [line for text in repo.outputs for line in text.splitlines() if what in line]


def test_duplicate_names_stall_the_newcomers_never_the_holder(tmp_path: Path) -> None:
    repo = HostileRepo(tmp_path)
    # valid + valid: the file added first holds the name, whatever the path order says
    repo.write("specs/z-first.yaml", good_spec("dup"))
    # .yaml then .yml of the same stem and name
    repo.write("specs/ok.yaml", good_spec("ok"))
    repo.write("specs/stem.yaml", good_spec("stem"))
    repo.commit_push("the holders")
    repo.write("specs/a-second.yaml", good_spec("dup").replace("seed: 5", "seed: 6"))
    repo.write("specs/ok.yml", good_spec("ok").replace("seed: 5", "seed: 6"))
    # valid + invalid: an invalid file whose name matches, and one whose file stem matches
    repo.write("specs/broken-named.yaml", good_spec("stem").replace("seed: 5", "seed: five"))
    repo.write("specs/stem.yml", "this: [is not: valid yaml\n")
    repo.commit_push("the newcomers")

    repo.reconcile()

    for name, holder in (("dup", "specs/z-first.yaml"), ("ok", "specs/ok.yaml"), ("stem", "specs/stem.yaml")):
        repo.assert_ready(name)
        assert repo.status(name)["specFile"] == holder
    refused = events(repo, "spec refused: name in use")
    for newcomer, holder in (
        ("specs/a-second.yaml", "specs/z-first.yaml"),
        ("specs/ok.yml", "specs/ok.yaml"),
        ("specs/broken-named.yaml", "specs/stem.yaml"),
        ("specs/stem.yml", "specs/stem.yaml"),
    ):
        line = next((x for x in refused if f"file={newcomer}" in x), None)
        assert line is not None, f"{newcomer} was not reported: {refused}"
        assert f"holder={holder}" in line and "metadata.name" in line

    # later passes: the holders keep their names and their results; nothing flip-flops
    head = git(["rev-parse", "main"], repo.remote).strip()
    repo.pull()
    repo.write("specs/yet-another.yaml", good_spec("dup").replace("seed: 5", "seed: 9"))
    repo.commit_push("one more newcomer")
    pushed = git(["rev-parse", "main"], repo.remote).strip()
    assert pushed != head
    repo.reconcile()
    assert git(["rev-parse", "main"], repo.remote).strip() == pushed, "the daemon committed for a newcomer"
    assert repo.status("dup")["specFile"] == "specs/z-first.yaml"
    repo.assert_ready("dup")
    repo.assert_contained()


def test_an_invalid_file_that_held_the_name_first_keeps_it(tmp_path: Path) -> None:
    repo = HostileRepo(tmp_path)
    repo.write("specs/first.yaml", good_spec("taken").replace("seed: 5", "seed: five"))
    repo.write("specs/good.yaml", good_spec())
    repo.commit_push("an invalid spec holds 'taken'")
    repo.reconcile()
    assert repo.status("taken")["specFile"] == "specs/first.yaml"
    repo.pull()
    repo.write("specs/second.yaml", good_spec("taken"))
    repo.commit_push("a valid newcomer")
    repo.reconcile()
    status = repo.status("taken")
    assert status["specFile"] == "specs/first.yaml"
    assert next(c for c in status["conditions"] if c["type"] == "Stalled")["status"] == "True"
    assert not status["counts"]["total"], "the newcomer ran in the holder's folder"
    repo.assert_ready("good")
    repo.assert_contained()


def test_control_characters_in_file_names_are_refused_and_nothing_shifts(tmp_path: Path) -> None:
    repo = HostileRepo(tmp_path)
    repo.write("specs/a.yaml", good_spec("a"))
    repo.write("specs/b\nx.yaml", good_spec("bx"))
    repo.write("specs/c\tz.yaml", good_spec("cz"))
    repo.write("specs/d.yaml", good_spec("d"))
    repo.commit_push("names with a newline and a tab")

    repo.reconcile()

    for name in ("a", "d"):
        repo.assert_ready(name)
        assert repo.status(name)["specFile"] == f"specs/{name}.yaml"
    for name, path, shown in (
        ("bx", "specs/b\nx.yaml", "specs/b\\nx.yaml"),
        ("cz", "specs/c\tz.yaml", "specs/c\\tz.yaml"),
    ):
        status = repo.status(name)
        [problem] = status["problems"]
        assert problem["file"] == shown and "control characters" in problem["message"]
        assert status["specFile"] == path
    repo.assert_contained()


def test_under_the_daemon_duplicates_neither_flip_flop_nor_kill_it(tmp_path: Path) -> None:
    """The issue's report: with duplicate names the daemon's status flip-flopped (136 commits in
    two minutes), interrupted the holder on every pass, then died. Now the holder finishes, the
    newcomers write nothing, and passes with nothing new make no commit."""
    repo = HostileRepo(tmp_path)
    repo.write("specs/ok.yaml", sim_spec("ok", strategy="grid", budget=2, parameters=TWO))
    repo.write("specs/dup-1.yaml", good_spec("dup"))
    repo.commit_push("holders")
    repo.write("specs/ok.yml", good_spec("ok").replace("seed: 5", "seed: 6"))
    repo.write("specs/dup-2.yaml", good_spec("dup").replace("seed: 5", "seed: 7"))
    repo.write("specs/dup.yml", "not: [valid\n")
    repo.commit_push("newcomers")
    cmd = [
        sys.executable,
        "-m",
        "reconciler",
        "daemon",
        "--repo",
        str(repo.remote),
        "--state-dir",
        str(repo.state),
        "--site-dir",
        str(repo.site),
        "--interval",
        "1",
    ]
    env = {**os.environ, **SECRETS}
    with subprocess.Popen(
        cmd, cwd=repo.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and not _both_ready(repo):
                assert proc.poll() is None, "the daemon died"
                time.sleep(0.5)
            assert _both_ready(repo), "the holders did not finish"
            settled = git(["rev-parse", "main"], repo.remote).strip()
            time.sleep(6)  # about five more passes
            assert proc.poll() is None, "the daemon died"
            assert git(["rev-parse", "main"], repo.remote).strip() == settled, "passes kept committing"
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=90)
    repo.outputs.append(out)
    assert proc.returncode == 0, out[-4000:]
    assert "interrupted" not in repo.status("ok")["conditions"][0]["message"]
    assert repo.status("ok")["counts"]["total"] == 2
    assert repo.status("dup")["specFile"] == "specs/dup-1.yaml"
    assert len(events(repo, "spec refused: name in use")) == 3  # once each, not once per pass
    repo.assert_contained()


TWO = "      max-num-seqs: {values: [4, 8]}"


def _both_ready(repo: HostileRepo) -> bool:
    try:
        return all(
            next(c for c in repo.status(n)["conditions"] if c["type"] == "Ready")["status"] == "True"
            for n in ("ok", "dup")
        )
    except Exception:
        return False
