"""Parameter importance: which searched parameters moved the objective, by Optuna's evaluators.

The records are replayed into an in-memory Optuna study (one finished trial per COMPLETE,
non-baseline experiment of one generation, its objective the measured value) and handed to an
importance evaluator:

* **fANOVA** (:class:`optuna.importance.FanovaImportanceEvaluator`) when scikit-learn is
  installed — it fits a random forest, which needs it;
* otherwise **PED-ANOVA** (:class:`optuna.importance.PedAnovaImportanceEvaluator`, Optuna's own
  default), which needs only numpy. scikit-learn is not a dependency of this project, so this is
  the usual case; the page names the method it used.

Importance from a handful of trials is noise, so nothing is computed below
:data:`MIN_TRIALS`. Optuna is imported here, lazily: experiment pages never need it.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reports.values import Objective, value
from specs.records import ExperimentRecord

MIN_TRIALS = 8


@dataclass(frozen=True)
class Importance:
    method: str
    #: parameter -> importance, normalized to sum to 1, most important first
    values: dict[str, float]
    trials: int


def method_name() -> str:
    return "fANOVA" if importlib.util.find_spec("sklearn") is not None else "PED-ANOVA"


def _distribution(values: list[Any]) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    distinct = sorted(set(values), key=lambda v: json.dumps(v, sort_keys=True, default=str))
    if numeric and len(distinct) > 1:
        if all(isinstance(v, int) for v in values):
            return IntDistribution(min(values), max(values))
        return FloatDistribution(float(min(values)), float(max(values)))
    return CategoricalDistribution(distinct)


def importance(
    records: Sequence[ExperimentRecord], objective: Objective, *, min_trials: int = MIN_TRIALS
) -> Importance | None:
    """Importance of each searched parameter for ``objective``, or None with too few trials or
    fewer than two parameters that actually varied."""
    trials = [r for r in records if r.state == "COMPLETE" and not r.baseline and r.config]
    trials = [r for r in trials if value(r, objective.metric) is not None]
    if len(trials) < min_trials:
        return None
    # only parameters that every trial set: a parameter added in a later generation has no value
    # in older trials, and the evaluators need a complete table
    names = [k for k in trials[0].config if all(k in r.config for r in trials)]
    columns = {k: [_hashable(r.config[k]) for r in trials] for k in names}
    varied = [k for k in names if len({json.dumps(v, default=str) for v in columns[k]}) > 1]
    if len(varied) < 2:
        return None

    import optuna
    from optuna.trial import create_trial

    dists = {k: _distribution(columns[k]) for k in varied}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" line on the console
    try:
        study = optuna.create_study(direction=objective.direction)
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials(
        create_trial(
            params={k: columns[k][i] for k in varied},
            distributions=dists,
            value=value(r, objective.metric),
        )
        for i, r in enumerate(trials)
    )
    method = method_name()
    evaluator: optuna.importance.BaseImportanceEvaluator
    if method == "fANOVA":
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    else:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    with warnings.catch_warnings():
        # both evaluators warn about small samples or experimental status; the page already says
        # how many trials the numbers rest on
        warnings.simplefilter("ignore")
        result = optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=True)
    values = {k: float(v) for k, v in result.items()}
    return Importance(method, dict(sorted(values.items(), key=lambda kv: -kv[1])), len(trials))


def _hashable(v: Any) -> Any:
    """Optuna's categorical choices must be None, bool, int, float or str."""
    return v if v is None or isinstance(v, bool | int | float | str) else json.dumps(v, sort_keys=True)
