"""The replay engine's table: configurations measured before, one row per configuration and load
level, read from a CSV file or from an earlier study's results folder (the format is described
in :mod:`backends.engines.replay` and docs/engines.md), and looked up by configuration.

Every cell is checked as it is read, so a bad table fails once, located (``file:line: column:
message``), before any experiment; lookups then only compare canonical values (:func:`canon`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specs.errors import ReplayTableError
from specs.metrics import ALL_METRICS
from specs.model import Scalar

LOAD_COLUMNS = ("concurrency", "request_rate")
CONTROL_COLUMNS = ("state", "failure_kind", "failure_reason", "default", *LOAD_COLUMNS)
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
        shown = ", ".join(f"{k}={show(v)}" for k, v in sorted(wanted.items()))
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


def show(v: Any) -> str:
    """A value as the table and the command line spell it (``true``, not ``True``)."""
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
    """A CSV table's rows, every cell checked; :class:`ReplayTableError` names the first bad one."""
    reader = csv.reader(io.StringIO(text))
    columns, load_kind = _header(reader, label)
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
        rows.append(_csv_row(cell, f"{label}:{line}", load_kind, metric_cols, param_cols))
    if not rows:
        raise ReplayTableError(f"{label}:2: the table has a header but no rows")
    return ReplayTable(source=label, columns=columns, load_kind=load_kind, rows=rows)


def _header(reader: Iterator[list[str]], label: str) -> tuple[list[str], str]:
    """The header's column names and the one load column among them."""
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
    return columns, loads[0]


def _csv_row(
    cell: dict[str, str], where: str, load_kind: str, metric_cols: list[str], param_cols: list[str]
) -> ReplayRow:
    state = cell["state"].strip().upper()
    if state not in ("COMPLETE", "FAILED"):
        raise ReplayTableError(f"{where}: state: {cell['state']!r} is neither COMPLETE nor FAILED")
    load_value = _load_value(cell[load_kind].strip(), state, where, load_kind)
    metrics = {m: _number(cell[m].strip(), where, m) for m in metric_cols}
    default_text = cell.get("default", "").strip().lower()
    if default_text not in ("", "true", "false"):
        raise ReplayTableError(f"{where}: default: {cell['default']!r} is neither true nor false")
    return ReplayRow(
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


def _load_value(text: str, state: str, where: str, load_kind: str) -> float | None:
    """A row's load level: needed on a COMPLETE row, optional on a FAILED one, always > 0."""
    if not text:
        if state == "COMPLETE":
            raise ReplayTableError(f"{where}: {load_kind}: a COMPLETE row needs its load level")
        return None
    value = _number(text, where, load_kind)
    if not (value is not None and value > 0):
        raise ReplayTableError(f"{where}: {load_kind}: load levels must be > 0")
    return value


def _number(text: str, where: str, column: str) -> float | None:
    """A numeric cell; an empty cell is ``None`` (not measured)."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ReplayTableError(f"{where}: {column}: {text!r} is not a number") from None


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
