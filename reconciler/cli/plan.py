"""``autotuner plan SPEC``: search-space size, GPUs per experiment, first command lines, time."""

from __future__ import annotations

import argparse
import math
import sys

from reconciler.cli._common import print_json, print_problems
from specs.durations import format_duration
from specs.errors import SpecError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "plan",
        help="dry run: search space, command lines, GPUs, time estimate",
        description="Show what a spec would run, without running anything: the size of the search space, "
        "GPUs per experiment, the first engine command lines in full, and a rough time estimate; for a "
        "kubernetes spec also the manifests of its first experiment.",
    )
    p.add_argument("spec", metavar="SPEC", help="spec file")
    p.add_argument("-n", "--count", type=int, default=3, help="command lines to show (default 3)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def run(args: argparse.Namespace) -> int:
    from reconciler.checking import load_checked
    from reconciler.planning import build_plan

    try:
        loaded = load_checked(args.spec)
    except SpecError as exc:
        print_problems(exc.problems)
        return 1
    plan = build_plan(loaded, count=max(args.count, 0))
    if args.json:
        print_json(plan.to_dict())
        return 0
    out = sys.stdout
    print(f"spec {plan.name} (generation {plan.generation})", file=out)
    print(
        f"  engine {plan.engine} (flag table from {plan.engine} {plan.flag_table_version}), "
        f"backend {plan.backend}"
    )
    print(f"  strategy {plan.strategy}, {plan.experiments} experiment(s), {plan.parallelism} at a time")
    print("search space:")
    for a in plan.axes:
        if a["size"] is not None:
            print(f"  {a['name']}: {a['size']} value(s) {list(a['values'])}")
        else:
            print(f"  {a['name']}: continuous range [{a['low']}, {a['high']}]{' (log)' if a['log'] else ''}")
    size = "continuous (infinite)" if math.isinf(plan.raw_size) else f"{int(plan.raw_size)} combination(s)"
    print(
        f"  size: {size}"
        + (f", {plan.feasible} satisfy the constraints" if plan.feasible is not None else "")
    )
    print(f"GPUs per experiment: {', '.join(map(str, plan.gpus_per_experiment)) or '0'}")
    print(f"first {len(plan.commands)} command line(s):")
    for i, cmd in enumerate(plan.commands, 1):
        config = ", ".join(f"{k}={v}" for k, v in cmd.config.items()) or "engine defaults"
        print(f"  [{i}] {config}  ({cmd.gpus} GPU)")
        print(f"      {cmd.shell}")
        if cmd.docker is not None:
            print(f"      in a container: {cmd.docker}")
    if plan.excluded:
        print(f"excluded by start-up rules or the memory pre-check (never run): {plan.excluded}")
        for ex in plan.excluded_examples:
            config = ", ".join(f"{k}={v}" for k, v in ex["config"].items())
            print(f"  - {config}: {ex['reason']}")
    print(
        f"time estimate: ~{format_duration(plan.seconds_per_experiment)} per experiment, "
        f"~{format_duration(plan.seconds_total)} in total"
    )
    for note in plan.assumptions:
        print(f"  assumes {note}")
    if plan.manifests:
        import yaml

        print(
            "kubernetes manifests of the first experiment (the daemon adds its owner reference, its "
            "daemon labels and a free port):"
        )
        print(yaml.safe_dump_all(plan.manifests, sort_keys=False), end="")
    return 0
