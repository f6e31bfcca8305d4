"""The reconciler on real git: a bare remote, a user clone and the daemon's clone, in temp dirs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reconciler.git import git
from tests.e2e.helpers import autotuner, sim_spec, wait_no_engines

pytestmark = pytest.mark.slow

SMALL = "      max-num-seqs: {values: [4, 16, 64]}"


class Repo:
    """A bare remote and a user's clone of it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.remote = root / "remote.git"
        self.user = root / "user"
        self.state = root / "state"
        self.remote.mkdir()
        git(["init", "-q", "--bare", "-b", "main"], self.remote)
        git(["clone", "-q", str(self.remote), str(self.user)], root)
        (self.user / "README.md").write_text("specs\n")
        self.commit_push("init")

    def commit_push(self, message: str) -> None:
        git(["add", "-A"], self.user)
        git(["commit", "-q", "-m", message], self.user)
        git(["push", "-q", "origin", "HEAD:main"], self.user)

    def put_spec(self, name: str, text: str) -> None:
        (self.user / "specs").mkdir(exist_ok=True)
        (self.user / "specs" / f"{name}.yaml").write_text(text)
        self.commit_push(f"spec {name}")

    def pull(self) -> None:
        git(["pull", "-q", "--rebase", "origin", "main"], self.user)

    def remote_head(self) -> str:
        return git(["rev-parse", "main"], self.remote).strip()

    def remote_log(self) -> list[str]:
        return git(["log", "--format=%s", "main"], self.remote).splitlines()

    def reconcile(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return autotuner(
            "reconcile",
            "--repo",
            str(self.remote),
            "--state-dir",
            str(self.state),
            "-q",
            *extra,
            cwd=self.root,
            check=check,
            timeout=600,
        )

    def results(self, name: str) -> Path:
        return self.state / "results" / name

    def records(self, name: str) -> list[dict]:
        return [
            json.loads(p.read_text())
            for p in sorted((self.results(name) / "experiments").glob("[0-9]*.json"))
        ]

    def remote_file(self, path: str) -> str:
        return git(["show", f"main:{path}"], self.remote)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


def test_push_reconcile_commit_then_nothing(repo: Repo) -> None:
    repo.put_spec("alpha", sim_spec("alpha", strategy="grid", budget=3, parameters=SMALL))
    repo.reconcile()
    log = repo.remote_log()
    assert any("alpha: experiment 0001" in line for line in log)
    status = json.loads(repo.remote_file("results/alpha/status.json"))
    assert next(c for c in status["conditions"] if c["type"] == "Ready")["status"] == "True"
    assert status["counts"]["total"] == 3
    assert repo.remote_file("results/alpha/experiments/0003.json")
    assert "specs/alpha.yaml" not in git(["show", "--name-only", "--format=", "main"], repo.remote)
    head = repo.remote_head()
    # a second pass with nothing new: no experiment, no commit
    repo.reconcile()
    assert repo.remote_head() == head
    assert len(repo.records("alpha")) == 3


def test_edit_starts_new_generation_and_reuses_measured_configs(repo: Repo) -> None:
    repo.put_spec("beta", sim_spec("beta", strategy="grid", budget=3, parameters=SMALL))
    repo.reconcile()
    first = repo.records("beta")
    gen1 = first[0]["generation"]
    # a stricter SLO: the same configurations, re-scored, not re-run
    repo.pull()
    repo.put_spec(
        "beta",
        sim_spec("beta", strategy="grid", budget=3, parameters=SMALL).replace("max: 60000", "max: 900"),
    )
    repo.reconcile()
    recs = repo.records("beta")
    new = [r for r in recs if r["generation"] != gen1]
    assert len(new) == 3
    assert all(r["reusedFrom"] for r in new)
    assert {r["configHash"] for r in new} == {r["configHash"] for r in first}
    status = json.loads(repo.remote_file("results/beta/status.json"))
    assert status["observedGeneration"] == new[0]["generation"]


def test_invalid_spec_stalls_while_valid_one_runs(repo: Repo) -> None:
    (repo.user / "specs").mkdir()
    (repo.user / "specs" / "good.yaml").write_text(
        sim_spec("good", strategy="grid", budget=2, parameters=SMALL)
    )
    (repo.user / "specs" / "bad.yaml").write_text(
        sim_spec("bad", strategy="grid", budget=2, parameters="      max-num-seqz: {values: [4]}")
    )
    repo.commit_push("two specs")
    proc = repo.reconcile(check=False)
    assert proc.returncode == 1  # something needs the user's attention
    bad = json.loads(repo.remote_file("results/bad/status.json"))
    stalled = next(c for c in bad["conditions"] if c["type"] == "Stalled")
    assert stalled["status"] == "True"
    assert any("max-num-seqz" in p["path"] and "did you mean" in p["message"] for p in bad["problems"])
    assert bad["problems"][0]["line"] is not None
    good = json.loads(repo.remote_file("results/good/status.json"))
    assert good["counts"]["total"] == 2
    # not retried while unchanged: the next pass writes nothing
    head = repo.remote_head()
    repo.reconcile(check=False)
    assert repo.remote_head() == head


def test_user_push_during_commit_back_keeps_both_histories(repo: Repo) -> None:
    repo.put_spec("gamma", sim_spec("gamma", strategy="grid", budget=3, parameters=SMALL))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconciler",
            "reconcile",
            "--repo",
            str(repo.remote),
            "--state-dir",
            str(repo.state),
            "-q",
        ],
        cwd=repo.root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("gamma: experiment" in s for s in repo.remote_log()):
            time.sleep(0.2)
        # the user pushes while the daemon is still committing
        repo.pull()
        (repo.user / "NOTES.md").write_text("a user's change\n")
        repo.commit_push("user notes")
        user_commit = git(["rev-parse", "HEAD"], repo.user).strip()
    finally:
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    log = repo.remote_log()
    assert "user notes" in log
    assert git(["merge-base", "--is-ancestor", user_commit, "main"], repo.remote, check=False) == ""
    assert len([line for line in log if "gamma: experiment" in line]) >= 1
    assert len(repo.records("gamma")) == 3
    assert json.loads(repo.remote_file("results/gamma/status.json"))["counts"]["total"] == 3


def test_sigkill_of_the_daemon_then_restart_finishes_the_study(repo: Repo) -> None:
    repo.put_spec("delta", sim_spec("delta", strategy="tpe", budget=5))
    env = {**os.environ, "AUTOTUNER_INTERVAL": "1"}
    cmd = [
        sys.executable,
        "-m",
        "reconciler",
        "daemon",
        "--repo",
        str(repo.remote),
        "--state-dir",
        str(repo.state),
    ]
    with subprocess.Popen(
        cmd, cwd=repo.root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as proc:
        deadline = time.monotonic() + 120
        while (
            time.monotonic() < deadline
            and len(list((repo.results("delta") / "experiments").glob("[0-9]*.json"))) < 2
        ):
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert wait_no_engines(str(repo.root)) == []
    kept = {r["id"]: r["configHash"] for r in repo.records("delta")}
    assert len(kept) >= 2
    with subprocess.Popen(
        cmd, cwd=repo.root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                try:
                    status = json.loads(repo.remote_file("results/delta/status.json"))
                except Exception:
                    status = {}
                ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
                if ready and ready["status"] == "True" and status["counts"]["total"] == 5:
                    break
                time.sleep(0.5)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        assert proc.returncode == 0
    recs = repo.records("delta")
    assert [r["id"] for r in recs] == [f"{i:04d}" for i in range(1, 6)]
    assert len({r["configHash"] for r in recs}) == 5
    for rid, chash in kept.items():
        assert next(r for r in recs if r["id"] == rid)["configHash"] == chash
    assert wait_no_engines(str(repo.root)) == []


def test_results_branch_and_placement(repo: Repo) -> None:
    spec = sim_spec("eps", strategy="grid", budget=1, parameters="      max-num-seqs: {values: [8]}")
    spec = spec.replace("spec:\n", "spec:\n  placement: {matchLabels: {gpu: h100}}\n", 1)
    repo.put_spec("eps", spec)
    spec_head = repo.remote_head()
    # a host whose labels do not match leaves the spec alone
    other = autotuner(
        "reconcile",
        "--repo",
        str(repo.remote),
        "--state-dir",
        str(repo.root / "other"),
        "--labels",
        "gpu=a100",
        "--results-branch",
        "results",
        "-q",
        cwd=repo.root,
    )
    assert "eps: skipped" in other.stderr
    assert git(["branch", "--list", "results"], repo.remote).strip() == ""
    # the matching host runs it and pushes results to their own branch; the spec branch is untouched
    repo.reconcile("--labels", "gpu=h100,zone=a", "--results-branch", "results")
    assert repo.remote_head() == spec_head
    status = json.loads(git(["show", "results:results/eps/status.json"], repo.remote))
    assert status["counts"]["total"] == 1
