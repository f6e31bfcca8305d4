"""What both adapters share: the error kind, strict JSON reading, typed field access, and the
metrics that follow from others (error rate, per-GPU rates).

Other tools' files are input we do not control, so every access is checked: a missing key, a
string where a number belongs, a file that is not JSON all become an :class:`AdapterError` that
names the file and the key, never a ``KeyError`` traceback.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from backends.jsontypes import json_type_name
from specs.errors import AdapterError
from specs.metrics import ALL_METRICS

#: largest result file we read; real ones are kilobytes (detailed vLLM files a few megabytes)
MAX_BYTES = 256 * 1024 * 1024


def read_text(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_BYTES:
            raise AdapterError(f"{path}: larger than {MAX_BYTES:,} bytes; not a benchmark result file")
        data = path.read_bytes()
    except FileNotFoundError:
        raise AdapterError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise AdapterError(f"{path}: is a folder, expected a JSON file") from None
    except OSError as exc:
        raise AdapterError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AdapterError(
            f"{path}: not UTF-8 text (byte offset {exc.start}); not a JSON result file"
        ) from None


def load_json(path: Path) -> Any:
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise AdapterError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None


def mapping(value: Any, where: str, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise AdapterError(f"{where}: {what} must be a JSON object, got {type_name(value)}")
    return value


def number(obj: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> float | None:
    """``obj[key]`` as a float; ``None`` when absent, null or NaN (unless required)."""
    if key not in obj or obj[key] is None:
        if required:
            present = ", ".join(sorted(map(str, obj))) or "none"
            raise AdapterError(f"{where}: missing key {key!r} (keys present: {present})")
        return None
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AdapterError(f"{where}: {key!r} must be a number, got {type_name(value)} {value!r}")
    result = float(value)
    if math.isnan(result):
        if required:
            raise AdapterError(f"{where}: {key!r} is NaN")
        return None
    return result


def count(obj: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> int | None:
    value = number(obj, key, where, required=required)
    if value is None:
        return None
    if value < 0 or not value.is_integer():
        raise AdapterError(f"{where}: {key!r} must be a whole number >= 0, got {obj[key]!r}")
    return int(value)


def blank_metrics() -> dict[str, float | None]:
    """Every metric name, unknown: an adapter fills what its source gives and leaves the rest None."""
    return dict.fromkeys(ALL_METRICS)


def finish(metrics: dict[str, float | None], gpus: int | None) -> dict[str, float | None]:
    """Fill the metrics that follow from others: error rate and, when the GPU count is known,
    the per-GPU rates (never guessed: other tools' files do not say how many GPUs served)."""
    completed, failed = metrics["completed"], metrics["failed"]
    if completed is not None and failed is not None and completed + failed > 0:
        metrics["error_rate"] = failed / (completed + failed)
    if gpus is not None:
        for base in ("output_throughput", "total_throughput", "goodput"):
            value = metrics[base]
            metrics[f"{base}_per_gpu"] = value / gpus if value is not None else None
    return metrics


def check_gpus(gpus: int | None) -> None:
    if gpus is not None and (isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1):
        raise AdapterError(f"gpus must be a whole number >= 1, got {gpus!r}")


type_name = json_type_name
