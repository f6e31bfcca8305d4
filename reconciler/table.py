"""Every experiment as one flat table (``autotuner export``) and the spec overview
(``autotuner status``), computed from the results folder alone."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from specs.metrics import ALL_METRICS
from specs.records import ExperimentRecord, StatusRecord
from specs.results import read_spec_folder, spec_dirs

log = logging.getLogger(__name__)

BASE_COLUMNS = [
    "spec",
    "id",
    "generation",
    "trial",
    "state",
    "baseline",
    "feasible",
    "reused_from",
    "engine",
    "engine_version",
    "gpu_model",
    "gpu_count",
    "simulated",
    "summary_load_kind",
    "summary_load_value",
]
TAIL_COLUMNS = ["failure_kind", "failure_reason", "total_s", "started_at", "finished_at", "config_hash"]


Loaded = dict[str, tuple[StatusRecord | None, list[ExperimentRecord]]]


def load_all(results: Path, only: Iterable[str] | None = None) -> Loaded:
    """Status and records of every spec folder (:mod:`specs.results` says what one is), or of
    those named in ``only``; an unreadable file is logged and skipped."""
    wanted = set(only) if only else None
    out: Loaded = {}
    for spec_dir in spec_dirs(results):
        if wanted is not None and spec_dir.name not in wanted:
            continue
        folder = read_spec_folder(spec_dir)
        for rel, why in folder.unreadable:
            log.warning("skipping unreadable %s: %s", spec_dir / rel, why)
        out[folder.name] = (folder.status, folder.experiments)
    return out


def rows(data: Loaded) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and rows: fixed columns, then ``param.<axis>``, then metrics at the summary load
    point, then objectives (penalized values as ``objective.<metric>``), then failure and timing."""
    table: list[dict[str, Any]] = []
    params: set[str] = set()
    metrics: set[str] = set()
    objectives: set[str] = set()
    for name, (_, records) in data.items():
        for r in records:
            point = r.load_points[r.summary_index] if r.summary_index is not None and r.load_points else None
            row: dict[str, Any] = {
                "spec": name,
                "id": r.id,
                "generation": r.generation,
                "trial": r.trial,
                "state": r.state,
                "baseline": r.baseline,
                "feasible": r.feasible,
                "reused_from": r.reused_from,
                "engine": r.engine.get("name"),
                "engine_version": r.engine.get("version"),
                "gpu_model": r.gpu.model,
                "gpu_count": r.gpu.count,
                "simulated": r.simulated,
                "summary_load_kind": point.load_kind if point else None,
                "summary_load_value": point.load_value if point else None,
                "failure_kind": r.failure.kind if r.failure else None,
                "failure_reason": r.failure.reason if r.failure else None,
                "total_s": r.timings.get("total_s"),
                "started_at": r.started_at,
                "finished_at": r.finished_at,
                "config_hash": r.config_hash,
            }
            for k, v in r.config.items():
                row[f"param.{k}"] = v
                params.add(f"param.{k}")
            for k, v in r.summary.items():
                row[k] = v
                metrics.add(k)
            for o in r.objectives:
                row[f"objective.{o.metric}"] = o.value
                objectives.add(f"objective.{o.metric}")
            table.append(row)
    ordered_metrics = [m for m in ALL_METRICS if m in metrics] + sorted(metrics - set(ALL_METRICS))
    columns = BASE_COLUMNS + sorted(params) + ordered_metrics + sorted(objectives) + TAIL_COLUMNS
    return columns, table
