"""``autotuner report RESULTS_DIR --out SITE_DIR``: rebuild the static site from results alone.

The same builder runs after every change in ``run``, ``reconcile`` and the daemon; this command
exists for a results folder copied off a GPU host (or checked out of the results repository) and
for rebuilding after an upgrade. Only pages whose inputs changed are written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from reconciler.cli._common import fail, print_json


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report",
        help="build the static report site from a results folder",
        description="Build (or update) the static HTML report from RESULTS_DIR (one sub-folder per spec). "
        "Only pages whose inputs changed are rewritten. The site works offline and from any static "
        "file server.",
    )
    p.add_argument(
        "results",
        metavar="RESULTS_DIR",
        type=Path,
        help="the results folder (results/ of the specs repository)",
    )
    p.add_argument(
        "--out", required=True, type=Path, metavar="SITE_DIR", help="folder to write the site into"
    )
    p.add_argument("--title", help="site title (default: %(default)s)", default=None)
    p.add_argument("--json", action="store_true", help="print what was built as JSON")
    return p


def run(args: argparse.Namespace) -> int:
    from reports import build_site
    from specs.errors import UserError

    try:
        result = build_site(args.results, args.out, title=args.title)
    except UserError as exc:
        return fail(exc.message, exc.hint)
    except OSError as exc:
        return fail(
            f"could not write the site: {exc}", "check that SITE_DIR is writable and the disk is not full"
        )
    if args.json:
        print_json(
            {
                "index": str(result.index),
                "written": result.written,
                "skipped": result.skipped,
                "removed": result.removed,
                "specs": result.specs,
                "experiments": result.experiments,
                "seconds": round(result.seconds, 3),
            }
        )
    else:
        print(f"site: {result}")
        print(f"open {result.index.resolve().as_uri()}")
    return 0
