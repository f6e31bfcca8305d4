"""``autotuner reconcile --repo ...``: one reconcile pass, then exit."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

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
    from reconciler.cli.daemon import check_branches
    from reconciler.reconcile import Reconciler
    from reconciler.session import open_session
    from reconciler.workspace import Workspace
    from specs.errors import TransientError

    if not args.repo:
        return fail("no repository: give --repo PATH_OR_URL or set AUTOTUNER_REPO")
    problem = check_branches(args)
    if problem:
        return fail(problem)
    state = Path(args.state_dir).absolute()
    try:
        policy = load_policy_arg(args.policy)
    except ConfigError as exc:
        return fail(str(exc))
    try:
        with open_session(state, fake_gpus=args.fake_gpus, policy=policy) as session:
            ws = Workspace(
                args.repo,
                state,
                branch=args.branch,
                results_branch=args.results_branch,
                push=not args.no_push,
            )
            rec = Reconciler(
                ws,
                session,
                labels=parse_labels(args.labels),
                site_dir=Path(args.site_dir).absolute() if args.site_dir else None,
                site_branch=args.site_branch,
                max_parallel=args.max_parallel,
                progress_factory=None if args.quiet else (lambda loaded: ProgressPrinter(loaded.spec)),
            )
            try:
                report = rec.reconcile(wait=True)
                rec.refresh_site()
            except KeyboardInterrupt:
                rec.stop_all()
                rec.flush()
                return 130
            finally:
                ws.close()
    except TransientError as exc:
        return fail(str(exc), exc.hint)
    for name, action in sorted(report.actions.items()):
        print(f"{name}: {action}", file=sys.stderr)
    print(summary_line(report, ws, rec), file=sys.stderr)
    return 1 if any(a in ("stalled", "backoff") for a in report.actions.values()) else 0


def summary_line(report: Any, ws: Any, rec: Any) -> str:
    """What the pass did, truthfully: experiments run, commits made, where they went."""
    from reconciler.git import mask

    rev = f"revision {report.revision[:12]} of {ws.spec_branch}"
    if not report.experiments and not report.commits:
        return f"{rev}: nothing new (no experiment run, nothing to commit)"
    parts = [f"{report.experiments} experiment(s) run"]
    if report.commits:
        where = (
            f"pushed to {mask(ws.repo)} branch {ws.target}"
            if report.pushed
            else f"committed locally in {ws.clone_dir} (branch {ws.target}, not pushed)"
        )
        parts.append(f"{report.commits} commit(s) {where}")
    else:
        parts.append("nothing committed")
    if rec.tally.commit_failures:
        parts.append(f"{rec.tally.commit_failures} commit-back failure(s), see the log")
    return f"{rev}: " + ", ".join(parts)
