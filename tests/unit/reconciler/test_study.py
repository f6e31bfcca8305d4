"""The study loop with an in-process executor: Optuna wiring, budget, failures, reuse, resume.

The executor here is a deterministic function of the configuration (a stand-in for the engine
runner, injected through the Study's constructor), so these tests check the study's own logic;
the end-to-end tests run the real sim engine.
"""

from __future__ import annotations

import threading
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from reconciler.results import ResultsStore
from reconciler.study import Study
from reconciler.study.contract import Measurement
from specs import load_spec_text
from specs.model import TuningSpec
from specs.records import FailureRecord, LoadPointRecord
from specs.space import Config

SPEC = """
apiVersion: autotuner/v1
kind: TuningSpec
metadata: {name: study-test}
spec:
  model: {id: llama-3-8b}
  engine: {name: sim}
  search:
    strategy: STRATEGY
    maxExperiments: BUDGET
    includeDefault: false
    seed: 1
    parameters:
      max-num-seqs: {values: [8, 16, 32, 64]}
      block-size: {values: [16, 32]}
  workload:
    dataset: {kind: synthetic, input: {mean: 10}, output: {mean: 10}}
    load: {concurrency: [1, 4]}
  slo:
    ttft_p90_ms: {max: 500}
  objectives:
    - {metric: output_throughput, direction: maximize}
"""


def make_spec(strategy: str = "tpe", budget: int = 6, extra: str = "") -> TuningSpec:
    text = SPEC.replace("STRATEGY", strategy).replace("BUDGET", str(budget))
    if extra:
        text = text.replace("  objectives:", extra + "  objectives:")
    return load_spec_text(text).spec


class FakeRunner:
    """Deterministic 'measurement': throughput grows with max-num-seqs, TTFT too; 64 with
    block-size 32 'crashes'."""

    def __init__(self) -> None:
        self.calls: list[Config] = []
        self.lock = threading.Lock()

    def __call__(self, config: Config, *, baseline: bool, cancel: threading.Event) -> Measurement:
        with self.lock:
            self.calls.append(dict(config))
        seqs = int(config.get("max-num-seqs", 16))
        if seqs == 64 and config.get("block-size") == 32:
            return Measurement(state="FAILED", failure=FailureRecord(kind="oom", reason="out of memory"))
        points = [
            LoadPointRecord(
                load_kind="concurrency",
                load_value=c,
                metrics={
                    "output_throughput": seqs * c * 10.0,
                    "ttft_p90_ms": seqs * c * 2.0,
                    "completed": 10,
                },
            )
            for c in (1, 4)
        ]
        return Measurement(state="COMPLETE", load_points=points, engine_flags=dict(config))


def run_study(spec: TuningSpec, root: Path, runner: FakeRunner, stop: threading.Event | None = None) -> Study:
    store = ResultsStore(root, spec.name)
    study = Study(
        spec, store, runner, workload_fingerprint="fp", workload_info={}, engine_flags_of=dict, stop=stop
    )
    study.run()
    return study


def test_tpe_study_runs_the_budget_and_tells_failures(tmp_path: Path) -> None:
    spec = make_spec()
    runner = FakeRunner()
    run_study(spec, tmp_path, runner)
    store = ResultsStore(tmp_path, spec.name)
    records = store.experiments()
    assert [r.id for r in records] == [f"{i:04d}" for i in range(1, 7)]
    assert len({r.config_hash for r in records}) == 6  # identical configurations measured once
    assert len(runner.calls) == 6
    study = optuna.load_study(
        study_name=f"{spec.name}-{spec.generation()}",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(store.journal))
        ),
    )
    by_trial = {t.number: t for t in study.trials}
    for r in records:
        t = by_trial[r.trial]  # type: ignore[index]
        if r.state == "FAILED":
            # a configuration failure is learned: an infeasible PRUNED trial, never a score
            assert t.state == TrialState.PRUNED and t.values is None
            assert t.constraints["failed"] > 0
        else:
            assert t.state == TrialState.COMPLETE
            assert t.values == [r.objectives[0].value]


def test_summary_respects_the_hard_slo(tmp_path: Path) -> None:
    spec = make_spec(strategy="grid", budget=8)
    run_study(spec, tmp_path, FakeRunner())
    for r in ResultsStore(tmp_path, spec.name).experiments():
        if r.state != "COMPLETE":
            continue
        seqs = r.config["max-num-seqs"]
        # concurrency 4 gives TTFT seqs*8 ms: within 500 ms only for seqs <= 62
        expected_index = 1 if seqs * 8 <= 500 else 0
        assert r.summary_index == expected_index
        assert r.feasible is (seqs * 2 <= 500)


def test_grid_covers_the_space_once_then_stops(tmp_path: Path) -> None:
    spec = make_spec(strategy="grid", budget=50)
    runner = FakeRunner()
    run_study(spec, tmp_path, runner)
    assert len(runner.calls) == 8
    assert sorted((c["max-num-seqs"], c["block-size"]) for c in runner.calls) == sorted(
        (s, b) for s in (8, 16, 32, 64) for b in (16, 32)
    )
    # a second run has nothing left to do
    run_study(spec, tmp_path, runner)
    assert len(runner.calls) == 8


def test_rerun_is_idempotent_and_new_generation_reuses(tmp_path: Path) -> None:
    spec = make_spec(strategy="grid", budget=8)
    runner = FakeRunner()
    run_study(spec, tmp_path, runner)
    run_study(spec, tmp_path, runner)
    assert len(runner.calls) == 8
    # a new generation (changed SLO) re-scores the same configurations without running them
    changed = make_spec(strategy="grid", budget=8).model_copy()
    text_spec = load_spec_text(
        SPEC.replace("STRATEGY", "grid").replace("BUDGET", "8").replace("max: 500", "max: 100")
    ).spec
    assert text_spec.generation() != changed.generation()
    run_study(text_spec, tmp_path, runner)
    assert len(runner.calls) == 8
    new = [
        r for r in ResultsStore(tmp_path, spec.name).experiments() if r.generation == text_spec.generation()
    ]
    assert len(new) == 8
    assert all(r.reused_from for r in new if r.state == "COMPLETE")


def test_baseline_first(tmp_path: Path) -> None:
    spec = load_spec_text(
        SPEC.replace("STRATEGY", "random")
        .replace("BUDGET", "3")
        .replace("includeDefault: false", "includeDefault: true")
    ).spec
    runner = FakeRunner()
    run_study(spec, tmp_path, runner)
    records = ResultsStore(tmp_path, spec.name).experiments()
    assert records[0].baseline and records[0].config == {} and records[0].trial is None
    assert len(records) == 3


def test_resume_after_a_crash_requeues_in_flight_trials(tmp_path: Path) -> None:
    spec = make_spec(strategy="random", budget=5)
    store = ResultsStore(tmp_path, spec.name)
    store.ensure()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(store.journal)))
    study = optuna.create_study(
        study_name=f"{spec.name}-{spec.generation()}", storage=storage, direction="maximize"
    )
    # a trial left RUNNING by a killed process
    crashed = study.ask()
    crashed.suggest_categorical("max-num-seqs", [8, 16, 32, 64])
    crashed.suggest_categorical("block-size", [16, 32])
    params = dict(crashed.params)
    runner = FakeRunner()
    run_study(spec, tmp_path, runner)
    assert runner.calls[0] == params  # re-queued and run first
    assert len(store.experiments()) == 5
    states = [t.state for t in optuna.load_study(study_name=study.study_name, storage=storage).trials]
    assert TrialState.RUNNING not in states


def test_stop_event_interrupts_without_recording(tmp_path: Path) -> None:
    spec = make_spec(strategy="random", budget=5)
    stop = threading.Event()
    stop.set()
    runner = FakeRunner()
    run_study(spec, tmp_path, runner, stop=stop)
    assert runner.calls == []


@pytest.mark.parametrize("strategy", ["random", "tpe", "nsga2"])
def test_two_objectives_give_a_pareto_set(tmp_path: Path, strategy: str) -> None:
    text = (
        SPEC.replace("STRATEGY", strategy)
        .replace("BUDGET", "7")
        .replace(
            "    - {metric: output_throughput, direction: maximize}\n",
            "    - {metric: output_throughput, direction: maximize}\n"
            "    - {metric: ttft_p90_ms, direction: minimize}\n",
        )
        .replace("max: 500", "max: 100000")
    )
    spec = load_spec_text(text).spec
    run_study(spec, tmp_path, FakeRunner())
    from specs.ranking import pareto_front

    records = ResultsStore(tmp_path, spec.name).experiments()
    front = pareto_front(records)
    assert front
    # in this fake, throughput and TTFT both grow with max-num-seqs: every distinct seqs is optimal
    assert {r.config["max-num-seqs"] for r in front} == {
        r.config["max-num-seqs"] for r in records if r.state == "COMPLETE"
    }
