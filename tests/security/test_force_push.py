"""A force-push that removes a commit (a leaked credential) stays removed (issue 10, item 4).

The daemon has results it could not push yet when the user pushes a credential by mistake and
then force-pushes it away; the daemon has fetched the bad commit in between. Its next commit-back
must replay only its own results onto the remote as the user left it: the credential is in no
commit reachable from the remote afterwards.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from reconciler.git import git
from tests.e2e.helpers import sim_spec
from tests.integration.gitrepo import Remote, start_daemon, stop_daemon, wait_for

pytestmark = pytest.mark.slow

SECRET = "AKIAFORCEPUSHED0SECRET9"

#: the remote refuses the daemon's pushes while the flag file exists (an outage, a protected
#: branch): the daemon keeps results it has not pushed yet
HOOK = """#!/bin/sh
[ -f "$GIT_DIR/reject-daemon" ] || exit 0
while read old new ref; do
  if git log --format=%s "$old..$new" 2>/dev/null | grep -q '^autotuner:'; then
    echo "daemon pushes refused for this test" >&2; exit 1
  fi
done
"""


def test_a_force_pushed_away_credential_is_never_pushed_back(tmp_path: Path) -> None:
    repo = Remote(tmp_path)
    hook = repo.remote / "hooks" / "pre-receive"
    hook.write_text(HOOK)
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    budget = 8
    repo.put_spec("leaky", sim_spec("leaky", strategy="tpe", budget=budget))
    state = tmp_path / "state"
    live = state / "results" / "leaky" / "experiments"
    proc = start_daemon(repo, state)
    try:
        wait_for(lambda: repo.records("leaky"), 120, "a first pushed result")
        (repo.remote / "reject-daemon").touch()
        pushed = len(repo.records("leaky"))
        wait_for(lambda: len(list(live.glob("0*.json"))) >= pushed + 2, 120, "results the daemon cannot push")
        # the user leaks a credential, the daemon fetches it, the user force-pushes it away
        repo.pull()
        (repo.user / "deploy.env").write_text(f"AWS_SECRET_ACCESS_KEY={SECRET}\n")
        leaked = repo.commit_push("add deploy settings")
        wait_for(
            lambda: git(["cat-file", "-t", leaked], state / "repo", check=False).strip() == "commit",
            30,
            "the daemon to fetch the leaked commit",
        )
        git(["reset", "-q", "--hard", "HEAD~1"], repo.user)
        git(["push", "-q", "--force", "origin", "HEAD:main"], repo.user)
        (repo.remote / "reject-daemon").unlink()
        wait_for(
            lambda: (
                len(repo.records("leaky")) == budget
                and any(
                    c["type"] == "Ready" and c["status"] == "True" for c in repo.status("leaky")["conditions"]
                )
            ),
            180,
            "every result on the remote",
            interval=0.5,
        )
    finally:
        err = stop_daemon(proc)
    assert "Traceback" not in err, err
    everything = git(["log", "--all", "-p", "--format=%H %s"], repo.remote)
    assert SECRET not in everything
    assert "deploy.env" not in git(["log", "--all", "--name-only", "--format="], repo.remote)
    reachable = git(["rev-list", "--all"], repo.remote).split()
    assert leaked not in reachable
    recs = repo.records("leaky")
    assert [r["id"] for r in recs] == [f"{i:04d}" for i in range(1, budget + 1)]
    assert len({r["configHash"] for r in recs}) == budget


def _ready(status: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status["conditions"])


def test_a_commit_built_on_the_removed_commit_is_never_pushed(tmp_path: Path) -> None:
    """The exact race, made deterministic: the daemon fetched the leaked commit, the user rewinds
    the branch, and the daemon commits back *before* its next fetch. Its commit, built on the
    leaked one, is a fast-forward of the rewound branch, so only the lease stops it; the daemon
    then fetches and builds the commit again on what the user left."""
    from reconciler.results import ResultsStore
    from reconciler.workspace import Workspace

    repo = Remote(tmp_path)
    ws = Workspace(str(repo.remote), tmp_path / "state")
    ws.fetch()
    repo.pull()
    (repo.user / "deploy.env").write_text(f"AWS_SECRET_ACCESS_KEY={SECRET}\n")
    leaked = repo.commit_push("add deploy settings")
    ws.fetch()  # the daemon has seen it
    git(["reset", "-q", "--hard", "HEAD~1"], repo.user)
    git(["push", "-q", "--force", "origin", "HEAD:main"], repo.user)
    store = ResultsStore(ws.results_dir, "x")
    store.ensure()
    store.status_path.write_text('{"n": 1}\n')
    ws.mark("x")
    done = ws.commit_back("autotuner: x: status")
    ws.close()
    assert done.pushed
    assert leaked not in git(["rev-list", "--all"], repo.remote).split()
    assert SECRET not in git(["log", "--all", "-p"], repo.remote)
    assert repo.show("results/x/status.json") == '{"n": 1}\n'
