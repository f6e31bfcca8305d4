"""``export`` and ``status`` over a results folder written by a real (in-process) study."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.results import ResultsStore
from reconciler.runspec import RunContext, write_status
from tests.unit.reconciler.test_study import FakeRunner, make_spec, run_study


@pytest.fixture
def results(tmp_path: Path) -> Path:
    spec = make_spec(strategy="grid", budget=8)
    run_study(spec, tmp_path, FakeRunner())
    ctx = RunContext(results_root=tmp_path, state_dir=tmp_path, base_dir=tmp_path, leaser=None)  # type: ignore[arg-type]
    write_status(spec, ResultsStore(tmp_path, spec.name), ctx, "done", "8/8 experiments")
    return tmp_path


def test_export_csv(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(results), "--format", "csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(table) == 8
    assert {r["state"] for r in table} == {"COMPLETE", "FAILED"}
    failed = next(r for r in table if r["state"] == "FAILED")
    assert failed["failure_kind"] == "oom" and failed["param.max-num-seqs"] == "64"
    ok = next(r for r in table if r["state"] == "COMPLETE")
    assert float(ok["output_throughput"]) > 0 and ok["objective.output_throughput"]


def test_export_json_to_file(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "all.json"
    assert main(["export", str(results), "--format", "json", "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    assert len(data) == 8 and all("param.block-size" in row for row in data)


def test_export_unknown_spec(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(results), "--spec", "nope"]) == 1
    assert "no results for spec(s): nope" in capsys.readouterr().err


def test_status_table_and_json(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "study-test" in out and "Ready" in out and "8/8" in out
    assert main(["status", "--results", str(results), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["state"] == "Ready" and row["done"] == 8 and row["best"]["experiment"]
