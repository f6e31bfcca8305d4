"""genai-bench folders convert into our metric names, checked against the sample's known timing.

The sample was measured against a server whose first token came after 50 ms and then one token
every 10 ms, serving 4 requests at once, with injected faults (every 5th request HTTP 500, every
7th stream cut): so TTFT must read about 50 ms, TPOT about 10 ms, E2E about 50 + 19 * 10 ms for the
20-token outputs, and the faults must show up as failed requests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from backends.adapters import AdapterError, import_results
from specs.errors import UserError
from specs.metrics import ALL_METRICS

DATA = Path(__file__).resolve().parent / "data"
SAMPLE = DATA / "genai-bench-sample"
C1 = "D100_20_text-to-text_num_concurrency_1_time_8s.json"
C4 = "D100_20_text-to-text_num_concurrency_4_time_2s.json"
LATENCY_FIELDS = ("ttft", "tpot", "e2e_latency", "output_latency")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    target = tmp_path / "exp"
    shutil.copytree(SAMPLE, target)
    return target


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _save(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=4))


def _raises(match: str, kind: str, path: Path) -> AdapterError:
    with pytest.raises(AdapterError, match=match) as info:
        import_results(kind, path)
    assert isinstance(info.value, UserError)
    return info.value


# --------------------------------------------------------------------------------------------- the sample


def test_sample_converts_to_one_point_per_concurrency_with_our_metric_names() -> None:
    points = import_results("genai-bench", SAMPLE)
    assert [(p.load_kind, p.load_value) for p in points] == [("concurrency", 1.0), ("concurrency", 4.0)]
    for p in points:
        assert p.source == "genai-bench"
        assert set(p.metrics) == set(ALL_METRICS)
        assert p.extra["scenario"] == "D(100,20)"
        assert p.extra["file"].endswith(
            f"_num_concurrency_{int(p.load_value)}_time_{'8' if p.load_value == 1 else '2'}s.json"
        )
        assert p.notes[0] == "scenario D(100,20)"


def test_sample_latencies_match_the_servers_known_timing() -> None:
    for p in import_results("genai-bench", SAMPLE):
        m = p.metrics
        # first token after 50 ms (plus client and loopback overhead of a few ms)
        assert 50.0 <= m["ttft_p50_ms"] < 60.0  # type: ignore[operator]
        assert 50.0 <= m["ttft_mean_ms"] < 60.0  # type: ignore[operator]
        # one token every 10 ms
        assert 9.8 < m["tpot_mean_ms"] < 10.5  # type: ignore[operator]
        assert 9.8 < m["tpot_p50_ms"] < 10.5  # type: ignore[operator]
        # 20 output tokens: 50 ms + 19 gaps of 10 ms
        assert 240.0 <= m["e2e_p50_ms"] < 255.0  # type: ignore[operator]
        for stat in ("mean", "p50", "p90", "p95", "p99"):
            assert m[f"ttft_{stat}_ms"] is not None and m[f"e2e_{stat}_ms"] is not None
            assert m[f"itl_{stat}_ms"] is None  # genai-bench has no inter-token latency
        assert m["ttft_p50_ms"] <= m["ttft_p90_ms"] <= m["ttft_p95_ms"] <= m["ttft_p99_ms"]  # type: ignore[operator]
        assert m["goodput"] is None and m["slo_attainment"] is None


def test_sample_counts_the_injected_faults_as_failed_requests() -> None:
    for p in import_results("genai-bench", SAMPLE):
        m = p.metrics
        completed, failed = m["completed"], m["failed"]
        assert completed is not None and failed is not None
        assert failed > 0
        assert p.errors == {"http_500": failed}
        assert m["error_rate"] == pytest.approx(failed / (completed + failed))
        # every 5th fails and every 7th is cut: 1/5 + 1/7 - 1/35 = 11/35 of the requests
        assert m["error_rate"] == pytest.approx(11 / 35, abs=0.03)
        assert any("error_rate field reads 0" in n for n in p.notes)


def test_sample_throughputs_follow_from_counts_and_duration() -> None:
    c1, c4 = import_results("genai-bench", SAMPLE)
    for p in (c1, c4):
        m = p.metrics
        assert m["request_throughput"] == pytest.approx(m["completed"] / m["duration_s"])  # type: ignore[operator]
        # D(100,20): every completed request produced 20 tokens
        assert m["output_throughput"] == pytest.approx(20 * m["request_throughput"])  # type: ignore[operator]
        assert m["total_throughput"] > m["output_throughput"]  # type: ignore[operator]
    # the server serves 4 at once, so concurrency 4 is close to 4x concurrency 1
    assert c4.metrics["request_throughput"] / c1.metrics["request_throughput"] > 3.0  # type: ignore[operator]


def test_per_gpu_metrics_only_with_a_gpu_count() -> None:
    without = import_results("genai-bench", SAMPLE)[0].metrics
    assert without["output_throughput_per_gpu"] is None and without["total_throughput_per_gpu"] is None
    with_gpus = import_results("genai-bench", SAMPLE, gpus=2)[0].metrics
    assert with_gpus["output_throughput_per_gpu"] == pytest.approx(without["output_throughput"] / 2)  # type: ignore[operator]
    assert with_gpus["total_throughput_per_gpu"] == pytest.approx(without["total_throughput"] / 2)  # type: ignore[operator]
    assert with_gpus["goodput_per_gpu"] is None  # genai-bench has no goodput


def test_the_sample_converts_to_the_numbers_docs_adapters_md_shows() -> None:
    """docs/adapters.md's table ("checked against a real run") is what this sample converts to:
    a server with known timing (TTFT 50 ms, then 10 ms a token), every 5th request HTTP 500 and
    every 7th stream cut, so the counts and the timing are known independently of the adapter."""
    c1, c4 = import_results("genai-bench", SAMPLE)
    assert (c1.load_value, c4.load_value) == (1.0, 4.0)
    for p, ttft, e2e, completed in ((c1, 53.9, 244.5, 29), (c4, 52.9, 243.8, 27)):
        m = p.metrics
        assert m["ttft_p50_ms"] == pytest.approx(ttft, abs=0.05)
        assert m["tpot_mean_ms"] == pytest.approx(10.0, abs=0.1)
        assert m["e2e_p50_ms"] == pytest.approx(e2e, abs=0.05)
        assert (m["completed"], m["failed"]) == (completed, 13)
        assert m["itl_p50_ms"] is None
        # 20 output tokens a request
        assert m["output_throughput"] == pytest.approx(20 * m["request_throughput"], rel=0.01)
    assert c4.metrics["request_throughput"] / c1.metrics["request_throughput"] == pytest.approx(3.8, abs=0.2)


# --------------------------------------------------------------------------------- units, scenarios


def _to_ms(data: dict[str, Any]) -> None:
    stats = data["aggregated_metrics"]["stats"]
    for field in LATENCY_FIELDS:
        stats[field] = {k: (v * 1000 if v is not None else None) for k, v in stats[field].items()}
    data["_time_unit"] = "ms"


def test_time_unit_ms_is_honoured_for_latencies_only(folder: Path) -> None:
    before = import_results("genai-bench", folder)
    data = _load(folder / C4)
    _to_ms(data)
    _save(folder / C4, data)
    after = import_results("genai-bench", folder)
    for name in ALL_METRICS:
        b, a = before[1].metrics[name], after[1].metrics[name]
        assert (a is None and b is None) or a == pytest.approx(b), name
    assert after[1].extra["time_unit"] == "ms"
    assert any("from ms to ms" in n for n in after[1].notes)


def test_missing_time_unit_reads_seconds_with_a_note(folder: Path) -> None:
    data = _load(folder / C1)
    del data["_time_unit"]
    _save(folder / C1, data)
    point = import_results("genai-bench", folder)[0]
    assert 50.0 <= point.metrics["ttft_p50_ms"] < 60.0  # type: ignore[operator]
    assert any("no _time_unit" in n for n in point.notes)


def _add_scenario(
    folder: Path, file_name: str, scenario: str, concurrency: int, *, unit_ms: bool = False
) -> None:
    data = _load(folder / C4)
    data["aggregated_metrics"]["scenario"] = scenario
    data["aggregated_metrics"]["num_concurrency"] = concurrency
    if unit_ms:
        _to_ms(data)
    _save(folder / file_name, data)


def test_every_traffic_scenario_is_read_and_each_is_its_own_series(folder: Path) -> None:
    _add_scenario(
        folder, "N480_240_300_150_text-to-text_num_concurrency_8_time_3s.json", "N(480,240)/(300,150)", 8
    )
    _add_scenario(
        folder,
        "U50_100_200_250_text-to-text_num_concurrency_2_time_3s.json",
        "U(50,100)/(200,250)",
        2,
        unit_ms=True,
    )
    points = import_results("genai-bench", folder)
    series = [(p.extra["scenario"], p.load_value) for p in points]
    assert series == [
        ("D(100,20)", 1.0),
        ("D(100,20)", 4.0),
        ("N(480,240)/(300,150)", 8.0),
        ("U(50,100)/(200,250)", 2.0),
    ]
    for p in points:
        assert p.notes[0] == f"scenario {p.extra['scenario']}"
        assert 50.0 <= p.metrics["ttft_p50_ms"] < 60.0  # type: ignore[operator]  # ms file converted right


def test_embedding_scenario_has_no_tpot(folder: Path) -> None:
    data = _load(folder / C1)
    agg = data["aggregated_metrics"]
    agg["scenario"] = "E(1024)"
    for field in ("tpot", "num_output_tokens", "output_latency", "output_throughput"):
        agg["stats"][field] = dict.fromkeys(agg["stats"][field], 0)
    _save(folder / "E1024_text-to-embeddings_num_concurrency_1_time_8s.json", data)
    embed = next(p for p in import_results("genai-bench", folder) if p.extra["scenario"] == "E(1024)")
    assert all(embed.metrics[f"tpot_{s}_ms"] is None for s in ("mean", "p50", "p90", "p95", "p99"))
    assert embed.metrics["ttft_mean_ms"] is not None
    assert embed.extra["task"] == "text-to-embeddings"


def test_scenario_and_level_come_from_aggregated_metrics_not_the_file_name(folder: Path) -> None:
    data = _load(folder / C4)
    data["aggregated_metrics"]["scenario"] = "N(100,10)/(20,2)"
    _save(folder / C4, data)
    point = next(p for p in import_results("genai-bench", folder) if p.load_value == 4.0)
    assert point.extra["scenario"] == "N(100,10)/(20,2)"

    data["aggregated_metrics"]["num_concurrency"] = 6
    _save(folder / C4, data)
    point = next(p for p in import_results("genai-bench", folder) if p.extra["scenario"].startswith("N"))
    assert point.load_value == 6.0
    assert any("file name says num_concurrency 4" in n for n in point.notes)


def test_scenario_falls_back_to_the_file_name(folder: Path) -> None:
    data = _load(folder / C1)
    data["aggregated_metrics"]["scenario"] = None
    _save(folder / C1, data)
    point = next(p for p in import_results("genai-bench", folder) if p.load_value == 1.0)
    assert point.extra["scenario"] == "D100_20"
    assert any("taken from the file name" in n for n in point.notes)


def test_request_rate_and_batch_size_iterations(folder: Path) -> None:
    data = _load(folder / C1)
    data["aggregated_metrics"].update(iteration_type="request_rate", request_rate=2.5)
    _save(folder / C1, data)
    data = _load(folder / C4)
    data["aggregated_metrics"].update(
        iteration_type="batch_size", batch_size=16, num_concurrency=1, scenario="E(512)"
    )
    (folder / C4).unlink()
    _save(folder / "E512_text-to-embeddings_batch_size_16_time_2s.json", data)
    by_scenario = {p.extra["scenario"]: p for p in import_results("genai-bench", folder)}
    rate = by_scenario["D(100,20)"]
    assert (rate.load_kind, rate.load_value) == ("request_rate", 2.5)
    batch = by_scenario["E(512)"]
    assert (batch.load_kind, batch.load_value, batch.extra["batch_size"]) == ("concurrency", 1.0, 16)


# --------------------------------------------------------------------------------------------- bad input


def test_missing_folder(tmp_path: Path) -> None:
    err = _raises("folder not found", "genai-bench", tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err)


def test_a_file_instead_of_a_folder() -> None:
    _raises("got a file", "genai-bench", SAMPLE / C1)


def test_folder_without_result_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    err = _raises("no genai-bench result files", "genai-bench", tmp_path)
    assert "experiment_metadata.json" in str(err)


def test_parent_folder_hints_at_the_experiment_subfolders(tmp_path: Path) -> None:
    shutil.copytree(SAMPLE, tmp_path / "run-a")
    err = _raises("no genai-bench result files", "genai-bench", tmp_path)
    assert "run-a" in str(err)


def test_invalid_json_is_located(folder: Path) -> None:
    (folder / C1).write_text('{"aggregated_metrics": {\n  "scenario": "D(100,20)",,\n}}')
    err = _raises("invalid JSON at line 2", "genai-bench", folder)
    assert C1 in str(err)


def test_missing_aggregated_metrics(folder: Path) -> None:
    _save(folder / C1, {"individual_request_metrics": []})
    err = _raises("missing key 'aggregated_metrics'", "genai-bench", folder)
    assert C1 in str(err)


@pytest.mark.parametrize("key", ["stats", "num_completed_requests", "run_duration", "requests_per_second"])
def test_missing_required_aggregated_keys(folder: Path, key: str) -> None:
    data = _load(folder / C4)
    del data["aggregated_metrics"][key]
    _save(folder / C4, data)
    err = _raises(f"missing key '{key}'", "genai-bench", folder)
    assert C4 in str(err)


def test_a_string_where_a_number_belongs(folder: Path) -> None:
    data = _load(folder / C4)
    data["aggregated_metrics"]["stats"]["ttft"]["p90"] = "fast"
    _save(folder / C4, data)
    err = _raises("'p90' must be a number", "genai-bench", folder)
    assert "stats.ttft" in str(err) and C4 in str(err)


def test_unknown_time_unit(folder: Path) -> None:
    data = _load(folder / C1)
    data["_time_unit"] = "us"
    _save(folder / C1, data)
    _raises("'_time_unit' is 'us'", "genai-bench", folder)


def test_unknown_iteration_type(folder: Path) -> None:
    data = _load(folder / C1)
    data["aggregated_metrics"]["iteration_type"] = "tokens_per_second"
    _save(folder / C1, data)
    _raises("unknown iteration_type", "genai-bench", folder)


def test_two_files_for_the_same_point_are_refused(folder: Path) -> None:
    shutil.copy(folder / C4, folder / C4.replace("time_2s", "time_60s"))
    err = _raises("two result files for scenario D\\(100,20\\)", "genai-bench", folder)
    assert "time_60s" in str(err)


def test_invalid_metadata_file(folder: Path) -> None:
    (folder / "experiment_metadata.json").write_text("[1, 2")
    err = _raises("invalid JSON", "genai-bench", folder)
    assert "experiment_metadata.json" in str(err)


def test_unknown_kind_and_bad_gpu_count() -> None:
    with pytest.raises(AdapterError, match="did you mean 'genai-bench'"):
        import_results("genai_bench", SAMPLE)
    with pytest.raises(AdapterError, match="gpus must be"):
        import_results("genai-bench", SAMPLE, gpus=0)
