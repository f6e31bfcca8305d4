"""``autotuner run SPEC``: one spec's study in the foreground, resumable after any kill."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from reconciler.cli.daemon import add_policy


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "run",
        help="run one spec's study in the foreground",
        description="Run the study of SPEC to completion, writing results/<name>/. Safe to kill at any "
        "moment: running it again resumes where it stopped, re-running at most the experiments in flight.",
    )
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--results", default="results", metavar="DIR", help="results folder (default ./results)")
    p.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help="engine logs, pid files, dataset cache (default DIR/.autotuner-state next to --results)",
    )
    p.add_argument("--site", default=None, metavar="DIR", help="also build the report site into DIR")
    p.add_argument(
        "--fake-gpus",
        default=os.environ.get("AUTOTUNER_FAKE_GPUS"),
        metavar="INVENTORY",
        help="pretend these GPUs exist, e.g. 4xH100 (for testing scheduling without GPUs)",
    )
    add_policy(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    return p


def spec_base_dir(spec: Path) -> Path:
    """Relative paths in a spec (datasets, a GGUF model) resolve against the root of the specs
    repository holding it, as they do under the daemon; outside a repository, against the
    spec's folder."""
    from reconciler.git import GitError, git

    folder = spec.resolve().parent
    try:
        return Path(git(["rev-parse", "--show-toplevel"], folder).strip())
    except GitError:
        return folder


def run(args: argparse.Namespace) -> int:
    from reconciler.checking import load_checked
    from reconciler.cli._common import fail, print_problems
    from reconciler.cli._progress import ProgressPrinter
    from reconciler.cli.daemon import ConfigError, load_policy_arg
    from reconciler.session import open_session
    from specs.errors import SpecError, UserError

    try:
        policy = load_policy_arg(args.policy)
    except ConfigError as exc:
        return fail(str(exc))
    base_dir = spec_base_dir(Path(args.spec))
    try:
        loaded = load_checked(args.spec, policy=policy, checkout=base_dir)
    except SpecError as exc:
        print_problems(exc.problems)
        return 1
    results = Path(args.results)
    state_dir = Path(args.state_dir) if args.state_dir else results.parent / ".autotuner-state"
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        print(
            f"\n{signal.Signals(signum).name}: stopping after tearing down running engines (again to abort)",
            file=sys.stderr,
        )
        stop.set()

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    printer = ProgressPrinter(loaded.spec, quiet=args.quiet)
    try:
        with open_session(state_dir, fake_gpus=args.fake_gpus, policy=policy) as session:
            outcome = session.run(
                loaded,
                results,
                base_dir=base_dir,
                progress=printer,
                stop=stop,
                site_dir=Path(args.site) if args.site else None,
            )
    except UserError as exc:
        return fail(exc.message, exc.hint)
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
    if outcome is None:
        print(f"{loaded.name} is suspended (spec.suspend: true); nothing to run", file=sys.stderr)
        return 0
    where = results / loaded.name
    if outcome.interrupted:
        print(f"interrupted; results so far in {where}; run the same command to resume", file=sys.stderr)
        return 130
    line = f"done: {outcome.completed} complete, {outcome.failed} failed"
    if outcome.pruned:
        line += f", {outcome.pruned} pruned"
    if outcome.reused:
        line += f", {outcome.reused} reused"
    print(line + f"; results in {where}", file=sys.stderr)
    if outcome.best is not None:
        print(
            f"best: experiment {outcome.best.id}; deployable artifacts in {where / 'best'}", file=sys.stderr
        )
    else:
        print("no configuration met every hard SLO", file=sys.stderr)
    return 0 if outcome.completed else 1
