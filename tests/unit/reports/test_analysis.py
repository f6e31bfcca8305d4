"""The pure analyses agree with the tool's ranking and say true things about the records."""

from __future__ import annotations

import math

import pytest

from reports import compare, curves, effects, history, importance, pareto, recommend
from reports.values import Objective, objectives_of, slo_bounds, value
from specs.ranking import best, dominates, pareto_front
from specs.records import ExperimentRecord
from tests.unit.reports.factory import SpecPlan, make_records

THROUGHPUT = Objective("output_throughput_per_gpu", "maximize")
TTFT = Objective("ttft_p90_ms", "minimize")


def current(records: list[ExperimentRecord]) -> list[ExperimentRecord]:
    return [r for r in records if r.generation == records[-1].generation]


def test_factory_makes_the_cases_the_report_must_handle(records: list[ExperimentRecord]) -> None:
    states = {r.state for r in records}
    assert states == {"COMPLETE", "FAILED"}
    assert any(r.failure and r.failure.kind == "oom" and r.failure.log_tail for r in records)
    assert len({r.generation for r in records}) == 2
    assert sum(r.baseline for r in records) == 2
    assert any(r.state == "COMPLETE" and not r.feasible for r in records)


# ------------------------------------------------------------------------------------ Pareto


def test_front_on_the_spec_objectives_is_the_rankings_front() -> None:
    plan = SpecPlan(
        name="two",
        experiments=30,
        objectives=(("output_throughput_per_gpu", "maximize"), ("ttft_p90_ms", "minimize")),
    )
    recs = current(make_records(plan))
    f = pareto.front(recs, [THROUGHPUT, TTFT])
    assert {p.record.id for p in f.front} == {r.id for r in pareto_front(recs)}
    assert f.front and f.front[0].values[0] == max(p.values[0] for p in f.front)


def test_generic_front_is_non_dominated_and_only_feasible(records: list[ExperimentRecord]) -> None:
    recs = current(records)
    f = pareto.front(recs, [THROUGHPUT, TTFT])  # not the spec's objectives: the generic path
    members = f.front
    assert members
    keys = {p.record.id: [p.values[0], -p.values[1]] for p in f.points if p.feasible}
    for p in members:
        assert p.feasible
        assert not any(dominates(k, keys[p.record.id]) for rid, k in keys.items() if rid != p.record.id)
    # every feasible point off the front is dominated by some member
    for p in f.points:
        if p.feasible and not p.on_front:
            assert any(dominates(keys[m.record.id], keys[p.record.id]) for m in members)


def test_front_accepts_three_metrics_and_rejects_four(records: list[ExperimentRecord]) -> None:
    three = pareto.front(current(records), [THROUGHPUT, TTFT, Objective("tpot_p90_ms", "minimize")])
    assert all(len(p.values) == 3 for p in three.points)
    with pytest.raises(ValueError, match="one to three"):
        pareto.front(records, [THROUGHPUT, TTFT, TTFT, TTFT])


def test_per_gpu_efficiency_is_derived_when_not_stored(records: list[ExperimentRecord]) -> None:
    r = next(x for x in records if x.state == "COMPLETE" and x.gpu.count == 2)
    stripped = r.model_copy(
        update={"summary": {k: v for k, v in r.summary.items() if not k.endswith("_per_gpu")}}
    )
    assert value(stripped, "output_throughput_per_gpu") == pytest.approx(
        (r.summary["output_throughput"] or 0) / 2
    )
    assert pareto.per_gpu("output_throughput") == "output_throughput_per_gpu"
    assert pareto.per_gpu("ttft_p90_ms") == "ttft_p90_ms"
    assert pareto.gpu_counts_vary(current(records))


# ------------------------------------------------------------------------------------ history


def test_history_best_so_far_never_gets_worse_and_ends_at_the_recommendation(
    records: list[ExperimentRecord],
) -> None:
    steps = history.history(records, THROUGHPUT)
    assert [s.index for s in steps] == list(range(1, len(records) + 1))
    for gen in {r.generation for r in records}:
        line = [s.best_so_far for s in steps if s.record.generation == gen and s.best_so_far is not None]
        gen_records = [r for r in records if r.generation == gen]
        top = best(gen_records)
        assert top is not None
        assert line[-1] == value(top, THROUGHPUT.metric)
        assert [s for s in steps if s.record.generation == gen][-1].best_id == top.id
    assert all(s.value is None for s in steps if s.record.state == "FAILED")
    found = history.experiments_to_best(steps, records[-1].generation)
    assert found is not None and 1 <= found <= len(current(records))


# ------------------------------------------------------------------------------------ recommendation


def test_recommendation_is_the_rankings_best_with_margins_and_gain(records: list[ExperimentRecord]) -> None:
    recs = current(records)
    rec = recommend.recommend(recs, [THROUGHPUT])
    assert rec is not None
    assert rec.record.id == best(recs).id  # type: ignore[union-attr]
    assert {m.metric for m in rec.margins} == {"ttft_p90_ms", "tpot_p99_ms"}
    ttft = next(m for m in rec.margins if m.metric == "ttft_p90_ms")
    assert ttft.ok and ttft.margin == pytest.approx(1 - (rec.record.summary["ttft_p90_ms"] or 0) / 800.0)
    assert rec.baseline is not None and rec.baseline.baseline
    gain = rec.gains[0]
    assert gain.baseline == value(rec.baseline, THROUGHPUT.metric)
    assert gain.gain == pytest.approx((gain.best - gain.baseline) / gain.baseline)  # type: ignore[operator]
    assert rec.load_kind == "concurrency" and rec.load_value in (4.0, 16.0, 64.0)


def test_recommendation_explains_a_failed_or_missing_baseline(records: list[ExperimentRecord]) -> None:
    recs = current(records)
    base = next(r for r in recs if r.baseline)
    failed = base.model_copy(
        update={"state": "FAILED", "feasible": False, "objectives": [], "load_points": []}
    )
    rec = recommend.recommend([failed if r.id == base.id else r for r in recs], [THROUGHPUT])
    assert rec is not None and rec.baseline_note and "failed" in rec.baseline_note
    assert rec.gains[0].gain is None
    rec = recommend.recommend([r for r in recs if not r.baseline], [THROUGHPUT])
    assert rec is not None and rec.baseline is None and "not measured" in (rec.baseline_note or "")


def test_no_recommendation_without_a_feasible_experiment(records: list[ExperimentRecord]) -> None:
    infeasible = [r.model_copy(update={"feasible": False}) for r in current(records)]
    assert recommend.recommend(infeasible, [THROUGHPUT]) is None


def test_minimized_objective_gain_is_positive_when_lower() -> None:
    assert TTFT.gain(80.0, 100.0) == pytest.approx(0.2)
    assert THROUGHPUT.gain(120.0, 100.0) == pytest.approx(0.2)
    assert THROUGHPUT.gain(1.0, 0.0) is None


# ------------------------------------------------------------------------------------ curves


def test_curves_follow_the_load_points(records: list[ExperimentRecord]) -> None:
    recs = current(records)
    chosen = curves.highlighted(recs, THROUGHPUT, limit=4)
    assert len(chosen) == 4
    assert chosen[0].id == best(recs).id  # type: ignore[union-attr]
    assert any(r.baseline for r in chosen)
    c = curves.curve(chosen[0], ["goodput", "ttft_p90_ms"])
    assert c.loads == sorted(p.load_value for p in chosen[0].load_points)
    ttft = [float(v or 0) for v in c.series["ttft_p90_ms"]]
    assert ttft == sorted(ttft)  # TTFT rises with load
    peak = curves.peak(c, "goodput")
    assert peak is not None and peak[1] == max(
        g for g, ok in zip(c.series["goodput"], c.feasible, strict=True) if ok and g is not None
    )
    assert curves.max_compliant_load(c) == max(x for x, ok in zip(c.loads, c.feasible, strict=True) if ok)


# ------------------------------------------------------------------------------------ importance, effects


def test_importance_finds_the_parameter_that_drives_throughput() -> None:
    recs = current(make_records(SpecPlan(name="imp", experiments=80, seed=3)))
    imp = importance.importance(recs, THROUGHPUT)
    assert imp is not None
    assert imp.method == importance.method_name()
    assert math.isclose(sum(imp.values.values()), 1.0, rel_tol=1e-6)
    assert list(imp.values) == sorted(imp.values, key=lambda k: -imp.values[k])
    # the factory's throughput saturates with max-num-seqs and doubles with tp=2 (per GPU: not)
    assert next(iter(imp.values)) in ("max-num-seqs", "parallel.tp")
    assert imp.trials == sum(r.state == "COMPLETE" and not r.baseline for r in recs)


def test_importance_needs_enough_trials(records: list[ExperimentRecord]) -> None:
    assert importance.importance(current(records)[:5], THROUGHPUT) is None
    assert importance.importance(current(records), THROUGHPUT, min_trials=10_000) is None


def test_slices_and_parallel_coordinates(records: list[ExperimentRecord]) -> None:
    recs = current(records)
    sl = effects.slices(recs, THROUGHPUT)
    names = {s.param for s in sl}
    assert "max-num-seqs" in names and "quant.kvcache_dtype" in names
    mns = next(s for s in sl if s.param == "max-num-seqs")
    assert mns.numeric and [v for v, _ in mns.medians] == sorted({*mns.xs})
    assert mns.spread > 0
    par = effects.parallel(recs, THROUGHPUT)
    assert par is not None
    assert par.axes[-1].name == THROUGHPUT.metric
    for line in par.lines:
        assert len(line.positions) == len(par.axes)
        assert all(p is None or 0.0 <= p <= 1.0 for p in line.positions)
    top = max(par.lines, key=lambda ln: ln.objective)
    assert top.positions[-1] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------ comparisons


def test_comparison_by_generation_and_engine_version(records: list[ExperimentRecord]) -> None:
    gens = compare.by_generation(records, THROUGHPUT)
    assert [g.key for g in gens] == list(dict.fromkeys(r.generation for r in records))
    assert sum(g.total for g in gens) == len(records)
    for g in gens:
        assert g.best is not None and g.best.id == best(g.records).id  # type: ignore[union-attr]
        assert g.failed == sum(r.state == "FAILED" for r in g.records)
    versions = compare.by_engine_version(records, THROUGHPUT)
    assert [g.key for g in versions] == ["vllm 0.6.3", "vllm 0.7.0"]
    delta = compare.change(versions, THROUGHPUT)
    assert delta == pytest.approx(versions[1].best_value / versions[0].best_value - 1)  # type: ignore[operator]


def test_objectives_and_bounds_come_from_the_records_when_status_is_missing(
    records: list[ExperimentRecord],
) -> None:
    assert objectives_of(None, records) == [THROUGHPUT]
    bounds = {b.metric: b for b in slo_bounds(records)}
    assert bounds["ttft_p90_ms"].max == 800.0 and bounds["ttft_p90_ms"].hard
    assert not bounds["tpot_p99_ms"].hard and bounds["tpot_p99_ms"].weight == 2.0


def test_headline_states_gain_and_cost_and_respects_the_spread(records: list[ExperimentRecord]) -> None:
    recs = current(records)
    rec = recommend.recommend(recs, [THROUGHPUT])
    assert rec is not None and rec.gains[0].gain is not None and rec.gains[0].gain > 0
    assert rec.experiments == len(recs) and rec.spread is None
    assert rec.headline is not None and rec.headline.startswith("Beats the engine default by ")
    assert f"found in {len(recs)} experiments" in rec.headline
    # a re-measurement of the winner that differs by more than its gain: not a claimed improvement
    top = rec.record
    raw = top.objectives[0].raw or 0.0
    far = raw * (1 - 2 * rec.gains[0].gain)
    again = top.model_copy(
        update={
            "id": "9999",
            "confirms": top.id,
            "objectives": [top.objectives[0].model_copy(update={"raw": far, "value": far})],
        }
    )
    rec = recommend.recommend([*recs, again], [THROUGHPUT])
    assert rec is not None and rec.record.id == top.id  # confirmations are not ranked
    assert rec.experiments == len(recs) and rec.spread is not None and rec.spread > rec.gains[0].gain  # type: ignore[operator]
    assert rec.headline is not None and rec.headline.startswith("Within measurement spread")
