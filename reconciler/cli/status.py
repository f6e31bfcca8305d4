"""``autotuner status``: each spec's conditions, progress and best result.

Exit status: 0 when every spec is fine, 3 when any is ``Stalled`` (its spec needs a fix) or
``Degraded`` (something fails and is retried: a crashed study, a backoff, a failing commit-back),
so that scripts and monitoring can alert on it; 1 when the results cannot be read.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "status",
        help="each spec's conditions, progress and best result",
        description="Read results/*/status.json of a specs repository (a working tree, a bare repository "
        "or a URL) or of a results folder, and show one line per spec.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--repo", metavar="PATH_OR_URL", help="specs repository (default: the current folder)")
    src.add_argument("--results", metavar="DIR", help="a results folder")
    src.add_argument(
        "--state-dir",
        metavar="DIR",
        help="a daemon's state directory: its live results, including what is not committed yet",
    )
    p.add_argument(
        "--branch", default=None, help="branch holding the results of a bare/remote repo (default: its HEAD)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _summary(name: str, status: Any, records: list[Any]) -> dict[str, Any]:
    conds = {c.type: c for c in status.conditions} if status else {}
    if status is None:
        state = "Unknown"
    elif conds.get("Stalled") and conds["Stalled"].status == "True":
        state = "Stalled"
    elif conds.get("Degraded") and conds["Degraded"].status == "True":
        state = "Degraded"
    elif conds.get("Ready") and conds["Ready"].status == "True":
        state = "Ready"
    elif conds.get("Reconciling") and conds["Reconciling"].status == "True":
        state = "Reconciling"
    else:
        state = conds["Ready"].reason if conds.get("Ready") else "Unknown"
    best = status.best[0] if status and status.best else None
    objective = status.objectives[0]["metric"] if status and status.objectives else None
    return {
        "spec": name,
        "state": state,
        "reason": conds["Ready"].reason if conds.get("Ready") else None,
        "message": next(
            (
                conds[k].message
                for k in ("Stalled", "Degraded", "Reconciling", "Ready")
                if k in conds and conds[k].message
            ),
            "",
        ),
        "nextRetry": conds["Degraded"].next_retry_time if conds.get("Degraded") else None,
        "generation": status.observed_generation if status else None,
        "done": (status.counts.get("complete", 0) + status.counts.get("failed", 0)) if status else 0,
        "max": status.max_experiments if status else None,
        "failed": status.counts.get("failed", 0) if status else 0,
        "best": best,
        "objective": objective,
        "updated": status.updated_at if status else None,
        "problems": status.problems if status else [],
    }


def run(args: argparse.Namespace) -> int:
    from reconciler.cli._common import fail, print_json
    from reconciler.git import GitError, git
    from reconciler.table import load_all

    with tempfile.TemporaryDirectory(prefix="autotuner-status-") as tmp:
        if args.results:
            results = Path(args.results)
        elif args.state_dir:
            results = Path(args.state_dir) / "results"
        else:
            repo = args.repo or "."
            if Path(repo).is_dir() and (Path(repo) / "results").is_dir():
                results = Path(repo) / "results"
            else:
                try:
                    branch = ["--branch", args.branch] if args.branch else []
                    clone = ["clone", "-q", "--depth", "1", *branch, repo, tmp + "/r"]
                    git(clone, tmp, timeout=120)
                except GitError as exc:
                    return fail(str(exc), "give --results DIR, or --repo with a specs repository")
                results = Path(tmp) / "r" / "results"
        data = load_all(results)
        summaries = [_summary(name, st, recs) for name, (st, recs) in data.items()]
    trouble = 3 if any(s["state"] in ("Stalled", "Degraded") for s in summaries) else 0
    if args.json:
        print_json(summaries)
        return trouble
    if not summaries:
        print(f"no results yet in {results}", file=sys.stderr)
        return 0
    print(f"{'SPEC':<28} {'STATE':<12} {'PROGRESS':<10} {'BEST':<36} UPDATED")
    for s in summaries:
        progress = f"{s['done']}/{s['max']}" if s["max"] else "-"
        best = "-"
        if s["best"] and s["objective"]:
            value = s["best"]["objectives"].get(s["objective"])
            best = f"#{s['best']['experiment']} {s['objective']}={value:.4g}" if value is not None else "-"
        print(f"{s['spec']:<28} {s['state']:<12} {progress:<10} {best:<36} {s['updated'] or '-'}")
        if s["state"] == "Stalled":
            for p in s["problems"][:3]:
                print(f"    {p['file']}:{p['line']}: {p['path']}: {p['message']}")
            if not s["problems"] and s["message"]:
                print(f"    {s['message']}")
        elif s["state"] == "Degraded":
            retry = f" (next retry {s['nextRetry']})" if s["nextRetry"] else ""
            print(f"    {s['message']}{retry}")
    return trouble
