"""The Optuna side of a study: its storage, its sampler, and how a configuration maps to trial
parameters and back.

* ``study.journal`` (``JournalFileBackend``) holds the Optuna study; each generation has its own
  study name, so an edited spec starts fresh while old experiments stay.
* Sampler settings are constants, not functions of the budget (TPE's random start, NSGA-II's
  population), so raising ``maxExperiments`` does not change the first experiments.
* A listed axis of three or more numbers is sampled by its index (:func:`ordered`), so that the
  sampler's kernel sees the order of its values. A journal begun before that (``legacy`` axes,
  sampled as categoricals) keeps its distributions: Optuna allows one kind per name.
"""

from __future__ import annotations

import math
from typing import Any, cast

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from reconciler.results import ResultsStore
from specs.errors import MissingExtraError
from specs.model import ParamSpec, Scalar, TuningSpec
from specs.space import Axis, Config, axes

optuna.logging.set_verbosity(optuna.logging.WARNING)

#: TPE's random start: the baseline and warm-start trials count toward it; fixed, see the docstring
TPE_STARTUP_TRIALS = 6
NSGA2_POPULATION = 10


def make_sampler(spec: TuningSpec) -> optuna.samplers.BaseSampler:
    """Hard SLOs reach TPE and NSGA-II as per-trial constraints (``Trial.set_constraint``),
    which both samplers read from the trials themselves."""
    search = spec.spec.search
    seed = search.seed
    if search.strategy in ("grid", "random"):
        return optuna.samplers.RandomSampler(seed=seed)
    if search.strategy == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=TPE_STARTUP_TRIALS,
            multivariate=True,
            constant_liar=search.parallelism > 1,
        )
    if search.strategy == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=NSGA2_POPULATION)
    try:
        from optuna_integration import BoTorchSampler
    except ImportError:
        raise MissingExtraError("optuna_integration[botorch]", "botorch") from None
    return BoTorchSampler(seed=seed)  # pragma: no cover - needs torch


def open_study(spec: TuningSpec, store: ResultsStore) -> optuna.Study:
    """This generation's study in the spec's journal, created on first use."""
    store.ensure()
    storage = JournalStorage(JournalFileBackend(str(store.journal)))
    return optuna.create_study(
        study_name=f"{spec.name}-{spec.generation()}",
        storage=storage,
        directions=[o.resolved_direction for o in spec.spec.objectives],
        sampler=make_sampler(spec),
        load_if_exists=True,
    )


def legacy_axes(spec: TuningSpec, study: optuna.Study) -> frozenset[str]:
    """The ordered axes this study's journal sampled as categoricals (see the module docstring)."""
    names = {a.name for a in axes(spec) if ordered(a)}
    return frozenset(
        name
        for t in study.get_trials(deepcopy=False)
        for name, dist in t.distributions.items()
        if name in names and isinstance(dist, optuna.distributions.CategoricalDistribution)
    )


def ordered(axis: Axis) -> bool:
    """A listed axis of three or more numbers: sampled by its index, so that TPE's kernel (and
    NSGA-II's mutation) sees that 1024 lies between 512 and 2048. As a categorical, TPE learns
    nothing from "smaller was better"; on the benchmark surfaces the best configurations often sit
    at one end of such an axis."""
    values = axis.values
    return (
        values is not None
        and len(values) > 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    )


def to_params(spec: TuningSpec, config: Config, legacy: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A configuration as the trial parameters :func:`suggest` reads (indexes on ordered axes)."""
    out: dict[str, Any] = dict(config)
    for axis in axes(spec):
        if ordered(axis) and axis.name in config and axis.name not in legacy:
            assert axis.values is not None
            out[axis.name] = next(
                (i for i, v in enumerate(axis.values) if math.isclose(float(v), float(config[axis.name]))),
                config[axis.name],
            )
    return out


def params_now(spec: TuningSpec, t: optuna.trial.FrozenTrial, legacy: frozenset[str]) -> dict[str, Any]:
    """A stored trial's parameters as this version's :func:`suggest` reads them: a journal
    written before ordered axes were sampled by index holds their values as categoricals."""
    config: Config = {}
    for axis in axes(spec):
        if axis.name not in t.params:
            continue
        raw = t.params[axis.name]
        dist = t.distributions.get(axis.name)
        if ordered(axis) and not isinstance(dist, optuna.distributions.CategoricalDistribution):
            assert axis.values is not None
            raw = axis.values[int(raw)]
        config[axis.name] = raw
    return to_params(spec, config, legacy)


def suggest(trial: optuna.Trial, spec: TuningSpec, legacy: frozenset[str] = frozenset()) -> Config:
    """``legacy``: ordered axes a study began sampling as categoricals (a journal from before
    ordered axes were sampled by index); Optuna allows one distribution kind per name."""
    config: Config = {}
    for axis in axes(spec):
        if axis.values is not None and ordered(axis) and axis.name not in legacy:
            config[axis.name] = axis.values[trial.suggest_int(axis.name, 0, len(axis.values) - 1)]
        elif axis.values is not None:
            config[axis.name] = cast(Scalar, trial.suggest_categorical(axis.name, list(axis.values)))
        else:
            assert axis.param is not None
            config[axis.name] = _suggest_range(trial, axis.name, axis.param)
    return config


def _suggest_range(trial: optuna.Trial, name: str, p: ParamSpec) -> int | float:
    assert p.low is not None and p.high is not None
    if p.is_int:
        step = int(p.step or 1)
        if p.log and step > 1:
            # Optuna has no log scale with a step: sample on the log scale, snap to the grid
            raw = trial.suggest_int(name, int(p.low), int(p.high), log=True)
            return min(int(p.high), int(p.low) + round((raw - int(p.low)) / step) * step)
        return trial.suggest_int(name, int(p.low), int(p.high), step=step, log=p.log)
    if p.log and p.step:
        raw_f = trial.suggest_float(name, float(p.low), float(p.high), log=True)
        return round(min(float(p.high), p.low + round((raw_f - p.low) / p.step) * p.step), 10)
    return trial.suggest_float(name, float(p.low), float(p.high), step=p.step, log=p.log)
