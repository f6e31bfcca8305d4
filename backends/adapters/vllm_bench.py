"""Read a ``vllm bench serve --save-result`` JSON file into load points.

The file is one JSON object per run (``--append-result`` appends more objects to the same file,
separated by newlines, so several objects are read as several load points). Keys, from
``vllm/benchmarks/serve.py``: ``duration, completed, failed, request_throughput, request_goodput,
output_throughput, total_token_throughput, max_concurrency, request_rate, burstiness`` and, for each
of ``ttft, tpot, itl, e2el`` selected with ``--percentile-metrics`` (default ``ttft,tpot,itl``:
no e2el!), ``mean_/median_/std_`` plus ``pNN_`` only for the percentiles given to
``--metric-percentiles`` (default ``99``). Anything not in the file stays ``None``; nothing is
estimated.

Definition differences (docs/adapters.md has the table):

* TTFT, TPOT and E2E are defined as ours; ITL pools every gap between streamed chunks, so a chunk
  carrying several tokens is one gap, also as ours.
* ``p50`` is vLLM's median; p90/p95 exist only if they were asked for.
* vLLM writes 0 for statistics over no samples (``np.mean([] or 0)``): with no completed request,
  or no request with more than one output token, those zeros become ``None``.
* ``duration`` spans the whole run, failed requests included; throughputs are totals over it.
  Output token counts are the server's usage, or vLLM's own re-tokenization of the text.
* ``goodput`` is vLLM's ``request_goodput`` (requests meeting every ``--goodput`` SLO per second),
  present only when the run used ``--goodput``; vLLM counts a one-token request's TPOT as 0 there.
* Load: a finite ``request_rate`` is an open-loop point at that rate (``max_concurrency``, if set,
  caps it and is kept in ``extra``); ``request_rate: inf`` with ``max_concurrency`` is a
  concurrency point; neither is ``request_rate = inf`` (everything sent at once).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from backends.adapters._common import (
    AdapterError,
    blank_metrics,
    count,
    finish,
    mapping,
    number,
    read_text,
    type_name,
)
from specs.records import LoadPointRecord

SOURCE = "vllm-bench"
LATENCIES = (("ttft", "ttft"), ("tpot", "tpot"), ("itl", "itl"), ("e2e", "e2el"))
PERCENTILE_KEY = re.compile(r"^p(?P<p>\d+(?:\.\d+)?)_(?P<metric>ttft|tpot|itl|e2el)_ms$")
EXTRA_KEYS = ("model_id", "backend", "label", "date", "num_prompts", "burstiness", "max_concurrency")

DEFINITION_NOTES = (
    "ttft, tpot, e2e as ours; itl pools every gap between streamed chunks (a multi-token chunk is one gap)",
    "p50 is vLLM's median; other percentiles exist only if given to --metric-percentiles (default 99)",
    "duration spans the whole run including failed requests; throughputs are totals over it",
    "output tokens from the server's usage or vLLM's re-tokenization of the text",
)


def read_vllm_bench(path: Path, gpus: int | None = None) -> list[LoadPointRecord]:
    if path.is_dir():
        raise AdapterError(f"{path}: expected a vllm bench serve result JSON file, got a folder")
    records = _records(path)
    if not records:
        raise AdapterError(f"{path}: no results in the file")
    points = []
    for index, record in enumerate(records):
        where = f"{path}: record {index + 1}" if len(records) > 1 else str(path)
        points.append(_point(mapping(record, where, "a result"), where, path, index, gpus))
    return sorted(points, key=lambda p: (p.load_kind, p.load_value))


def _records(path: Path) -> list[Any]:
    text = read_text(path)
    stripped = text.strip()
    if not stripped:
        raise AdapterError(f"{path}: the file is empty")
    decoder = json.JSONDecoder()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise AdapterError(
                f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        return list(value)
    # one object, or several written by --append-result one after the other
    records: list[Any] = []
    position = 0
    while position < len(text):
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            break
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise AdapterError(
                f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        records.append(value)
    return records


def _point(
    record: Mapping[str, Any], where: str, path: Path, index: int, gpus: int | None
) -> LoadPointRecord:
    for key in ("duration", "completed", "request_throughput"):
        if key not in record:
            present = ", ".join(sorted(map(str, record))) or "none"
            raise AdapterError(
                f"{where}: missing key {key!r}; not a `vllm bench serve --save-result` file? "
                f"(keys present: {present})"
            )
    notes: list[str] = []
    metrics = blank_metrics()
    completed = count(record, "completed", where, required=True)
    failed = count(record, "failed", where)
    if failed is None and isinstance(record.get("errors"), list):
        failed = sum(1 for e in record["errors"] if e)
        notes.append("failed counted from the per-request errors (the file has no 'failed')")
    if failed is None:
        notes.append("the file has no 'failed' count (older vLLM): failed and error_rate are None")
    metrics["completed"] = completed
    metrics["failed"] = failed
    metrics["duration_s"] = number(record, "duration", where, required=True)
    metrics["request_throughput"] = number(record, "request_throughput", where, required=True)
    metrics["output_throughput"] = number(record, "output_throughput", where)
    metrics["total_throughput"] = number(record, "total_token_throughput", where)
    metrics["goodput"] = number(record, "request_goodput", where)

    percentiles = sorted({m["p"] for key in record if (m := PERCENTILE_KEY.match(str(key)))}, key=float)
    for ours, theirs in LATENCIES:
        mean = number(record, f"mean_{theirs}_ms", where)
        if mean is None:
            notes.append(
                f"no {theirs} statistics in the file (not in --percentile-metrics): {ours}_* are None"
            )
            continue
        empty = completed == 0 or (ours in ("tpot", "itl") and mean == 0.0)
        if empty:
            notes.append(f"vLLM had no {theirs} samples (it writes 0 then): {ours}_* are None")
            continue
        metrics[f"{ours}_mean_ms"] = mean
        median = number(record, f"median_{theirs}_ms", where)
        metrics[f"{ours}_p50_ms"] = number(record, f"p50_{theirs}_ms", where) if median is None else median
        for p in ("90", "95", "99"):
            metrics[f"{ours}_p{p}_ms"] = number(record, f"p{p}_{theirs}_ms", where)
    finish(metrics, gpus)

    if percentiles:
        notes.append(
            f"percentiles in the file: {', '.join('p' + p for p in percentiles)} (--metric-percentiles)"
        )
    if metrics["goodput"] is None:
        notes.append("no --goodput in the run: goodput is None")
    else:
        notes.append("goodput = vLLM request_goodput (--goodput SLOs; a one-token request counts as tpot 0)")
    notes.extend(DEFINITION_NOTES)

    load_kind, load_value = _load(record, where)
    concurrency = record.get("max_concurrency")
    if load_kind == "request_rate" and math.isfinite(load_value) and concurrency is not None:
        notes.append(f"open loop at {load_value:g} req/s, capped at {concurrency} requests in flight")
    extra: dict[str, Any] = {"scenario": record.get("label") or None, "file": str(path), "record": index}
    for key in EXTRA_KEYS:
        if record.get(key) is not None:
            extra[key] = record[key]
    errors = {"unclassified": failed} if failed else {}
    return LoadPointRecord(
        load_kind=load_kind,
        load_value=load_value,
        metrics=metrics,
        source=SOURCE,
        notes=notes,
        errors=errors,
        extra=extra,
    )


def _load(record: Mapping[str, Any], where: str) -> tuple[Literal["concurrency", "request_rate"], float]:
    raw_rate = record.get("request_rate")
    if raw_rate is None or raw_rate == "inf":
        rate = math.inf
    elif isinstance(raw_rate, int | float) and not isinstance(raw_rate, bool) and raw_rate > 0:
        rate = float(raw_rate)
    else:
        raise AdapterError(
            f"{where}: 'request_rate' must be a positive number or \"inf\", "
            f"got {type_name(raw_rate)} {raw_rate!r}"
        )
    concurrency = count(record, "max_concurrency", where)
    if math.isfinite(rate):
        return "request_rate", rate
    if concurrency:
        return "concurrency", float(concurrency)
    return "request_rate", math.inf
