"""Small helpers shared by the subcommands: printing problems, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any

from specs.errors import SpecProblem


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def print_problems(problems: list[SpecProblem]) -> None:
    for p in problems:
        print(str(p), file=sys.stderr)


def fail(message: str, hint: str | None = None) -> int:
    print(f"error: {message}", file=sys.stderr)
    if hint:
        print(f"  hint: {hint}", file=sys.stderr)
    return 1
