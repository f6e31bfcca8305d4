"""``autotuner export RESULTS --format csv|json``: every experiment as one table."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export",
        help="all experiments as one CSV or JSON table",
        description="Flatten every experiment record under RESULTS into one table: identity, parameters "
        "(param.*), the metrics at the summary load point, objectives, failure and timing.",
    )
    p.add_argument("results", metavar="RESULTS", help="results folder (results/ of a specs repository)")
    p.add_argument("--format", choices=["csv", "json"], default="csv")
    p.add_argument("--spec", action="append", metavar="NAME", help="only this spec (repeatable)")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    return p


def run(args: argparse.Namespace) -> int:
    from reconciler.cli._common import fail
    from reconciler.table import load_all, rows

    results = Path(args.results)
    if not results.is_dir():
        return fail(f"{results} is not a folder", "pass the results/ folder of a specs repository")
    data = load_all(results, args.spec)
    if args.spec:
        missing = sorted(set(args.spec) - set(data))
        if missing:
            return fail(f"no results for spec(s): {', '.join(missing)}")
    columns, table = rows(data)
    out = open(args.output, "w", newline="") if args.output else sys.stdout  # noqa: SIM115
    try:
        if args.format == "json":
            json.dump([{c: row.get(c) for c in columns} for row in table], out, indent=2, default=str)
            out.write("\n")
        else:
            writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for row in table:
                writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in columns})
    finally:
        if out is not sys.stdout:
            out.close()
    if args.output:
        print(
            f"{len(table)} experiment(s) from {len(data)} spec(s) written to {args.output}", file=sys.stderr
        )
    return 0
