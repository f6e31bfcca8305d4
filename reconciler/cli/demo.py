"""``autotuner demo``: the whole product in one command, on any machine.

It makes a bare git "remote" and a user clone with the quickstart spec (the sim engine), pushes
the spec, runs one full reconcile pass exactly as the daemon would (studies, commit-back, push),
builds the report site, and prints where everything is. Running it again resumes or, when the
study is done, does nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path

from reconciler.cli.daemon import add_policy

DEMO_SPECS = {"sim": "quickstart-sim.yaml", "llamacpp": "llamacpp-demo.yaml"}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "demo",
        help="run a complete tuning study on the sim engine and build its report site",
        description="Create a specs repository with an example spec, run one full reconcile (a real study "
        "on the simulated engine: no GPU needed), commit the results, and build the report site.",
    )
    p.add_argument(
        "--out", default="autotuner-demo", metavar="DIR", help="where to put it (default ./autotuner-demo)"
    )
    p.add_argument(
        "--engine",
        choices=sorted(DEMO_SPECS),
        default="sim",
        help="sim (default) or llamacpp (needs autotuner[llamacpp]; builds a tiny GGUF model)",
    )
    add_policy(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    return p


def _prepare(out: Path, engine: str) -> tuple[Path, Path]:
    from reconciler.git import git

    remote = out / "remote.git"
    user = out / "specs-repo"
    if not remote.exists():
        remote.mkdir(parents=True)
        git(["init", "-q", "--bare", "-b", "main"], remote)
    if not user.exists():
        git(["clone", "-q", str(remote), str(user)], out)
        (user / "specs").mkdir()
        text = resources.files("specs").joinpath("examples", DEMO_SPECS[engine]).read_text()
        if engine == "llamacpp":
            from backends.engines.llamacpp_model import write_tiny_gguf

            model = write_tiny_gguf(user / "models" / "tiny-llama.gguf")
            text = text.replace("./models/tiny-llama.gguf", str(model.relative_to(user)))
        (user / "specs" / DEMO_SPECS[engine]).write_text(text)
        (user / "README.md").write_text("# autotuner demo specs\n\nPush a spec to specs/ and reconcile.\n")
        git(["add", "-A"], user)
        git(["commit", "-q", "-m", "Add the demo spec"], user)
        git(["push", "-q", "origin", "HEAD:main"], user)
    return remote, user


def run(args: argparse.Namespace) -> int:
    from reconciler.cli._common import fail
    from reconciler.cli._progress import ProgressPrinter
    from reconciler.reconcile import Reconciler
    from reconciler.session import open_session
    from reconciler.site import rebuild_site
    from reconciler.workspace import Workspace
    from specs.errors import AutotunerError

    out = Path(args.out).resolve()
    started = time.monotonic()
    try:
        # before anything is created: a demo without its engine would only record failures
        from backends.engines import get_engine

        problem = get_engine(args.engine).local_problem()
        if problem is not None:
            raise problem
        from reconciler.cli.daemon import load_policy_arg

        policy = load_policy_arg(args.policy)
        remote, user = _prepare(out, args.engine)
        state, site = out / "state", out / "site"
        print(f"demo: spec repository {user} (remote {remote})", file=sys.stderr)
        with open_session(state, policy=policy) as session:
            ws = Workspace(str(remote), state, branch="main")
            rec = Reconciler(
                ws,
                session,
                site_dir=site,
                site_title="autotuner demo",
                max_parallel=1,
                progress_factory=None if args.quiet else (lambda loaded: ProgressPrinter(loaded.spec)),
            )
            try:
                report = rec.reconcile(wait=True)
            except KeyboardInterrupt:
                rec.stop_all()
                rec.flush()
                print("interrupted; run the same command again to resume", file=sys.stderr)
                return 130
            finally:
                ws.close()
        rebuild_site(ws.results_dir, site, title="autotuner demo")  # also when nothing changed
    except AutotunerError as exc:
        return fail(exc.message, exc.hint)
    except ValueError as exc:  # ConfigError: an invalid --policy
        return fail(str(exc))
    from reconciler.git import git

    git(["pull", "-q", "--ff-only", "origin", "main"], user, check=False)
    elapsed = time.monotonic() - started
    name = next(iter(report.actions), "")
    if report.experiments or report.commits:
        pushed = f", {report.commits} commit(s) pushed to {remote}" if report.pushed else ""
        unpushed = ", committed but NOT pushed (see the log)" if report.commits and not report.pushed else ""
        print(f"\nran {report.experiments} experiment(s){pushed}{unpushed}", file=sys.stderr)
    elif report.actions and all(a == "done" for a in report.actions.values()):
        print(
            f"\nnothing to do: the demo study in {out} is complete (remove that folder to start over)",
            file=sys.stderr,
        )
    else:
        states = ", ".join(f"{n}: {a}" for n, a in sorted(report.actions.items()))
        print(f"\nno experiment ran ({states}); see the messages above", file=sys.stderr)
    print(f"done in {elapsed:.0f}s", file=sys.stderr)
    print(f"  results (committed and pushed): {user / 'results' / name}  (git -C {user} log --oneline)")
    print(f"  best configuration:             {user / 'results' / name / 'best' / 'command.sh'}")
    print(f"  report site:                    {site / 'index.html'}")
    print(f"  serve it with:                  python -m http.server -d {site} 8080")
    return 0 if all(a == "done" for a in report.actions.values()) else 1
