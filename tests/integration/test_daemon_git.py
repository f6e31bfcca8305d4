"""The daemon and ``autotuner reconcile`` against real git as a new user sets it up (issue 11):
a plain ``git init --bare`` (``master``), relative paths, kills at the worst moments, visible
trouble, no churn, and the site published to a branch."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest

from reconciler.git import git
from reconciler.reconcile import Reconciler
from reconciler.session import open_session
from reconciler.workspace import Workspace
from tests.e2e.helpers import autotuner, sim_spec, wait_no_engines
from tests.integration.gitrepo import Remote, start_daemon, stop_daemon, wait_for

ONE = "      max-num-seqs: {values: [8]}"
THREE = "      max-num-seqs: {values: [4, 16, 64]}"


def _ready(status: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status["conditions"])


@pytest.mark.slow
def test_master_default_remote_and_relative_state_dir(tmp_path: Path) -> None:
    repo = Remote(tmp_path, default="master")
    repo.put_spec("alpha", sim_spec("alpha", strategy="grid", budget=1, parameters=ONE))
    # no --branch: the remote's HEAD (master); a relative state dir, resolved at start-up
    proc = autotuner("reconcile", "--repo", "remote.git", "--state-dir", "st2", "-q", cwd=tmp_path)
    assert re.search(
        r"1 experiment\(s\) run, \d+ commit\(s\) pushed to .*remote.git branch master", proc.stderr
    )
    assert "branch master" in proc.stderr
    assert _ready(repo.status("alpha"))
    assert not (tmp_path / "st2" / "repo.tmp").exists()
    again = autotuner("reconcile", "--repo", "remote.git", "--state-dir", "st2", "-q", cwd=tmp_path)
    assert "nothing new (no experiment run, nothing to commit)" in again.stderr, again.stderr
    # `autotuner status` follows the remote's HEAD as well
    status = autotuner("status", "--repo", str(repo.remote), cwd=tmp_path)
    assert "alpha" in status.stdout and "Ready" in status.stdout


@pytest.mark.slow
def test_sigkill_during_the_first_clone_then_restart(tmp_path: Path) -> None:
    repo = Remote(tmp_path)
    repo.put_spec("beta", sim_spec("beta", strategy="grid", budget=1, parameters=ONE))
    killed = autotuner(
        "reconcile",
        "--repo",
        str(repo.remote),
        "--state-dir",
        "state",
        "-q",
        cwd=tmp_path,
        env={"AUTOTUNER_CRASH_AT": "clone_done"},
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "state" / "repo.tmp").is_dir()  # the partial clone a crash leaves
    autotuner("reconcile", "--repo", str(repo.remote), "--state-dir", "state", "-q", cwd=tmp_path)
    assert not (tmp_path / "state" / "repo.tmp").exists()
    assert _ready(repo.status("beta"))


@pytest.mark.slow
@pytest.mark.parametrize("point", ["commit_back_push", "commit_back_pushed"])
def test_sigkill_during_a_commit_back_then_restart(tmp_path: Path, point: str) -> None:
    repo = Remote(tmp_path)
    repo.put_spec("gamma", sim_spec("gamma", strategy="grid", budget=3, parameters=THREE))
    # killed on the second commit-back: its commit built and not pushed, or pushed and not recorded
    killed = autotuner(
        "reconcile",
        "--repo",
        str(repo.remote),
        "--state-dir",
        "state",
        "-q",
        cwd=tmp_path,
        env={"AUTOTUNER_CRASH_AT": f"{point}:2"},
        check=False,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL
    assert wait_no_engines(str(tmp_path)) == []
    before = repo.records("gamma")
    live = sorted(p.name for p in (tmp_path / "state" / "results" / "gamma" / "experiments").glob("0*.json"))
    if point == "commit_back_push":
        assert len(live) > len(before)  # results the kill kept from the remote
    autotuner(
        "reconcile", "--repo", str(repo.remote), "--state-dir", "state", "-q", cwd=tmp_path, timeout=300
    )
    recs = repo.records("gamma")
    assert [r["id"] for r in recs] == ["0001", "0002", "0003"]
    assert len({r["configHash"] for r in recs}) == 3
    assert _ready(repo.status("gamma"))
    # nothing of the daemon's live state reached git
    tracked = git(["ls-tree", "-r", "--name-only", "main"], repo.remote).split()
    assert not [t for t in tracked if t.endswith((".lock", ".tmp"))]


@pytest.mark.slow
def test_a_fresh_state_dir_resumes_from_the_committed_journal(tmp_path: Path) -> None:
    repo = Remote(tmp_path)
    budget = 6
    repo.put_spec("delta", sim_spec("delta", strategy="tpe", budget=budget))
    proc = start_daemon(repo, tmp_path / "host1")
    try:
        wait_for(lambda: len(repo.records("delta")) >= 2, 120, "two committed experiments")
    finally:
        stop_daemon(proc)  # SIGTERM: the study stops and its journal snapshot is committed
    first = repo.records("delta")
    assert 2 <= len(first) < budget
    assert repo.show("results/delta/study.journal").strip()
    # another host, empty state: it takes the committed results and journal and goes on
    autotuner(
        "reconcile", "--repo", str(repo.remote), "--state-dir", "host2", "-q", cwd=tmp_path, timeout=300
    )
    recs = repo.records("delta")
    assert [r["id"] for r in recs] == [f"{i:04d}" for i in range(1, budget + 1)]
    assert len({r["configHash"] for r in recs}) == budget
    old_trials = {r["trial"] for r in first}
    new_trials = [r["trial"] for r in recs[len(first) :]]
    # the resumed Optuna study numbers its trials after the snapshot's: not a fresh study
    assert min(new_trials) > max(old_trials), (old_trials, new_trials)
    assert _ready(repo.status("delta"))


@pytest.mark.slow
def test_a_crash_of_the_study_thread_shows_in_status_within_one_pass(tmp_path: Path) -> None:
    repo = Remote(tmp_path)
    repo.put_spec("eps", sim_spec("eps", strategy="grid", budget=3, parameters=THREE))
    env_before = dict(os.environ)
    os.environ["AUTOTUNER_FAULT_AT"] = "study_change:2"
    try:
        proc = start_daemon(repo, tmp_path / "state", interval="2")
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    try:
        wait_for(lambda: (tmp_path / "state" / "results" / "eps" / "status.json").exists(), 120, "a status")
        crashed_at = wait_for(
            lambda: (
                time.monotonic()
                if "Degraded" in (tmp_path / "state" / "results" / "eps" / "status.json").read_text()
                else None
            ),
            120,
            "the live status to show the crash",
            interval=0.05,
        )
        status = wait_for(
            lambda: (
                repo.status("eps")
                if any(c["type"] == "Degraded" for c in repo.status("eps")["conditions"])
                else None
            ),
            30,
            "the crash in the committed status",
            interval=0.1,
        )
        shown_after = time.monotonic() - crashed_at
        cond = next(c for c in status["conditions"] if c["type"] == "Degraded")
        assert cond["status"] == "True" and cond["reason"] == "StudyCrashed"
        assert "InjectedFault" in cond["message"] and cond["nextRetryTime"]
        reconciling = next(c for c in status["conditions"] if c["type"] == "Reconciling")
        assert reconciling["status"] == "False"
        # committed by the next tick of the main loop (1 s), well within one pass interval (2 s) plus
        # the commit-back itself on a loaded machine
        assert shown_after < 2 + 5, shown_after
        shown = autotuner("status", "--repo", str(repo.remote), cwd=tmp_path, check=False)
        assert shown.returncode == 3
        assert "Degraded" in shown.stdout and "next retry" in shown.stdout
    finally:
        err = stop_daemon(proc)
    assert "study crashed" in err


def _session_reconciler(repo: Remote, state: Path) -> tuple[Reconciler, Workspace]:
    ws = Workspace(str(repo.remote), state)
    return Reconciler(ws, _SESSION[0], max_parallel=2), ws


_SESSION: list = []


@pytest.mark.slow
def test_a_stalled_spec_gets_no_commit_from_pushes_to_other_specs(tmp_path: Path) -> None:
    repo = Remote(tmp_path)
    (repo.user / "specs").mkdir()
    (repo.user / "specs" / "bad.yaml").write_text(
        sim_spec("bad", strategy="grid", budget=1, parameters="      max-num-seqz: {values: [4]}")
    )
    other = sim_spec("other", strategy="grid", budget=1, parameters=ONE) + "  suspend: true\n"
    (repo.user / "specs" / "other.yaml").write_text(other)
    repo.commit_push("two specs")
    with open_session(tmp_path / "state") as session:
        _SESSION[:] = [session]
        rec, ws = _session_reconciler(repo, tmp_path / "state")
        rec.reconcile(wait=True)
        touching = git(["log", "--format=%H", "main", "--", "results/bad"], repo.remote).split()
        assert len(touching) == 1
        for i in range(20):
            repo.pull()
            (repo.user / "specs" / "other.yaml").write_text(other + f"# edit {i}\n")
            repo.commit_push(f"edit other {i}")
            rec.reconcile(wait=True)
        ws.close()
    assert git(["log", "--format=%H", "main", "--", "results/bad"], repo.remote).split() == touching
    bad = repo.status("bad")
    assert (
        bad["lastAppliedRevision"]
        == git(["log", "-1", "--format=%H", "main", "--", "specs/bad.yaml"], repo.remote).strip()
    )


@pytest.mark.slow
def test_the_site_branch_holds_the_site_and_changes_only_changed_pages(tmp_path: Path) -> None:
    repo = Remote(tmp_path)
    repo.put_spec("one", sim_spec("one", strategy="grid", budget=1, parameters=ONE))
    args = ("reconcile", "--repo", str(repo.remote), "--state-dir", "state", "--site-branch", "pages", "-q")
    autotuner(*args, cwd=tmp_path, timeout=300)
    files = git(["ls-tree", "-r", "--name-only", "pages"], repo.remote).split()
    assert "index.html" in files
    assert any(f.startswith("specs/one/") for f in files)
    # an orphan branch: the site only, no history of the specs
    assert len(git(["rev-list", "--max-parents=0", "pages"], repo.remote).split()) == 1
    assert git(["merge-base", "pages", "main"], repo.remote, check=False).strip() == ""
    assert not [f for f in files if f.startswith(("specs/one.yaml", "results/"))]
    before = git(["rev-parse", "pages"], repo.remote).strip()
    repo.pull()
    repo.put_spec("two", sim_spec("two", strategy="grid", budget=1, parameters=ONE))
    autotuner(*args, cwd=tmp_path, timeout=300)
    changed = git(["diff", "--name-only", before, "pages"], repo.remote).split()
    assert any(f.startswith("specs/two/") for f in changed)
    assert "index.html" in changed
    # one commit per rebuild, each holding only what that rebuild changed: never spec one's pages
    for sha in git(["rev-list", f"{before}..pages"], repo.remote).split():
        touched = git(["show", "--name-only", "--format=", sha], repo.remote).split()
        assert touched and not [f for f in touched if f.startswith("specs/one/")], touched
    count = git(["rev-list", "--count", "pages"], repo.remote).strip()
    # nothing new: no site commit either
    autotuner(*args, cwd=tmp_path, timeout=300)
    assert git(["rev-list", "--count", "pages"], repo.remote).strip() == count


@pytest.mark.slow
def test_startup_line_and_idle_passes_at_debug(tmp_path: Path) -> None:
    repo = Remote(tmp_path, default="master")
    proc = start_daemon(repo, "rel-state", "--site-branch", "pages")
    try:
        time.sleep(4)
    finally:
        err = stop_daemon(proc)
    line = next((x for x in err.splitlines() if "autotuner daemon: repository" in x), "")
    assert str(repo.remote) in line and "branch master" in line, err
    assert str(tmp_path / "rel-state") in line and "site branch pages" in line
    assert sum("pass done" in x for x in err.splitlines()) == 1, err  # the first; idle ones at DEBUG
    assert sys.executable


@pytest.mark.slow
def test_a_failing_sync_shows_on_this_host(tmp_path: Path) -> None:
    repo = Remote(tmp_path)
    repo.put_spec("zeta", sim_spec("zeta", strategy="grid", budget=1, parameters=ONE))
    state = tmp_path / "state"
    proc = start_daemon(repo, state)
    try:
        wait_for(lambda: _ready(repo.status("zeta")), 120, "the study to finish")
        repo.remote.rename(tmp_path / "gone.git")  # the remote becomes unreachable
        live = state / "results" / "zeta" / "status.json"
        wait_for(lambda: "SyncFailing" in live.read_text(), 30, "the sync failure in the live status")
        shown = autotuner("status", "--state-dir", str(state), cwd=tmp_path, check=False)
        assert shown.returncode == 3 and "Degraded" in shown.stdout and "cannot sync" in shown.stdout
    finally:
        err = stop_daemon(proc)
    assert "sync failed" in err
