"""``autotuner init DIR``: scaffold a specs repository (git init, an example spec, a README)."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from reconciler.cli._common import fail
from reconciler.git import GitError, git

README = """# Tuning specs

Each file in `specs/` is a TuningSpec (see `autotuner schema`). Push a spec and the autotuner
daemon that watches this repository runs its study, then commits the results to `results/<name>/`.

    autotuner validate specs/          # check every spec, with located errors
    autotuner plan specs/example.yaml  # what it would run, without running it
    autotuner run specs/example.yaml   # run one study here, in the foreground

The daemon writes only `results/` (and the report site, if configured); it never edits `specs/`.
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "init",
        help="scaffold a specs repository",
        description="Create DIR as a git repository with specs/example.yaml (the sim quickstart) "
        "and a README.",
    )
    p.add_argument("dir", metavar="DIR")
    return p


def run(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    if (root / "specs").exists() or (root / ".git").exists():
        return fail(f"{root} already holds a repository (specs/ or .git exists); nothing changed")
    example = resources.files("specs").joinpath("examples", "quickstart-sim.yaml").read_text()
    (root / "specs").mkdir(parents=True)
    (root / "specs" / "example.yaml").write_text(example.replace("name: quickstart-sim", "name: example"))
    (root / "README.md").write_text(README)
    (root / ".gitignore").write_text("/site/\n")
    try:
        git(["init", "-q", "-b", "main"], root)
        git(["add", "-A"], root)
        git(["commit", "-q", "-m", "Scaffold a tuning specs repository"], root)
    except GitError as exc:
        return fail(str(exc))
    print(f"created {root}: specs/example.yaml, README.md (git repository, branch main)")
    print(f"next: autotuner validate {root}/specs && autotuner run {root}/specs/example.yaml")
    return 0
