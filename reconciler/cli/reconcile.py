"""``autotuner reconcile --repo ...``: one reconcile pass, then exit."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reconciler.cli.daemon import ConfigError, add_common, load_policy_arg, parse_labels


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "reconcile",
        help="one reconcile pass over a repo, then exit",
        description="Fetch the repository, bring every spec one pass toward done (running its studies to "
        "completion), commit and push the results, and exit. Running it again with nothing new does nothing.",
    )
    add_common(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    return p


def run(args: argparse.Namespace) -> int:
    from reconciler.cli._common import fail
    from reconciler.cli._progress import ProgressPrinter
    from reconciler.reconcile import Reconciler
    from reconciler.session import open_session
    from reconciler.workspace import Workspace
    from specs.errors import TransientError

    if not args.repo:
        return fail("no repository: give --repo PATH_OR_URL or set AUTOTUNER_REPO")
    state = Path(args.state_dir)
    try:
        policy = load_policy_arg(args.policy)
    except ConfigError as exc:
        return fail(str(exc))
    try:
        with open_session(state, fake_gpus=args.fake_gpus, policy=policy) as session:
            ws = Workspace(
                args.repo,
                state / "repo",
                branch=args.branch,
                results_branch=args.results_branch,
                push=not args.no_push,
            )
            rec = Reconciler(
                ws,
                session,
                labels=parse_labels(args.labels),
                site_dir=Path(args.site_dir) if args.site_dir else None,
                max_parallel=args.max_parallel,
                progress_factory=None if args.quiet else (lambda loaded: ProgressPrinter(loaded.spec)),
            )
            try:
                report = rec.reconcile(wait=True)
            except KeyboardInterrupt:
                rec.stop_all()
                rec.flush()
                return 130
    except TransientError as exc:
        return fail(str(exc))
    for name, action in sorted(report.actions.items()):
        print(f"{name}: {action}", file=sys.stderr)
    print(
        f"revision {report.revision[:12]}: "
        + ("committed results" if report.committed else "nothing to commit"),
        file=sys.stderr,
    )
    return 1 if any(a == "stalled" for a in report.actions.values()) else 0
