"""The replay engine: experiments answered from a table of configurations measured before.

``engine: {name: replay, args: {table: PATH}}`` runs a study against recorded data, at no GPU
cost and at full speed, so that search strategies can be compared on the same measurements
("would TPE have found my grid study's winner sooner?"), and so that the project's own search
benchmark (``benchmarks/search``) runs the real :class:`~reconciler.study.Study`.

Table format (CSV, one row per configuration and load level; docs/engines.md has the reference):

* parameter columns named exactly as the spec's search axes (``search.parameters`` keys,
  ``quant.<field>``, ``parallel.<field>``); values ``true``/``false``, integers, floats, text;
* a load column, ``concurrency`` or ``request_rate``, whose values must include the spec's levels;
* ``state``: ``COMPLETE`` or ``FAILED``; a FAILED configuration needs one row, load left empty;
  optional ``failure_kind`` (default ``startup_crash``) and ``failure_reason``;
* metric columns with the names of docs/metrics.md (``ttft_p90_ms``, ``output_throughput``, ...);
* optional ``default``: ``true`` on the rows of the engine's default configuration, which is what
  the baseline experiment gets;
* any other column is ignored, so a table exported with extra columns still loads.

A results folder of an earlier study (``results/<name>`` or its ``experiments/``) is read as a
table too: each record's configuration, load points, state and failure become rows, its
baseline becomes the default.

Why the engine mapping holds no table: validation (:meth:`ReplayEngine.check`) sees only the
spec, and a spec must not make the validator read host files. The table is read where a study
starts (``reconciler.runspec``), relative to the spec repository, and the spec's axes and load
levels are checked against it there, located at the spec's lines (:func:`check_against`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from backends.engines.base import FlagTable, LaunchPlan
from backends.engines.replay_table import ReplayTable, show
from specs.errors import Rejection, SpecProblem, UserError
from specs.loader import LoadedSpec
from specs.model import Scalar, TuningSpec
from specs.space import axes
from specs.suggest import did_you_mean

#: engine.args the replay engine reads itself; every other arg is a fixed parameter column
OWN_ARGS = ("table", "gpus", "gpu")


# --------------------------------------------------------------------------------------------- spec vs table


def table_path(spec: TuningSpec) -> str:
    return str(spec.spec.engine.args.get("table", ""))


def resolve_table(spec: TuningSpec, base_dir: Path) -> Path:
    """The table's path under ``base_dir`` (the spec repository); never outside it."""
    raw = table_path(spec)
    rel = PurePosixPath(raw)
    if not raw or rel.is_absolute() or ".." in rel.parts:
        raise UserError(f"engine.args.table: {raw!r} must be a path inside the spec repository")
    root = base_dir.resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise UserError(f"engine.args.table: {raw!r} leads outside the spec repository")
    return path


def fixed_params(spec: TuningSpec) -> dict[str, Scalar]:
    """engine.args other than the replay engine's own: fixed values of table columns."""
    return {k: v for k, v in spec.spec.engine.args.items() if k not in OWN_ARGS}


def spec_levels(spec: TuningSpec) -> tuple[str, list[float]]:
    load = spec.spec.workload.load
    if load.concurrency is not None:
        return "concurrency", [float(c) for c in load.concurrency]
    return "request_rate", [float(r) for r in load.request_rate or []]


def check_against(loaded: LoadedSpec, table: ReplayTable) -> list[SpecProblem]:
    """The spec's axes, fixed args and load levels against the table's columns, located."""
    spec = loaded.spec
    out: list[SpecProblem] = []
    cols = table.param_columns
    for axis in axes(spec):
        if axis.name not in cols:
            if axis.name in spec.spec.search.parameters:
                path: tuple[str | int, ...] = ("spec", "search", "parameters", axis.name)
            else:
                path = ("spec", "search", axis.name.split(".", 1)[0].replace("quant", "quantization"))
            out.append(
                loaded.problem(
                    path,
                    f"{axis.name!r} is not a column of {table.source}{did_you_mean(axis.name, cols)} "
                    f"(parameter columns: {', '.join(cols) or 'none'})",
                )
            )
    for name in fixed_params(spec):
        if name not in cols:
            out.append(
                loaded.problem(
                    ("spec", "engine", "args", name),
                    f"{name!r} is not a column of {table.source}{did_you_mean(name, cols)}",
                )
            )
    if spec.spec.workload.load.capacity is not None:
        out.append(
            loaded.problem(
                ("spec", "workload", "load", "capacity"),
                "the replay engine answers fixed load levels only: give concurrency or requestRate",
            )
        )
        return out
    kind, levels = spec_levels(spec)
    key = "concurrency" if kind == "concurrency" else "requestRate"
    if kind != table.load_kind:
        out.append(
            loaded.problem(
                ("spec", "workload", "load", key),
                f"the table is measured by {table.load_kind}, the spec loads by {kind}",
            )
        )
        return out
    have = table.levels()
    for i, level in enumerate(levels):
        if not any(math.isclose(level, h) for h in have):
            out.append(
                loaded.problem(
                    ("spec", "workload", "load", key, i),
                    f"{kind}={level:g} is not a level of {table.source} (levels: "
                    f"{', '.join(f'{h:g}' for h in sorted(have))})",
                )
            )
    return out


# --------------------------------------------------------------------------------------------- the mapping


class ReplayEngine:
    """The engine mapping of ``replay`` (see the module docstring): no flags of its own, no
    process; its command line only names the table and the configuration."""

    name = "replay"
    simulated = True

    def __init__(self) -> None:
        self.flags = FlagTable(
            engine="replay", version="1", source="backends/engines/replay.py", separator="-"
        )

    def check(self, loaded: LoadedSpec) -> list[SpecProblem]:
        spec = loaded.spec
        args = spec.spec.engine.args
        out: list[SpecProblem] = []
        raw = args.get("table")
        if not isinstance(raw, str) or not raw:
            out.append(
                loaded.problem(
                    ("spec", "engine", "args"),
                    "the replay engine needs args.table: a CSV file or a results folder",
                )
            )
        else:
            rel = PurePosixPath(raw)
            if rel.is_absolute() or ".." in rel.parts:
                out.append(
                    loaded.problem(
                        ("spec", "engine", "args", "table"),
                        "must be a relative path inside the spec repository",
                    )
                )
        gpus = args.get("gpus", 1)
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
            out.append(
                loaded.problem(("spec", "engine", "args", "gpus"), "GPUs per experiment: a whole number >= 1")
            )
        return out

    def config_problems(self, spec: TuningSpec, config: Mapping[str, Scalar]) -> list[Rejection]:
        return []

    def startup_problems(
        self, spec: TuningSpec, config: Mapping[str, Scalar], *, gpu: str | None = None
    ) -> list[Rejection]:
        return []  # the table says what failed; nothing is predicted

    def rule_flags(self) -> frozenset[str]:
        return frozenset()

    def resolve(self, spec: TuningSpec, config: Mapping[str, Scalar]) -> dict[str, Scalar]:
        return {**fixed_params(spec), **dict(sorted(config.items()))}

    def gpus_for(self, spec: TuningSpec, config: Mapping[str, Scalar]) -> int:
        gpus = spec.spec.engine.args.get("gpus", 1)
        return gpus if isinstance(gpus, int) and not isinstance(gpus, bool) and gpus >= 1 else 1

    def launch(self, spec: TuningSpec, config: Mapping[str, Scalar], *, host: str, port: int) -> LaunchPlan:
        argv = ["replay", table_path(spec)]
        for name, value in self.resolve(spec, config).items():
            argv += [f"--{name}", show(value)]
        gpus = self.gpus_for(spec, config)
        return LaunchPlan(
            argv=argv,
            env={},
            gpus=gpus,
            world_size=gpus,
            port=port,
            served_model=spec.spec.model.id,
            notes=["replayed from a table: no engine process runs"],
            simulated=True,
        )

    def local_problem(self) -> UserError | None:
        return None

    def executable_problem(self) -> str | None:
        return None  # no process: nothing to install

    def missing_module(self, log_tail: str) -> bool:
        return False

    def failure_detail(self, log_tail: str) -> str | None:
        return None
