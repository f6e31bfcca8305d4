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
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from reconciler.git import git
from reconciler.results import ResultsStore
from reconciler.workspace import Workspace
from tests.integration.gitrepo import Remote


def test_commit_back_never_touches_the_journal_a_study_writes(tmp_path: Path) -> None:
    repo = Remote(tmp_path)
    ws = Workspace(str(repo.remote), tmp_path / "state" / "repo", branch="main")
    ws.fetch()
    store = ResultsStore(ws.results_dir, "x")
    store.ensure()
    storage = JournalStorage(JournalFileBackend(str(store.journal)))
    study = optuna.create_study(study_name="x", storage=storage, load_if_exists=True)
    (store.dir / "status.json").write_text("{}\n")
    ws.commit("autotuner: x: first")
    ws.publish()

    errors: list[BaseException] = []
    stop = threading.Event()
    told = [0]

    def optimise() -> None:
        try:
            while not stop.is_set():
                trial = study.ask()
                study.tell(trial, trial.suggest_float("v", 0, 1))
                told[0] += 1
        except BaseException as exc:  # the crash under test
            errors.append(exc)

    worker = threading.Thread(target=optimise)
    worker.start()
    try:
        for i in range(40):
            (repo.user / "NOTES.md").write_text(f"note {i}\n")
            repo.pull()
            repo.commit_push(f"user note {i}")
            (store.dir / "status.json").write_text(f'{{"n": {i}}}\n')
            ws.commit(f"autotuner: x: update {i}")
            ws.publish()
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
