"""The daemon's live state (Optuna journal, in-flight markers, temp files) never shares a tree with
git: user pushes that force a fetch + rebase/replay of the commit-back while a study runs must not
touch what the study writes (issue 11)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.helpers import sim_spec, wait_no_engines
from tests.integration.gitrepo import Remote, start_daemon, stop_daemon, wait_for

pytestmark = pytest.mark.slow


def test_user_pushes_during_a_running_study_never_crash_it(tmp_path: Path) -> None:
    """50 user pushes interleaved with a running study's commit-backs: no lost user commit, no
    study crash, no duplicated or lost experiment. Before the live state left the git tree, a
    rebase of the working clone rewrote ``study.journal`` under Optuna and the study died with
    ``'JournalStorageReplayResult' object has no attribute '_last_created_trial_id_by_this_process'``."""
    repo = Remote(tmp_path)
    budget = 14
    repo.put_spec("busy", sim_spec("busy", strategy="tpe", budget=budget))
    proc = start_daemon(repo, tmp_path / "state")
    user_commits = []
    try:
        wait_for(lambda: any("busy: experiment" in s for s in repo.log()), 120, "a first result commit")
        for i in range(50):
            repo.pull()
            (repo.user / "NOTES.md").write_text(f"note {i}\n")
            user_commits.append(repo.commit_push(f"user note {i}"))
        wait_for(
            lambda: (
                repo.status("busy")["counts"]["total"] >= budget
                and next(c for c in repo.status("busy")["conditions"] if c["type"] == "Ready")["status"]
                == "True"
            ),
            300,
            "the study to finish",
            interval=0.5,
        )
    finally:
        err = stop_daemon(proc)
    assert "study crashed" not in err, err
    assert "push rejected" in err  # the user's pushes did race the commit-backs
    assert "Traceback" not in err, err
    for sha in user_commits:
        assert repo.head() and sha in _ancestors(repo)
    recs = repo.records("busy")
    assert [r["id"] for r in recs] == [f"{i:04d}" for i in range(1, budget + 1)]
    assert len({r["configHash"] for r in recs}) == budget
    assert len({r["trial"] for r in recs}) == budget
    assert wait_no_engines(str(tmp_path)) == []


def _ancestors(repo: Remote) -> set[str]:
    from reconciler.git import git

    return set(git(["rev-list", repo.branch], repo.remote).split())
