"""``autotuner run`` end to end on the real sim engine: records, best artifacts, Pareto set,
broken engines, and crash safety under SIGKILL."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from specs.ranking import pareto_front
from specs.records import ExperimentRecord
from tests.e2e.helpers import autotuner, records, sim_spec, wait_no_engines

pytestmark = pytest.mark.slow


def test_tpe_study_records_and_best_artifacts(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(sim_spec())
    proc = autotuner("run", "spec.yaml", "--results", "results", cwd=tmp_path)
    assert "done: " in proc.stderr
    recs = records(tmp_path / "results", "e2e")
    assert [r["id"] for r in recs] == ["0001", "0002", "0003", "0004", "0005", "0006"]
    assert len({r["configHash"] for r in recs}) == 6
    complete = [r for r in recs if r["state"] == "COMPLETE"]
    assert len(complete) >= 4
    for r in complete:
        assert r["simulated"] is True
        assert r["command"][:3] == [sys.executable, "-m", "backends.sim"]
        assert r["workload"]["fingerprint"]
        assert [p["load_value"] for p in r["loadPoints"]] == [2.0, 16.0]
        for p in r["loadPoints"]:
            m = p["metrics"]
            assert m["completed"] == 24 and m["failed"] == 0
            assert m["ttft_p90_ms"] > 0 and m["output_throughput"] > 0
        assert set(r["timings"]) >= {"deploy_s", "ready_s", "benchmark_s", "teardown_s", "total_s"}
        assert r["objectives"][0]["metric"] == "output_throughput_per_gpu"
    best_dir = tmp_path / "results" / "e2e" / "best"
    args = json.loads((best_dir / "engine-args.json").read_text())
    best = max((r for r in complete if r["feasible"]), key=lambda r: r["objectives"][0]["value"])
    assert args["experiment"] == best["id"]
    command = (best_dir / "command.sh").read_text().strip().splitlines()[-1]
    argv = shlex.split(command)
    assert argv[:3] == best["command"][:3]
    # the best command line is the measured one, but listening on 0.0.0.0:8000
    assert argv[argv.index("--port") + 1] == "8000"
    status = json.loads((tmp_path / "results" / "e2e" / "status.json").read_text())
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert status["counts"]["total"] == 6
    assert wait_no_engines(str(tmp_path)) == []


def test_the_best_command_starts_the_engine_again(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(sim_spec(budget=2, strategy="random"))
    autotuner("run", "spec.yaml", "--results", "results", cwd=tmp_path)
    argv = shlex.split((tmp_path / "results" / "e2e" / "best" / "command.sh").read_text().splitlines()[-1])
    argv[argv.index("--port") + 1] = "0"
    argv[argv.index("--host") + 1] = "127.0.0.1"
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        try:
            line = ""
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and "http://" not in line:
                line = proc.stdout.readline() if proc.stdout else ""
            assert "http://" in line, "the best command did not start a server"
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_two_objective_study_gives_a_pareto_set(tmp_path: Path) -> None:
    objectives = (
        "    - {metric: output_throughput_per_gpu, direction: maximize}\n"
        "    - {metric: ttft_p90_ms, direction: minimize}"
    )
    (tmp_path / "spec.yaml").write_text(
        sim_spec(name="pareto", strategy="nsga2", budget=6, objectives=objectives)
    )
    autotuner("run", "spec.yaml", "--results", "results", cwd=tmp_path)
    recs = [ExperimentRecord.model_validate(r) for r in records(tmp_path / "results", "pareto")]
    front = pareto_front(recs)
    assert front
    listed = json.loads((tmp_path / "results" / "pareto" / "best" / "pareto.json").read_text())
    assert [p["experiment"] for p in listed] == [r.id for r in front]
    # no member of the front is dominated by any feasible experiment
    for r in front:
        tput, ttft = (o.value for o in r.objectives)
        assert not any(
            (o[0].value or 0) >= (tput or 0)
            and (o[1].value or 0) <= (ttft or 0)
            and ((o[0].value or 0) > (tput or 0) or (o[1].value or 0) < (ttft or 0))
            for o in (x.objectives for x in recs if x.state == "COMPLETE" and x.feasible)
        )


def test_broken_engines_fail_with_reasons_and_the_study_goes_on(tmp_path: Path) -> None:
    parameters = "      fault: {values: [crash-at-start, hang-at-start, crash-after-requests, none]}"
    spec = sim_spec(name="faults", strategy="grid", budget=4, parameters=parameters, args=", fault-after: 6")
    spec = spec.replace("  search:\n", "  backend: {kind: local, startupTimeout: 4s}\n  search:\n")
    (tmp_path / "spec.yaml").write_text(spec)
    autotuner("run", "spec.yaml", "--results", "results", cwd=tmp_path)
    by_fault = {r["config"]["fault"]: r for r in records(tmp_path / "results", "faults")}
    assert by_fault["none"]["state"] == "COMPLETE"
    assert by_fault["crash-at-start"]["failure"]["kind"] == "startup_crash"
    assert by_fault["hang-at-start"]["failure"]["kind"] == "readiness_timeout"
    assert by_fault["crash-after-requests"]["failure"]["kind"] == "crashed"
    for fault in ("crash-at-start", "hang-at-start", "crash-after-requests"):
        failure = by_fault[fault]["failure"]
        assert by_fault[fault]["state"] == "FAILED"
        assert failure["reason"] and failure["log_tail"]
    assert wait_no_engines(str(tmp_path)) == []


def test_out_of_memory_is_classified(tmp_path: Path) -> None:
    spec = sim_spec(name="oom", strategy="grid", budget=2, parameters="      max-num-seqs: {values: [8, 16]}")
    spec = spec.replace("model: {id: llama-3-8b}", "model: {id: llama-3-70b}").replace(
        "gpu: h100", "gpu: rtx-4090"
    )
    (tmp_path / "spec.yaml").write_text(spec)
    proc = autotuner("run", "spec.yaml", "--results", "results", cwd=tmp_path, check=False)
    assert proc.returncode == 1  # nothing completed: no answer
    for r in records(tmp_path / "results", "oom"):
        assert r["state"] == "FAILED"
        assert r["failure"]["kind"] == "oom"
        assert "out of memory" in r["failure"]["reason"].lower()


CRASH_POINTS = ["engine_started", "load_point_done:3", "record_written:2", "atomic_replace:4"]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_sigkill_anywhere_loses_nothing(tmp_path: Path, point: str) -> None:
    (tmp_path / "spec.yaml").write_text(sim_spec(name="crash", strategy="tpe", budget=5))
    results = tmp_path / "results"
    crashed = autotuner(
        "run",
        "spec.yaml",
        "--results",
        "results",
        cwd=tmp_path,
        env={"AUTOTUNER_CRASH_AT": point},
        check=False,
    )
    assert crashed.returncode == -9, crashed.stderr
    # the kernel kills the engine with its parent (parent-death signal)
    assert wait_no_engines(str(tmp_path)) == []
    before = {p.name: p.read_bytes() for p in (results / "crash" / "experiments").glob("[0-9]*.json")}
    autotuner("run", "spec.yaml", "--results", "results", cwd=tmp_path)
    after = {p.name: p.read_bytes() for p in (results / "crash" / "experiments").glob("[0-9]*.json")}
    # completed experiments are all kept, byte for byte, and never re-run
    for name, data in before.items():
        assert after[name] == data
    recs = records(results, "crash")
    assert [r["id"] for r in recs] == [f"{i:04d}" for i in range(1, 6)]
    assert len({r["configHash"] for r in recs}) == 5
    assert not list((results / "crash").rglob("*.tmp"))
    assert wait_no_engines(str(tmp_path)) == []
    # nothing left to do
    again = autotuner("run", "spec.yaml", "--results", "results", cwd=tmp_path)
    assert "0/5" not in again.stderr
    assert len(records(results, "crash")) == 5
