"""Reproduction of the study crash of issue 11: the commit-back fetched and rebased the daemon's
working clone (``--autostash``) while a study appended to ``study.journal`` in that same tree, so
an append landed in a file that git then replaced and Optuna's ``ask()`` died with
``'JournalStorageReplayResult' object has no attribute '_last_created_trial_id_by_this_process'``.

The test runs a real Optuna study on the journal where the workspace keeps it while the main thread
commits back and pushes against a user who keeps pushing (every push is rejected first, so each
commit-back fetches and replays). It passes only when nothing the commit-back does can touch the
file the study writes.
"""

from __future__ import annotations

import threading
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from reconciler.git import git
from reconciler.results import ResultsStore
from reconciler.workspace import Workspace
from tests.integration.gitrepo import Remote

pytestmark = pytest.mark.slow


def test_commit_back_never_touches_the_journal_a_study_writes(tmp_path: Path) -> None:
    repo = Remote(tmp_path)
    ws = Workspace(str(repo.remote), tmp_path / "state")
    ws.fetch()
    store = ResultsStore(ws.results_dir, "x")
    store.ensure()
    storage = JournalStorage(JournalFileBackend(str(store.journal)))
    study = optuna.create_study(study_name="x", storage=storage, load_if_exists=True)
    (store.dir / "status.json").write_text("{}\n")
    ws.mark("x")
    ws.commit_back("autotuner: x: first")

    errors: list[BaseException] = []
    stop = threading.Event()
    told = [0]

    def optimise() -> None:
        try:
            while not stop.is_set():
                trial = study.ask()
                study.tell(trial, trial.suggest_float("v", 0, 1))
                told[0] += 1
                stop.wait(0.002)
        except BaseException as exc:  # the crash under test
            errors.append(exc)

    worker = threading.Thread(target=optimise)
    worker.start()
    try:
        for i in range(40):
            repo.pull()
            (repo.user / "NOTES.md").write_text(f"note {i}\n")
            repo.commit_push(f"user note {i}")
            (store.dir / "status.json").write_text(f'{{"n": {i}}}\n')
            ws.mark("x")
            ws.commit_back(f"autotuner: x: update {i}")
            if errors:
                break
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not errors, f"the study crashed during commit-back: {errors[0]!r}"
    # every trial the study told is still in its journal, and the user's notes are all on the remote
    assert len(study.get_trials()) == told[0]
    log = repo.log()
    assert all(f"user note {i}" in log for i in range(40))
    assert git(["show", "main:NOTES.md"], repo.remote) == "note 39\n"
    assert git(["show", "main:results/x/status.json"], repo.remote) == '{"n": 39}\n'
    # the committed journal is a snapshot a fresh study loads
    snapshot = tmp_path / "snapshot.journal"
    snapshot.write_text(git(["show", "main:results/x/study.journal"], repo.remote))
    fresh = optuna.load_study(study_name="x", storage=JournalStorage(JournalFileBackend(str(snapshot))))
    assert 0 < len(fresh.get_trials()) <= told[0]
