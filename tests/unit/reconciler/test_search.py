"""The search on recorded data: the level gate (stopping levels, pruning that never loses a
winner on the benchmark surfaces), the baseline told once, duplicates not re-told, warm start
and the confirmation of the winner. Studies run through ``run_spec`` with the replay engine."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from backends.deploy.leases import GpuLeaser
from backends.engines.replay_table import load_table
from reconciler.replay import ReplayExecutor
from reconciler.results import ResultsStore
from reconciler.runspec import RunContext, run_spec
from reconciler.study import Study
from reconciler.study.identity import config_hash
from specs import load_spec_text
from specs.model import TuningSpec
from specs.ranking import best
from specs.records import ExperimentRecord
from specs.space import grid

SURFACES = Path(__file__).parents[3] / "benchmarks" / "search" / "surfaces"
SINGLE = ["tight-slo", "oom-70b", "flat", "default-best", "prefix-heavy"]


def ctx(root: Path) -> RunContext:
    return RunContext(
        results_root=root / "results", state_dir=root / "state", base_dir=root, leaser=GpuLeaser([])
    )


def surface_spec(
    name: str, *, strategy: str = "tpe", budget: int = 40, seed: int = 0, extra: str = ""
) -> str:
    text = (SURFACES / f"{name}.yaml").read_text()
    text = text.replace("strategy: tpe", f"strategy: {strategy}").replace(
        "maxExperiments: 40", f"maxExperiments: {budget}"
    )
    text = text.replace("seed: 0", f"seed: {seed}")
    if extra:
        text = text.replace("    parameters:", extra + "    parameters:")
    return text


def copy_surface(name: str, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(SURFACES / f"{name}.csv", root / f"{name}.csv")


def truth(spec: TuningSpec, table_name: str, root: Path) -> list[ExperimentRecord]:
    """Every configuration, measured to its last level (no gate), as study records."""
    ex = ReplayExecutor(spec, load_table(SURFACES / f"{table_name}.csv"))
    study = Study(
        spec,
        ResultsStore(root, "truth"),
        ex,
        workload_fingerprint="t",
        workload_info={},
        engine_flags_of=dict,
    )
    out = []
    for config in grid(spec):
        m = ex(config, baseline=False, cancel=threading.Event())
        out.append(
            study.builder.build(config, m, trial=None, baseline=False, chash=config_hash(spec, config, "t"))
        )
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", SINGLE)
def test_pruning_never_loses_a_would_be_winner_on_the_benchmark_surfaces(name: str, tmp_path: Path) -> None:
    spec = load_spec_text(surface_spec(name)).spec
    records = truth(spec, name, tmp_path)
    top = best(records)
    assert top is not None and top.objectives[0].value is not None
    incumbent = top.objectives[0].value
    study = Study(
        spec,
        ResultsStore(tmp_path, "gate"),
        ReplayExecutor(spec, load_table(SURFACES / f"{name}.csv")),
        workload_fingerprint="t",
        workload_info={},
        engine_flags_of=dict,
    )
    # the strongest incumbent a study can ever hold is the best configuration itself
    study.gate.incumbent = (incumbent, top.id)
    levels = [float(c) for c in spec.spec.workload.load.concurrency or []]
    winners = [
        r for r in records if r.feasible and r.objectives and (r.objectives[0].value or 0) >= 0.98 * incumbent
    ]
    assert winners
    for r in winners:
        for k in range(1, len(r.load_points) + 1):
            verdict = study.level_gate(dict(r.config), r.load_points[:k], levels[k:])
            assert verdict is None or verdict.action != "prune", (r.config, verdict)


def test_levels_stop_after_a_hard_slo_miss_and_a_hopeless_configuration_is_pruned(tmp_path: Path) -> None:
    table = (
        "max-num-seqs,concurrency,state,default,output_throughput,ttft_p90_ms\n"
        "256,1,COMPLETE,true,100,50\n256,4,COMPLETE,true,380,200\n256,16,COMPLETE,true,1400,450\n"
        "64,1,COMPLETE,false,100,50\n64,4,COMPLETE,false,300,900\n64,16,COMPLETE,false,310,3000\n"
        "8,1,COMPLETE,false,20,400\n8,4,COMPLETE,false,60,450\n8,16,COMPLETE,false,70,480\n"
    )
    (tmp_path / "t.csv").write_text(table)
    text = """
apiVersion: autotuner/v1
kind: TuningSpec
metadata: {name: gate}
spec:
  model: {id: llama-3-8b}
  engine: {name: replay, args: {table: t.csv}}
  search:
    strategy: grid
    maxExperiments: 3
    parameters:
      max-num-seqs: {values: [256, 64, 8]}
  workload:
    dataset: {kind: synthetic, input: {mean: 10}, output: {mean: 10}}
    load: {concurrency: [1, 4, 16]}
  slo:
    ttft_p90_ms: {max: 500}
  objectives:
    - {metric: output_throughput, direction: maximize}
"""
    run_spec(load_spec_text(text), ctx(tmp_path))
    by_seqs = {r.config["max-num-seqs"]: r for r in ResultsStore(tmp_path / "results", "gate").experiments()}
    stopped = by_seqs[64]
    assert stopped.state == "COMPLETE" and [p.load_value for p in stopped.load_points] == [1.0, 4.0]
    assert "misses the hard SLO on ttft_p90_ms" in stopped.load_points[-1].notes[-1]
    assert stopped.summary["output_throughput"] == 100.0  # the summary is what the full sweep gives
    pruned = by_seqs[8]
    assert pruned.state == "PRUNED" and pruned.failure is not None
    # 20 tokens/s at concurrency 1, at most 16x that at concurrency 16: below the incumbent's 1400
    assert "reaches at most 320" in pruned.failure.reason and "1400" in pruned.failure.reason
    assert [p.load_value for p in pruned.load_points] == [1.0]

    # search.pruning: false is a new study that runs every configuration at every level: the
    # PRUNED one is measured again, whole; the stopped one is answered from its record
    whole = text.replace("maxExperiments: 3", "maxExperiments: 3\n    pruning: false")
    assert load_spec_text(whole).spec.generation() != load_spec_text(text).spec.generation()
    outcome = run_spec(load_spec_text(whole), ctx(tmp_path))
    assert outcome is not None and outcome.pruned == 0 and outcome.reused == 2
    latest = ResultsStore(tmp_path / "results", "gate").experiments()[-3:]
    again = {r.config["max-num-seqs"]: r for r in latest}
    assert again[8].state == "COMPLETE" and again[8].reused_from is None
    assert [p.load_value for p in again[8].load_points] == [1.0, 4.0, 16.0]


def _optuna_trials(root: Path, spec: TuningSpec) -> list[optuna.trial.FrozenTrial]:
    store = ResultsStore(root / "results", spec.name)
    study = optuna.load_study(
        study_name=f"{spec.name}-{spec.generation()}",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(store.journal))
        ),
    )
    return study.trials


def test_every_measurement_is_told_once_and_duplicates_are_not(tmp_path: Path) -> None:
    copy_surface("flat", tmp_path)
    text = (
        surface_spec("flat", budget=30)
        .replace("      block-size: {values: [16, 32]}\n", "")
        .replace("      max-num-seqs: {values: [256, 384, 512, 1024]}\n", "")
        .replace("gpu: h100}", "gpu: h100, block-size: 16, max-num-seqs: 256}")
    )
    loaded = load_spec_text(text)
    run_spec(loaded, ctx(tmp_path))
    records = ResultsStore(tmp_path / "results", "flat").experiments()
    assert len(records) == 16  # 4 x 2 x 2 configurations: the space is exhausted, nothing twice
    assert records[0].baseline and records[0].trial == 0
    trials = _optuna_trials(tmp_path, loaded.spec)
    told = [
        t
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "skipped" not in t.user_attrs
    ]
    assert sorted(t.number for t in told) == sorted(r.trial for r in records if r.trial is not None)
    duplicates = [t for t in trials if "duplicate_of" in t.user_attrs]
    assert all(t.state == TrialState.FAIL for t in duplicates)


def _hit(records: list[ExperimentRecord], target: float) -> int | None:
    so_far = None
    for i, r in enumerate(records, start=1):
        if r.feasible and r.objectives and r.objectives[0].value is not None:
            so_far = max(so_far or r.objectives[0].value, r.objectives[0].value)
        if so_far is not None and so_far >= 0.98 * target:
            return i
    return None


@pytest.mark.slow
def test_warm_start_needs_fewer_experiments_in_a_second_generation_and_another_spec(tmp_path: Path) -> None:
    copy_surface("prefix-heavy", tmp_path)
    run_spec(load_spec_text(surface_spec("prefix-heavy", budget=25, seed=3)), ctx(tmp_path))
    store = ResultsStore(tmp_path / "results", "prefix-heavy")
    first = store.experiments()
    top = best(first)
    assert top is not None and top.objectives[0].value is not None
    target = top.objectives[0].value  # what the first study found, and how long it took
    n1 = _hit(first, target)
    assert n1 is not None and n1 > 2

    # a new generation of the same spec (another seed): the earlier best comes right after the baseline
    second = load_spec_text(surface_spec("prefix-heavy", budget=25, seed=4))
    run_spec(second, ctx(tmp_path))
    gen2 = [r for r in store.experiments() if r.generation == second.spec.generation()]
    n2 = _hit(gen2, target)
    assert n2 is not None and n2 <= 2 < n1

    # another spec with the same model, engine and GPU, sharing the results repository
    other = surface_spec("prefix-heavy", budget=25, seed=5).replace(
        "name: prefix-heavy", "name: prefix-heavy-copy"
    )
    run_spec(load_spec_text(other), ctx(tmp_path))
    n3 = _hit(ResultsStore(tmp_path / "results", "prefix-heavy-copy").experiments(), target)
    assert n3 is not None and n3 <= 2 < n1


def test_the_winner_is_confirmed_and_confirmations_are_not_ranked_nor_told(tmp_path: Path) -> None:
    copy_surface("default-best", tmp_path)
    loaded = load_spec_text(surface_spec("default-best", budget=6, extra="    confirmTop: 2\n"))
    outcome = run_spec(loaded, ctx(tmp_path))
    assert outcome is not None and outcome.best is not None
    records = ResultsStore(tmp_path / "results", "default-best").experiments()
    confirms = [r for r in records if r.confirms is not None]
    originals = [r for r in records if r.confirms is None]
    assert len(originals) == 6 and len(confirms) == 2
    assert confirms[0].confirms == outcome.best.id  # the winner first
    assert all(c.trial is None for c in confirms)
    by_id = {r.id: r for r in originals}
    for c in confirms:
        assert c.config == by_id[c.confirms or ""].config
        assert c.objectives[0].value == by_id[c.confirms or ""].objectives[0].value  # replay: no spread
    assert best(records) is not None and best(records).confirms is None  # type: ignore[union-attr]
    # resuming does not re-measure them
    run_spec(loaded, ctx(tmp_path))
    assert len(ResultsStore(tmp_path / "results", "default-best").experiments()) == 8


def test_no_run_is_spent_on_what_the_start_up_rules_or_memory_predict(tmp_path: Path) -> None:
    """The 70B surface: a third of its configurations run out of memory on the sim; with the sim's
    rules and memory pre-check the study spends no experiment on them, and the default (TP 1,
    which cannot hold the weights) is recorded as the baseline's result without running."""
    from backends.engines import get_engine

    text = surface_spec("oom-70b", budget=15)
    spec = load_spec_text(text).spec
    data = spec.normalized()
    data["spec"]["engine"] = {"name": "sim", "args": {"gpu": "a100-80g", "max-model-len": 8192}}
    sim = TuningSpec.model_validate(data)
    engine = get_engine("sim")
    ex = ReplayExecutor(spec, load_table(SURFACES / "oom-70b.csv"))
    store = ResultsStore(tmp_path, spec.name)
    study = Study(
        spec,
        store,
        ex,
        workload_fingerprint="t",
        workload_info={},
        engine_flags_of=dict,
        is_valid=lambda c: not engine.startup_problems(sim, c),
        default_config=ex.default_config(),
    )
    ex.level_gate = study.level_gate
    study.run()
    records = store.experiments()
    assert len(records) == 15
    base = records[0]
    assert base.baseline and base.state == "FAILED" and base.failure is not None
    assert base.failure.reason.endswith("not run") and base.config["tensor-parallel-size"] == 1
    assert all(r.state != "FAILED" for r in records[1:])
