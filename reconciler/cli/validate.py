"""``autotuner validate PATH...``: every problem of every spec, as ``file:line: field: message``."""

from __future__ import annotations

import argparse
import sys

from reconciler.cli._common import print_json, print_problems
from specs.errors import SpecError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "validate",
        help="validate spec files or folders",
        description="Validate TuningSpec files (folders are searched for *.yaml / *.yml). "
        "Exit 0 when all are valid, 1 otherwise; every error is printed as file:line: field: message.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="spec file or folder")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    p.add_argument(
        "--policy",
        default=None,
        metavar="FILE",
        help="also check the specs against this operator policy, as the daemon would (docs/security.md)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from backends.validation import startup_warnings
    from reconciler.checking import check_paths
    from reconciler.cli._common import fail
    from reconciler.cli.daemon import ConfigError, load_policy_arg

    try:
        policy = load_policy_arg(args.policy) if args.policy else None
    except ConfigError as exc:
        return fail(str(exc))
    results = check_paths(args.paths, policy=policy)
    if not results:
        print(f"error: no spec files (*.yaml, *.yml) found in {' '.join(args.paths)}", file=sys.stderr)
        return 1
    invalid = [(p, r) for p, r in results if isinstance(r, SpecError)]
    if args.json:
        print_json(
            {
                "valid": not invalid,
                "files": [
                    {
                        "file": str(p),
                        "valid": not isinstance(r, SpecError),
                        "name": None if isinstance(r, SpecError) else r.name,
                        "problems": [x.to_dict() for x in r.problems] if isinstance(r, SpecError) else [],
                    }
                    for p, r in results
                ],
            }
        )
        return 1 if invalid else 0
    for path, result in results:
        if isinstance(result, SpecError):
            print_problems(result.problems)
            continue
        if not args.quiet:
            print(f"{path}: ok ({result.name}, generation {result.spec.generation()})")
        for warning in startup_warnings(result):
            print(f"warning: {warning}", file=sys.stderr)
    if not args.quiet or invalid:
        n = sum(len(r.problems) for _, r in invalid)
        summary = f"{len(results)} file(s): {len(results) - len(invalid)} valid, {len(invalid)} invalid"
        print(summary + (f" ({n} problem(s))" if n else ""), file=sys.stderr if invalid else sys.stdout)
    return 1 if invalid else 0
