"""``autotuner`` command line (docs/architecture.md section 2).

Each subcommand is a module of this package with ``add_parser(subparsers)`` and
``run(args) -> int``; this file only wires them. Subcommand modules import their heavy
dependencies inside ``run`` so that ``autotuner --help`` stays fast and one command's missing
optional dependency never breaks another. Exit codes: 0 ok, 1 the input or the work
failed, 2 usage error (argparse).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from reconciler import __version__

#: subcommand modules, in help order; a module missing here is simply not offered yet
COMMANDS = (
    "demo",
    "init",
    "validate",
    "plan",
    "run",
    "reconcile",
    "daemon",
    "report",
    "status",
    "export",
    "bench",
    "engine",
    "schema",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotuner",
        description="Declarative, GitOps-style tuning of LLM inference servers.",
    )
    parser.add_argument("--version", action="version", version=f"autotuner {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"reconciler.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"reconciler.cli.{name}":
                continue
            raise
        p = module.add_parser(sub)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
