"""A hostile specs repository on real git, and the checks every security test makes.

:class:`HostileRepo` is a bare remote, the attacker's clone (they may push anything: specs,
symlinks, files under ``results/``), a decoy folder outside every folder of the daemon, and the
daemon's state and site folders. :meth:`HostileRepo.reconcile` runs ``autotuner reconcile`` as a
real process whose environment holds planted secrets (:data:`SECRETS`). After the passes,
:meth:`HostileRepo.assert_contained` checks the invariants of docs/security.md:

* no planted secret in any commit of the whole history (``git log -p --all`` on the remote and on
  the daemon's clone), in the daemon's output (its log), or in any file of its state or site;
* the decoy folder is byte for byte what it was (a checksum of names, modes, contents and
  symlink targets).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from reconciler.git import git
from tests.e2e.helpers import autotuner, sim_spec

#: secrets in the daemon's environment that no spec may ever reach
SECRETS = {
    "AUTOTUNER_GIT_TOKEN": "ghp_PLANTEDgitTOKEN0123456789abcdef",
    "HF_TOKEN": "hf_PLANTEDhfTOKEN9876543210zyxw",
    "AWS_SECRET_ACCESS_KEY": "PLANTEDawsSECRETkey5555aaaa",
    "DATABASE_PASSWORD": "PLANTEDdbPASSWORD4242",
}

#: one cheap sim study: a single grid point, measured quickly
QUICK = "      max-num-seqs: {values: [8]}"


def good_spec(name: str = "good") -> str:
    return sim_spec(name, strategy="grid", budget=1, parameters=QUICK)


def tree_digest(root: Path) -> str:
    """Names, modes, contents and symlink targets of everything under ``root``."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            st = path.lstat()
            h.update(f"{path.relative_to(root)}\0{st.st_mode:o}\0".encode())
            if path.is_symlink():
                h.update(os.readlink(path).encode())
            elif path.is_file():
                h.update(path.read_bytes())
    return h.hexdigest()


class HostileRepo:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.remote = root / "remote.git"
        self.user = root / "attacker"
        self.state = root / "state"
        self.site = root / "site"
        self.decoy = root / "decoy"
        self.outputs: list[str] = []
        self.remote.mkdir()
        git(["init", "-q", "--bare", "-b", "main"], self.remote)
        git(["clone", "-q", str(self.remote), str(self.user)], root)
        git(["config", "user.name", "attacker"], self.user)
        git(["config", "user.email", "attacker@example.com"], self.user)
        (self.user / "README.md").write_text("specs\n")
        self.commit_push("init")
        self._make_decoy()
        self.decoy_digest = tree_digest(self.decoy)

    def _make_decoy(self) -> None:
        (self.decoy / "dir").mkdir(parents=True)
        (self.decoy / "precious.txt").write_text("the host's own file\n")
        (self.decoy / "dir" / "keep.json").write_text('{"keep": true}\n')
        (self.decoy / "journal").write_text("not an optuna journal\n")

    # ------------------------------------------------------------------ the attacker's side

    def write(self, rel: str, content: str | bytes) -> Path:
        path = self.user / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def symlink(self, rel: str, target: str | Path) -> None:
        path = self.user / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        path.symlink_to(target)

    def commit_push(self, message: str) -> None:
        git(["add", "-A"], self.user)
        git(["commit", "-q", "-m", message], self.user)
        git(["push", "-q", "origin", "HEAD:main"], self.user)

    def pull(self) -> None:
        git(["pull", "-q", "--rebase", "origin", "main"], self.user)

    # ------------------------------------------------------------------ the daemon's side

    def reconcile(self, *extra: str, state: Path | None = None) -> subprocess.CompletedProcess[str]:
        proc = autotuner(
            "reconcile",
            "--repo",
            str(self.remote),
            "--state-dir",
            str(state or self.state),
            "--site-dir",
            str(self.site),
            "-q",
            *extra,
            cwd=self.root,
            env=SECRETS,
            check=False,
            timeout=600,
        )
        self.outputs += [proc.stdout, proc.stderr]
        assert proc.returncode in (0, 1), f"reconcile crashed ({proc.returncode}):\n{proc.stderr[-4000:]}"
        assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
        return proc

    def report(self, results: Path) -> subprocess.CompletedProcess[str]:
        proc = autotuner(
            "report", str(results), "--out", str(self.site), cwd=self.root, env=SECRETS, check=False
        )
        self.outputs += [proc.stdout, proc.stderr]
        return proc

    def remote_file(self, path: str) -> str:
        return git(["show", f"main:{path}"], self.remote)

    def status(self, name: str) -> dict[str, Any]:
        return json.loads(self.remote_file(f"results/{name}/status.json"))

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        return next(c for c in self.status(name)["conditions"] if c["type"] == kind)

    def remote_tree(self, prefix: str = "results") -> dict[str, str]:
        """path -> git mode of every entry under ``prefix`` at the remote's head."""
        out = git(["ls-tree", "-r", "-z", "main", "--", prefix], self.remote)
        entries = {}
        for item in out.split("\0"):
            if item:
                meta, path = item.split("\t", 1)
                entries[path] = meta.split()[0]
        return entries

    # ------------------------------------------------------------------ the invariants

    def assert_ready(self, name: str) -> None:
        ready = self.condition(name, "Ready")
        assert ready["status"] == "True", f"{name} did not finish: {self.status(name)['conditions']}"

    def assert_contained(self) -> None:
        history = git(["log", "-p", "--all", "--binary"], self.remote)
        clone = self.state / "repo"
        if (clone / ".git").is_dir():
            history += git(["log", "-p", "--all", "--binary"], clone)
        for name, value in SECRETS.items():
            assert value not in history, f"{name} is in the git history"
            for text in self.outputs:
                assert value not in text, f"{name} is in the daemon's output"
            for folder in (self.state, self.site):
                for path in _files(folder):
                    assert value.encode() not in path.read_bytes(), f"{name} is in {path}"
        assert tree_digest(self.decoy) == self.decoy_digest, "a file outside the daemon's folders changed"


def _files(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        # git objects are compressed: the history check above reads them through git
        dirnames[:] = [d for d in dirnames if d != "objects"]
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                out.append(path)
    return out
