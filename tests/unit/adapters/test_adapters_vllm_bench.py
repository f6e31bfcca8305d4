"""``vllm bench serve --save-result`` files convert into our metric names; nothing is invented."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from backends.adapters import AdapterError, import_results
from specs.errors import UserError
from specs.metrics import ALL_METRICS

DATA = Path(__file__).resolve().parent / "data" / "vllm-bench"
DEFAULT = DATA / "openai-infqps-concurrency8-Qwen2.5-7B-Instruct-20250612-101500.json"
RATE4 = DATA / "rate4-goodput.json"
APPENDED = DATA / "appended.json"
STATS = ("mean", "p50", "p90", "p95", "p99")


def _record(path: Path = DEFAULT) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _write(tmp_path: Path, record: Any, name: str = "result.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(record))
    return path


def test_default_flags_give_mean_median_and_p99_only() -> None:
    [point] = import_results("vllm-bench", DEFAULT)
    raw = _record()
    m = point.metrics
    assert point.source == "vllm-bench"
    assert set(m) == set(ALL_METRICS)
    assert (point.load_kind, point.load_value) == ("concurrency", 8.0)
    for ours in ("ttft", "tpot", "itl"):
        assert m[f"{ours}_mean_ms"] == raw[f"mean_{ours}_ms"]
        assert m[f"{ours}_p50_ms"] == raw[f"median_{ours}_ms"]
        assert m[f"{ours}_p99_ms"] == raw[f"p99_{ours}_ms"]
        assert m[f"{ours}_p90_ms"] is None and m[f"{ours}_p95_ms"] is None
    # e2el is not in the default --percentile-metrics
    assert all(m[f"e2e_{s}_ms"] is None for s in STATS)
    assert any("no e2el statistics" in n for n in point.notes)
    assert m["request_throughput"] == raw["request_throughput"]
    assert m["output_throughput"] == raw["output_throughput"]
    assert m["total_throughput"] == raw["total_token_throughput"]
    assert (m["completed"], m["failed"], m["error_rate"]) == (200, 0, 0.0)
    assert m["duration_s"] == raw["duration"]
    assert m["goodput"] is None
    assert any("no --goodput" in n for n in point.notes)
    assert point.errors == {}
    assert point.extra["file"] == str(DEFAULT)
    assert point.extra["model_id"] == "Qwen/Qwen2.5-7B-Instruct"


def test_all_percentiles_e2e_goodput_and_open_loop_rate() -> None:
    [point] = import_results("vllm-bench", RATE4, gpus=2)
    raw = _record(RATE4)
    m = point.metrics
    assert (point.load_kind, point.load_value) == ("request_rate", 4.0)
    for ours, theirs in (("ttft", "ttft"), ("tpot", "tpot"), ("itl", "itl"), ("e2e", "e2el")):
        assert m[f"{ours}_mean_ms"] == raw[f"mean_{theirs}_ms"]
        for p in ("50", "90", "95", "99"):
            assert m[f"{ours}_p{p}_ms"] == raw[f"p{p}_{theirs}_ms"]
    assert m["goodput"] == raw["request_goodput"]
    assert m["goodput_per_gpu"] == pytest.approx(raw["request_goodput"] / 2)
    assert m["output_throughput_per_gpu"] == pytest.approx(raw["output_throughput"] / 2)
    assert m["error_rate"] == pytest.approx(3 / 300)
    assert point.errors == {"unclassified": 3}
    assert point.extra["scenario"] == "rate4"
    assert point.extra["max_concurrency"] == 16
    assert any("open loop at 4 req/s, capped at 16" in n for n in point.notes)
    assert any("p50, p90, p95, p99" in n for n in point.notes)


def test_appended_runs_are_separate_load_points_sorted_by_load() -> None:
    points = import_results("vllm-bench", APPENDED)
    assert [(p.load_kind, p.load_value) for p in points] == [("concurrency", 1.0), ("concurrency", 4.0)]
    assert [p.extra["record"] for p in points] == [0, 1]


def test_a_json_array_of_runs(tmp_path: Path) -> None:
    first, second = _record(DEFAULT), _record(RATE4)
    points = import_results("vllm-bench", _write(tmp_path, [second, first]))
    assert [(p.load_kind, p.load_value) for p in points] == [("concurrency", 8.0), ("request_rate", 4.0)]


def test_infinite_rate_without_concurrency_is_all_at_once(tmp_path: Path) -> None:
    record = _record()
    record["max_concurrency"] = None
    [point] = import_results("vllm-bench", _write(tmp_path, record))
    assert point.load_kind == "request_rate" and math.isinf(point.load_value)


def test_vllms_zeros_for_empty_samples_become_none(tmp_path: Path) -> None:
    record = _record()
    record.update(completed=0, failed=200, request_throughput=0.0)
    for key in list(record):
        if key.endswith("_ms"):
            record[key] = 0.0
    [point] = import_results("vllm-bench", _write(tmp_path, record))
    assert all(point.metrics[f"{b}_{s}_ms"] is None for b in ("ttft", "tpot", "itl", "e2e") for s in STATS)
    assert point.metrics["error_rate"] == 1.0

    record = _record()  # every request produced one token: no tpot / itl samples
    for key in list(record):
        if key.endswith(("_tpot_ms", "_itl_ms")):
            record[key] = 0.0
    [point] = import_results("vllm-bench", _write(tmp_path, record))
    assert point.metrics["tpot_mean_ms"] is None and point.metrics["itl_p99_ms"] is None
    assert point.metrics["ttft_mean_ms"] == record["mean_ttft_ms"]


def test_older_files_without_failed(tmp_path: Path) -> None:
    record = _record()
    del record["failed"]
    [point] = import_results("vllm-bench", _write(tmp_path, record))
    assert point.metrics["failed"] is None and point.metrics["error_rate"] is None
    record["errors"] = ["", "", "ClientPayloadError: cut", ""]
    [point] = import_results("vllm-bench", _write(tmp_path, record))
    assert point.metrics["failed"] == 1
    assert any("counted from the per-request errors" in n for n in point.notes)


def test_nan_reads_as_unknown(tmp_path: Path) -> None:
    record = _record()
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(record).replace(str(record["p99_itl_ms"]), "NaN"))
    [point] = import_results("vllm-bench", path)
    assert point.metrics["itl_p99_ms"] is None


# --------------------------------------------------------------------------------------------- bad input


def _raises(match: str, path: Path) -> AdapterError:
    with pytest.raises(AdapterError, match=match) as info:
        import_results("vllm-bench", path)
    assert isinstance(info.value, UserError)
    assert str(path) in str(info.value)
    return info.value


def test_missing_file(tmp_path: Path) -> None:
    _raises("file not found", tmp_path / "missing.json")


def test_a_folder_instead_of_a_file(tmp_path: Path) -> None:
    _raises("got a folder", tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text("  \n")
    _raises("the file is empty", path)


def test_invalid_json_is_located(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"duration": 1.0,\n "completed": }')
    _raises("invalid JSON at line 2", path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"label": "caf\xe9"}')
    _raises("not UTF-8", path)


@pytest.mark.parametrize("key", ["duration", "completed", "request_throughput"])
def test_missing_key(tmp_path: Path, key: str) -> None:
    record = _record()
    del record[key]
    err = _raises(f"missing key '{key}'", _write(tmp_path, record))
    assert "keys present" in str(err)


def test_wrong_types(tmp_path: Path) -> None:
    record = _record()
    record["mean_ttft_ms"] = "12 ms"
    _raises("'mean_ttft_ms' must be a number", _write(tmp_path, record))
    record = _record()
    record["completed"] = 2.5
    _raises("'completed' must be a whole number", _write(tmp_path, record))
    record = _record()
    record["request_rate"] = "fast"
    _raises("'request_rate' must be a positive number", _write(tmp_path, record))


def test_a_record_that_is_not_an_object(tmp_path: Path) -> None:
    err = _raises("must be a JSON object", _write(tmp_path, [_record(), 3]))
    assert "record 2" in str(err)
