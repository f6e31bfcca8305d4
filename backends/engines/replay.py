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

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from backends.engines.base import FlagTable, LaunchPlan
from specs.errors import Rejection, ReplayTableError, SpecProblem, UserError
from specs.loader import LoadedSpec
from specs.metrics import ALL_METRICS
from specs.model import Scalar, TuningSpec
from specs.space import axes
from specs.suggest import did_you_mean

LOAD_COLUMNS = ("concurrency", "request_rate")
CONTROL_COLUMNS = ("state", "failure_kind", "failure_reason", "default", *LOAD_COLUMNS)
#: engine.args the replay engine reads itself; every other arg is a fixed parameter column
OWN_ARGS = ("table", "gpus", "gpu")
#: table cells larger than this are refused (a table is data for a study, not a dump)
MAX_TABLE_BYTES = 64 * 1024 * 1024


Key = tuple[tuple[str, Any], ...]


def canon(value: Any) -> Any:
    """One spelling per value, so that ``0.9``, ``0.90`` and ``9e-1`` match, and ``true`` is
    never the number 1."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", float(value))
    return ("s", str(value))


def parse_cell(text: str) -> Scalar:
    t = text.strip()
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    try:
        return int(t)
    except ValueError:
        pass
    try:
        f = float(t)
    except ValueError:
        return t
    return f if math.isfinite(f) else t


@dataclass
class ReplayRow:
    params: dict[str, Scalar]
    state: str
    load_kind: str | None
    load_value: float | None
    metrics: dict[str, float | None]
    failure_kind: str | None = None
    failure_reason: str | None = None
    default: bool = False
    where: str = ""


@dataclass
class Answer:
    """What the table says about one configuration: its rows per load level, or why not."""

    state: str  # COMPLETE | FAILED | MISSING
    points: list[ReplayRow] = field(default_factory=list)
    failure_kind: str | None = None
    failure_reason: str | None = None


@dataclass
class ReplayTable:
    source: str
    columns: list[str]
    load_kind: str
    rows: list[ReplayRow]
    _index: dict[tuple[str, ...], dict[Key, list[ReplayRow]]] = field(default_factory=dict, repr=False)

    @property
    def param_columns(self) -> list[str]:
        return [c for c in self.columns if c not in CONTROL_COLUMNS and c not in ALL_METRICS]

    def levels(self) -> set[float]:
        return {r.load_value for r in self.rows if r.load_value is not None}

    def default_params(self) -> dict[str, Scalar] | None:
        rows = [r for r in self.rows if r.default]
        return dict(rows[0].params) if rows else None

    def configurations(self) -> int:
        return len({_key(r.params, self.param_columns) for r in self.rows})

    def lookup(self, wanted: Mapping[str, Scalar], levels: Sequence[float]) -> Answer:
        """Rows of the configuration ``wanted`` (column → value) at ``levels``, in that order."""
        names = tuple(sorted(wanted))
        index = self._index.get(names)
        if index is None:  # one index per set of named columns: a study asks with the same names
            index = {}
            for r in self.rows:
                index.setdefault(tuple((n, canon(r.params.get(n))) for n in names), []).append(r)
            self._index[names] = index
        match = index.get(tuple((n, canon(wanted[n])) for n in names), [])
        return self._answer(match, wanted, levels)

    def lookup_default(self, levels: Sequence[float]) -> Answer:
        match = [r for r in self.rows if r.default]
        if not match:
            return Answer(
                state="MISSING",
                failure_reason=f"{self.source} marks no row as the engine default (a 'default' column "
                "with true on the default configuration's rows)",
            )
        return self._answer(match, {"default": True}, levels)

    def _answer(
        self, match: list[ReplayRow], wanted: Mapping[str, Scalar], levels: Sequence[float]
    ) -> Answer:
        shown = ", ".join(f"{k}={_show(v)}" for k, v in sorted(wanted.items()))
        if not match:
            return Answer(state="MISSING", failure_reason=f"configuration {shown} is not in {self.source}")
        failed = [r for r in match if r.state == "FAILED"]
        if failed:
            f = failed[0]
            return Answer(
                state="FAILED",
                failure_kind=f.failure_kind or "startup_crash",
                failure_reason=f.failure_reason or f"failed when it was measured ({f.where})",
            )
        points: list[ReplayRow] = []
        for level in levels:
            at = [r for r in match if r.load_value is not None and math.isclose(r.load_value, level)]
            if not at:
                return Answer(
                    state="MISSING",
                    failure_reason=f"configuration {shown} is not in {self.source} "
                    f"at {self.load_kind}={level:g}",
                )
            distinct = {_key(r.params, self.param_columns) for r in at}
            if len(distinct) > 1:
                others = sorted(
                    c
                    for c in self.param_columns
                    if c not in wanted and len({canon(r.params.get(c)) for r in at}) > 1
                )
                return Answer(
                    state="MISSING",
                    failure_reason=f"{len(at)} rows of {self.source} match {shown} at "
                    f"{self.load_kind}={level:g}: they differ in {', '.join(others) or 'unnamed columns'}; "
                    "fix those in engine.args or search them",
                )
            points.append(at[0])
        return Answer(state="COMPLETE", points=points)


def _show(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _key(params: Mapping[str, Scalar], columns: Sequence[str]) -> Key:
    return tuple((c, canon(params.get(c))) for c in columns)


# --------------------------------------------------------------------------------------------- reading


def load_table(path: Path, label: str | None = None) -> ReplayTable:
    """A CSV table, or a results folder of an earlier study; :class:`ReplayTableError` if bad."""
    label = label or str(path)
    if path.is_dir():
        return _from_results(path, label)
    if not path.is_file():
        raise ReplayTableError(
            f"{label}: the replay table does not exist",
            hint="engine.args.table is relative to the spec repository",
        )
    if path.stat().st_size > MAX_TABLE_BYTES:
        raise ReplayTableError(f"{label}: larger than {MAX_TABLE_BYTES // 2**20} MiB")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ReplayTableError(f"{label}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_table(text, label)


def parse_table(text: str, label: str) -> ReplayTable:
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise ReplayTableError(f"{label}:1: the table is empty (a header row is needed)") from None
    columns = [h.strip() for h in header]
    if len(set(columns)) != len(columns):
        dup = next(c for c in columns if columns.count(c) > 1)
        raise ReplayTableError(f"{label}:1: {dup}: the column appears twice")
    if "state" not in columns:
        raise ReplayTableError(f"{label}:1: state: the table needs a 'state' column (COMPLETE or FAILED)")
    loads = [c for c in LOAD_COLUMNS if c in columns]
    if len(loads) != 1:
        raise ReplayTableError(
            f"{label}:1: the table needs exactly one load column, 'concurrency' or 'request_rate'"
            + (" (it has both)" if loads else "")
        )
    load_kind = loads[0]
    metric_cols = [c for c in columns if c in ALL_METRICS]
    param_cols = [c for c in columns if c not in CONTROL_COLUMNS and c not in ALL_METRICS]
    rows: list[ReplayRow] = []
    for line, cells in enumerate(reader, start=2):
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) != len(columns):
            raise ReplayTableError(
                f"{label}:{line}: the row has {len(cells)} cells, the header {len(columns)}"
            )
        cell = dict(zip(columns, cells, strict=True))
        where = f"{label}:{line}"
        state = cell["state"].strip().upper()
        if state not in ("COMPLETE", "FAILED"):
            raise ReplayTableError(f"{where}: state: {cell['state']!r} is neither COMPLETE nor FAILED")
        load_text = cell[load_kind].strip()
        load_value: float | None = None
        if load_text:
            try:
                load_value = float(load_text)
            except ValueError:
                raise ReplayTableError(f"{where}: {load_kind}: {load_text!r} is not a number") from None
            if not load_value > 0:
                raise ReplayTableError(f"{where}: {load_kind}: load levels must be > 0")
        elif state == "COMPLETE":
            raise ReplayTableError(f"{where}: {load_kind}: a COMPLETE row needs its load level")
        metrics: dict[str, float | None] = {}
        for m in metric_cols:
            t = cell[m].strip()
            if not t:
                metrics[m] = None
                continue
            try:
                metrics[m] = float(t)
            except ValueError:
                raise ReplayTableError(f"{where}: {m}: {t!r} is not a number") from None
        default_text = cell.get("default", "").strip().lower()
        if default_text not in ("", "true", "false"):
            raise ReplayTableError(f"{where}: default: {cell['default']!r} is neither true nor false")
        rows.append(
            ReplayRow(
                params={c: parse_cell(cell[c]) for c in param_cols if cell[c].strip()},
                state=state,
                load_kind=load_kind,
                load_value=load_value,
                metrics=metrics,
                failure_kind=cell.get("failure_kind", "").strip() or None,
                failure_reason=cell.get("failure_reason", "").strip() or None,
                default=default_text == "true",
                where=where,
            )
        )
    if not rows:
        raise ReplayTableError(f"{label}:2: the table has a header but no rows")
    return ReplayTable(source=label, columns=columns, load_kind=load_kind, rows=rows)


def _from_results(folder: Path, label: str) -> ReplayTable:
    exp_dir = folder / "experiments" if (folder / "experiments").is_dir() else folder
    files = sorted(exp_dir.glob("*.json"))
    if not files:
        raise ReplayTableError(
            f"{label}: no experiment records (experiments/NNNN.json) in this folder",
            hint="give a CSV table or an earlier study's results/<name> folder",
        )
    rows: list[ReplayRow] = []
    columns: list[str] = []
    load_kind: str | None = None
    seen: set[Key] = set()
    for f in files:
        where = f"{label}/{f.relative_to(folder)}" if f.is_relative_to(folder) else str(f)
        try:
            rec = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ReplayTableError(f"{where}: not a JSON experiment record ({exc})") from None
        if not isinstance(rec, dict) or "config" not in rec or "state" not in rec:
            raise ReplayTableError(f"{where}: not an experiment record (no 'config' or 'state')")
        if rec.get("reusedFrom") or rec.get("state") == "PRUNED":
            continue  # a copy of another record, or a partial measurement: nothing new
        config = rec.get("config") or {}
        if not isinstance(config, dict):
            raise ReplayTableError(f"{where}: config: not a mapping")
        is_default = bool(rec.get("baseline"))
        for name in config:
            if name not in columns:
                columns.append(name)
        key = (*sorted((k, canon(v)) for k, v in config.items()), ("default", is_default))
        if key in seen:
            continue
        seen.add(key)
        failure = rec.get("failure") or {}
        if rec["state"] == "FAILED":
            rows.append(
                ReplayRow(
                    params=dict(config),
                    state="FAILED",
                    load_kind=None,
                    load_value=None,
                    metrics={},
                    failure_kind=failure.get("kind"),
                    failure_reason=failure.get("reason"),
                    default=is_default,
                    where=where,
                )
            )
            continue
        for p in rec.get("loadPoints") or []:
            kind = p.get("load_kind")
            if load_kind is None:
                load_kind = kind
            elif kind != load_kind:
                raise ReplayTableError(f"{where}: load points by {kind}, earlier records by {load_kind}")
            rows.append(
                ReplayRow(
                    params=dict(config),
                    state="COMPLETE",
                    load_kind=kind,
                    load_value=float(p.get("load_value")),
                    metrics={k: v for k, v in (p.get("metrics") or {}).items() if k in ALL_METRICS},
                    default=is_default,
                    where=where,
                )
            )
    if not rows:
        raise ReplayTableError(f"{label}: its records hold no measured configuration")
    return ReplayTable(source=label, columns=columns, load_kind=load_kind or "concurrency", rows=rows)


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
            argv += [f"--{name}", _show(value)]
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
