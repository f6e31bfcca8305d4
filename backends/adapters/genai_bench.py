"""Read a genai-bench experiment folder into load points.

A genai-bench run writes, per (traffic scenario, concurrency), one file named
``{scenario}_{task}_{iteration_type}_{N}_time_{T}s.json`` holding ``aggregated_metrics``,
``individual_request_metrics`` and ``_time_unit``. The original system parsed only deterministic
``D(..)`` scenarios out of the file *name*; here every ``*_time_*s.json`` file is read and the
scenario, iteration type and level come from ``aggregated_metrics`` (the file name only
cross-checks them), so ``N(..)/(..)``, ``U(..)``, ``E(..)``, ``I(..)``, ``F`` and any future
scenario convert the same way. Each (scenario, level) is one load point; each scenario is its own
series, named in ``extra["scenario"]`` and in the notes.

Definition differences (docs/adapters.md has the table):

* ``_time_unit`` (``s`` or ``ms``) applies to the latency stats only (ttft, tpot, e2e_latency,
  output_latency); token counts and throughputs are per second either way. A file without it is
  from a version that always wrote seconds.
* genai-bench's ``error_rate`` field reads 0 even when requests failed (it divides by
  ``num_requests`` before setting it); ``error_rate`` here is ``failed / (completed + failed)``.
* There is no inter-token latency: ``itl_*`` stay ``None``. TPOT is ``(e2e - ttft) / (out - 1)``
  like ours, and missing for requests with one output token; embedding scenarios have no output,
  so their TPOT is ``None`` rather than genai-bench's zeros.
* ``request_throughput`` and the token throughputs are totals over ``run_duration``, the wall time
  of the run; ``total_throughput`` includes reasoning tokens.
* Requests faster than 1000 tokens/s are dropped by genai-bench before aggregation, and warmup /
  cooldown ratios remove requests from the stats but not from the counts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from backends.adapters._common import AdapterError, blank_metrics, count, finish, load_json, mapping, number
from specs.records import LoadPointRecord

log = logging.getLogger(__name__)

SOURCE = "genai-bench"
RESULT_GLOB = "*_time_*s.json"
RESULT_NAME = re.compile(
    r"^(?P<scenario>.+)_(?P<task>[a-z]+(?:-[a-z]+)+)_(?P<itype>num_concurrency|batch_size|request_rate)_"
    r"(?P<value>\d+(?:\.\d+)?)_time_(?P<time>\d+)s\.json$"
)
UNIT_TO_MS = {"s": 1000.0, "ms": 1.0}
STATS = (("mean", "mean"), ("p50", "p50"), ("p90", "p90"), ("p95", "p95"), ("p99", "p99"))
LATENCIES = (("ttft", "ttft"), ("tpot", "tpot"), ("e2e", "e2e_latency"))

DEFINITION_NOTES = (
    "genai-bench has no inter-token latency: itl_* are None",
    "tpot = (e2e - ttft) / (output_tokens - 1) per request, as ours; requests without it "
    "(one output token) are not in tpot_*",
    "error_rate = failed / (completed + failed); genai-bench's own error_rate field is not used",
    "request_throughput, output_throughput and total_throughput are totals over run_duration "
    "(total includes reasoning tokens)",
    "genai-bench drops requests faster than 1000 tokens/s before aggregating",
)


def read_genai_bench(folder: Path, gpus: int | None = None) -> list[LoadPointRecord]:
    if not folder.exists():
        raise AdapterError(f"{folder}: genai-bench experiment folder not found")
    if not folder.is_dir():
        raise AdapterError(f"{folder}: expected a genai-bench experiment folder, got a file")
    files = sorted(p for p in folder.glob(RESULT_GLOB) if p.is_file())
    if not files:
        nested = sorted({p.parent.name for p in folder.glob(f"*/{RESULT_GLOB}")})
        hint = (
            f"these subfolders hold genai-bench results; import one of them: {', '.join(nested)}"
            if nested
            else "point at the folder genai-bench wrote (the one with experiment_metadata.json)"
        )
        raise AdapterError(f"{folder}: no genai-bench result files ({RESULT_GLOB})", hint=hint)

    metadata = _metadata(folder)
    seen: dict[tuple[Any, ...], Path] = {}
    points: list[tuple[tuple[Any, ...], LoadPointRecord]] = []
    for path in files:
        key, point = _read_result(path, metadata, gpus)
        if key in seen:
            raise AdapterError(
                f"{folder}: two result files for scenario {point.extra['scenario']} at "
                f"{point.extra['iteration_type']} {_fmt(point.load_value)}: {seen[key].name} and {path.name}",
                hint="remove the one from the earlier run",
            )
        seen[key] = path
        points.append((key, point))

    found = {p.extra["scenario"] for _, p in points}
    for scenario in metadata.get("traffic_scenario") or []:
        if isinstance(scenario, str) and scenario not in found:
            log.warning(
                "%s: scenario %s is in experiment_metadata.json but has no result file", folder, scenario
            )
    return [point for _, point in sorted(points, key=lambda kp: kp[0])]


def _metadata(folder: Path) -> Mapping[str, Any]:
    path = folder / "experiment_metadata.json"
    if not path.exists():
        return {}
    return mapping(load_json(path), str(path), "the file")


def _read_result(
    path: Path, metadata: Mapping[str, Any], gpus: int | None
) -> tuple[tuple[Any, ...], LoadPointRecord]:
    where = str(path)
    doc = mapping(load_json(path), where, "a genai-bench result file")
    if "aggregated_metrics" not in doc:
        raise AdapterError(
            f"{where}: missing key 'aggregated_metrics'; not a genai-bench result file "
            f"(keys present: {', '.join(sorted(doc)) or 'none'})"
        )
    agg = mapping(doc["aggregated_metrics"], where, "'aggregated_metrics'")
    agg_where = f"{where}: aggregated_metrics"
    notes: list[str] = []
    unit = _time_unit(doc, where, notes)
    named = RESULT_NAME.match(path.name)
    scenario = _scenario(agg, named, agg_where, notes)
    itype = agg.get("iteration_type", "num_concurrency")
    extra: dict[str, Any] = {"scenario": scenario, "file": where, "iteration_type": itype, "time_unit": unit}
    load_kind, value, batch = _level(agg, itype, named, agg_where, notes)
    if batch:
        extra["batch_size"] = int(batch)
    if named is not None:
        extra["task"] = named["task"]
    for key in ("model", "server_engine", "server_version", "server_gpu_type", "server_gpu_count"):
        if metadata.get(key) is not None:
            extra[key] = metadata[key]
    if metadata.get("benchmark_version") is not None:
        extra["genai_bench_version"] = metadata["benchmark_version"]

    frequencies = _error_codes(agg, agg_where)
    metrics = _metrics(agg, UNIT_TO_MS[unit], frequencies, gpus, agg_where, notes)
    notes.insert(0, f"scenario {scenario}")
    notes.extend(DEFINITION_NOTES)
    point = LoadPointRecord(
        load_kind=load_kind,
        load_value=value,
        metrics=metrics,
        source=SOURCE,
        notes=notes,
        errors={f"http_{code}": n for code, n in sorted(frequencies.items())},
        extra=extra,
    )
    return (scenario, load_kind, value, batch), point


def _time_unit(doc: Mapping[str, Any], where: str, notes: list[str]) -> str:
    unit = doc.get("_time_unit")
    if unit is None:
        notes.append("no _time_unit in the file: latencies read as seconds (older genai-bench)")
        unit = "s"
    if unit not in UNIT_TO_MS:
        raise AdapterError(f"{where}: '_time_unit' is {unit!r}; expected 's' or 'ms'")
    notes.append(
        f"latencies converted from {unit} to ms (_time_unit); token counts and throughputs unchanged"
    )
    return str(unit)


def _scenario(agg: Mapping[str, Any], named: re.Match[str] | None, where: str, notes: list[str]) -> str:
    scenario = agg.get("scenario")
    if isinstance(scenario, str) and scenario:
        return scenario
    if named is None:
        raise AdapterError(f"{where}: no 'scenario', and the file name does not give one")
    notes.append(
        f"scenario {named['scenario']!r} taken from the file name (sanitized; aggregated_metrics has none)"
    )
    return named["scenario"]


def _level(
    agg: Mapping[str, Any], itype: Any, named: re.Match[str] | None, where: str, notes: list[str]
) -> tuple[Literal["concurrency", "request_rate"], float, float]:
    """(load kind, load value, batch size or 0) of one result file."""
    load_kind: Literal["concurrency", "request_rate"] = "concurrency"
    batch = 0.0
    if itype == "num_concurrency":
        value = number(agg, "num_concurrency", where, required=True)
    elif itype == "request_rate":
        load_kind = "request_rate"
        value = number(agg, "request_rate", where)
        if value is None and named is not None:
            value = float(named["value"])
    elif itype == "batch_size":
        # embeddings: the level is the batch size, at concurrency num_concurrency (1 by default)
        value = number(agg, "num_concurrency", where) or 1.0
        batch = number(agg, "batch_size", where, required=True) or 0.0
        notes.append(f"batch size {int(batch)} (genai-bench iterated over batch sizes)")
    else:
        raise AdapterError(
            f"{where}: unknown iteration_type {itype!r}; expected num_concurrency, request_rate or batch_size"
        )
    if value is None or value <= 0:
        raise AdapterError(f"{where}: no positive {itype} level")
    if named is not None and named["itype"] == itype:
        level = batch if itype == "batch_size" else value
        if float(named["value"]) != level:
            notes.append(
                f"file name says {itype} {named['value']}, aggregated_metrics says {_fmt(level)}: "
                "aggregated_metrics used"
            )
    return load_kind, value, batch


def _metrics(
    agg: Mapping[str, Any],
    to_ms: float,
    frequencies: dict[str, int],
    gpus: int | None,
    where: str,
    notes: list[str],
) -> dict[str, float | None]:
    metrics = blank_metrics()
    if "stats" not in agg:
        raise AdapterError(f"{where}: missing key 'stats'")
    stats = mapping(agg["stats"], where, "'stats'")
    has_output = bool(_stat(stats, "num_output_tokens", "mean", where))
    for ours, theirs in LATENCIES:
        if ours == "tpot" and not has_output:
            continue  # no output (embeddings): genai-bench writes tpot 0, which is not a latency
        for our_stat, their_stat in STATS:
            seconds_or_ms = _stat(stats, theirs, their_stat, where)
            metrics[f"{ours}_{our_stat}_ms"] = seconds_or_ms * to_ms if seconds_or_ms is not None else None
    if not has_output:
        notes.append("no output tokens in this scenario (embeddings?): tpot_* are None")

    completed = count(agg, "num_completed_requests", where, required=True)
    failed = count(agg, "num_error_requests", where)
    if failed is None:
        failed = sum(frequencies.values())
    metrics["completed"] = completed
    metrics["failed"] = failed
    metrics["duration_s"] = number(agg, "run_duration", where, required=True)
    metrics["request_throughput"] = number(agg, "requests_per_second", where, required=True)
    metrics["output_throughput"] = number(agg, "mean_output_throughput_tokens_per_s", where)
    metrics["total_throughput"] = number(agg, "mean_total_tokens_throughput_tokens_per_s", where)
    finish(metrics, gpus)

    reported, computed = number(agg, "error_rate", where), metrics["error_rate"]
    if reported is not None and computed is not None and abs(reported - computed) > 1e-9:
        notes.append(
            f"genai-bench's error_rate field reads {reported:g}; recomputed as failed / (completed + failed) "
            f"= {failed}/{(completed or 0) + failed} = {computed:.4g}"
        )
    return metrics


def _stat(stats: Mapping[str, Any], field: str, stat: str, where: str) -> float | None:
    block = stats.get(field)
    if block is None:
        return None
    return number(mapping(block, where, f"stats.{field}"), stat, f"{where}: stats.{field}")


def _error_codes(agg: Mapping[str, Any], where: str) -> dict[str, int]:
    """HTTP status -> number of failed requests (genai-bench writes the status as a JSON key)."""
    raw = mapping(agg.get("error_codes_frequency") or {}, where, "'error_codes_frequency'")
    return {str(code): count(raw, code, f"{where}: error_codes_frequency") or 0 for code in raw}


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
