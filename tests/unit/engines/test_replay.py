"""The replay engine: the table format (errors located), answers, a results folder as a table,
and whole studies run through ``run_spec`` on recorded data."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from backends.deploy.leases import GpuLeaser
from backends.engines.replay import check_against
from backends.engines.replay_table import load_table, parse_table
from reconciler.replay import ReplayExecutor
from reconciler.results import ResultsStore
from reconciler.runspec import RunContext, run_spec
from specs import load_spec_text
from specs.errors import ReplayTableError, UserError

HEADER = (
    "max-num-seqs,enable-chunked-prefill,concurrency,state,failure_kind,failure_reason,default,"
    "output_throughput_per_gpu,ttft_p90_ms,notes\n"
)
TABLE = (
    HEADER
    + """64,true,1,COMPLETE,,,false,100,50,ignored column
64,true,4,COMPLETE,,,false,300,120,
128,true,1,COMPLETE,,,true,110,40,
128,true,4,COMPLETE,,,true,350,900,
256,true,1,COMPLETE,,,false,105,45,
256,true,4,COMPLETE,,,false,380,200,
64,false,,FAILED,startup_crash,max_num_batched_tokens is smaller than max_model_len,false,,,
"""
)

SPEC = """
apiVersion: autotuner/v1
kind: TuningSpec
metadata: {name: replayed}
spec:
  model: {id: llama-3-8b}
  engine: {name: replay, args: {table: TABLE}}
  search:
    strategy: grid
    maxExperiments: 10
    parameters:
      max-num-seqs: {values: [64, 128, 256, 512]}
      enable-chunked-prefill: {values: [true, false]}
  workload:
    dataset: {kind: synthetic, input: {mean: 10}, output: {mean: 10}}
    load: {concurrency: [1, 4]}
  slo:
    ttft_p90_ms: {max: 500}
  objectives:
    - {metric: output_throughput_per_gpu, direction: maximize}
"""


def spec_text(table: str = "table.csv", extra: str = "") -> str:
    return SPEC.replace("TABLE", table).replace("  objectives:", extra + "  objectives:")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("a,concurrency\n1,1\n", "t.csv:1: state:"),
        ("a,state\n1,COMPLETE\n", "t.csv:1: the table needs exactly one load column"),
        ("a,concurrency,state\n1,1,COMPLETE\n2,1,DONE\n", "t.csv:3: state: 'DONE'"),
        (
            "a,concurrency,state,ttft_p90_ms\n1,1,COMPLETE,fast\n",
            "t.csv:2: ttft_p90_ms: 'fast' is not a number",
        ),
        ("a,concurrency,state\n1,1,COMPLETE,extra\n", "t.csv:2: the row has 4 cells, the header 3"),
        ("a,concurrency,state\n1,,COMPLETE\n", "t.csv:2: concurrency: a COMPLETE row needs its load level"),
        ("a,a,concurrency,state\n", "t.csv:1: a: the column appears twice"),
        ("a,concurrency,state,default\n1,1,COMPLETE,yes\n", "t.csv:2: default: 'yes'"),
    ],
)
def test_format_errors_are_located(text: str, where: str) -> None:
    with pytest.raises(ReplayTableError) as err:
        parse_table(text, "t.csv")
    assert str(err.value).startswith(where), str(err.value)


def test_answers_rows_failures_and_missing_configurations(tmp_path: Path) -> None:
    (tmp_path / "table.csv").write_text(TABLE)
    spec = load_spec_text(spec_text()).spec
    table = load_table(tmp_path / "table.csv", label="table.csv")
    assert table.param_columns == ["max-num-seqs", "enable-chunked-prefill", "notes"]
    ex = ReplayExecutor(spec, table)
    assert ex.default_config() == {"max-num-seqs": 128, "enable-chunked-prefill": True}
    cancel = threading.Event()

    m = ex({"max-num-seqs": 256, "enable-chunked-prefill": True}, baseline=False, cancel=cancel)
    assert m.state == "COMPLETE"
    assert [p.load_value for p in m.load_points] == [1.0, 4.0]
    assert m.load_points[1].metrics["output_throughput_per_gpu"] == 380.0
    assert m.load_points[0].notes[0] == "replayed from table.csv:6"

    failed = ex({"max-num-seqs": 64, "enable-chunked-prefill": False}, baseline=False, cancel=cancel)
    assert failed.state == "FAILED" and failed.failure is not None
    assert failed.failure.kind == "startup_crash"
    assert "smaller than max_model_len" in failed.failure.reason

    missing = ex({"max-num-seqs": 512, "enable-chunked-prefill": True}, baseline=False, cancel=cancel)
    assert missing.state == "FAILED" and missing.failure is not None
    assert missing.failure.kind == "not_measured"
    assert missing.failure.reason == (
        "configuration enable-chunked-prefill=true, max-num-seqs=512 is not in table.csv"
    )

    baseline = ex({}, baseline=True, cancel=cancel)
    assert baseline.load_points[0].metrics["ttft_p90_ms"] == 40.0


def test_spec_checked_against_the_table_columns_and_levels(tmp_path: Path) -> None:
    (tmp_path / "table.csv").write_text(TABLE)
    text = (
        spec_text()
        .replace("max-num-seqs: {values", "max-num-seq: {values")
        .replace("concurrency: [1, 4]", "concurrency: [1, 8]")
    )
    loaded = load_spec_text(text, "spec.yaml")
    problems = [str(p) for p in check_against(loaded, load_table(tmp_path / "table.csv", label="table.csv"))]
    assert any(
        p.startswith("spec.yaml:")
        and "spec.search.parameters.max-num-seq: 'max-num-seq' is not a column" in p
        and "did you mean 'max-num-seqs'" in p
        for p in problems
    ), problems
    assert any(
        "spec.workload.load.concurrency[1]: concurrency=8 is not a level of table.csv" in p for p in problems
    )


def _ctx(root: Path) -> RunContext:
    return RunContext(
        results_root=root / "results", state_dir=root / "state", base_dir=root, leaser=GpuLeaser([])
    )


def test_a_study_replays_and_its_results_folder_is_a_table(tmp_path: Path) -> None:
    (tmp_path / "table.csv").write_text(TABLE)
    outcome = run_spec(load_spec_text(spec_text()), _ctx(tmp_path))
    assert outcome is not None
    records = ResultsStore(tmp_path / "results", "replayed").experiments()
    # the baseline is the table's default, told as a grid point: not measured again
    assert records[0].baseline and records[0].config == {"max-num-seqs": 128, "enable-chunked-prefill": True}
    assert len({r.config_hash for r in records}) == len(records)
    assert {r.state for r in records} == {"COMPLETE", "FAILED"}
    assert outcome.best is not None and outcome.best.config["max-num-seqs"] == 256

    # the first study's results folder, as a table for a second one
    second = tmp_path / "second"
    second.mkdir()
    shutil.copytree(tmp_path / "results" / "replayed", second / "earlier")
    table = load_table(second / "earlier", label="earlier")
    assert table.default_params() == {"max-num-seqs": 128, "enable-chunked-prefill": True}
    text = (
        spec_text("earlier")
        .replace("name: replayed", "name: again")
        .replace("strategy: grid", "strategy: tpe")
    )
    again = run_spec(load_spec_text(text), _ctx(second))
    assert again is not None and again.best is not None
    assert again.best.config == outcome.best.config
    assert again.best.summary == outcome.best.summary


def test_a_table_outside_the_repository_is_refused(tmp_path: Path) -> None:
    loaded = load_spec_text(spec_text("../table.csv"))
    with pytest.raises(UserError, match="inside the spec repository"):
        run_spec(loaded, _ctx(tmp_path))
    outside = tmp_path / "outside.csv"
    outside.write_text(TABLE)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "table.csv").symlink_to(outside)  # a link in the repository to a host file
    with pytest.raises(UserError, match="leads outside the spec repository"):
        run_spec(load_spec_text(spec_text()), _ctx(repo))
