"""What a generation's study is given to try before its sampler proposes anything: the baseline,
the warm start and, for ``strategy: grid``, the grid.

* The baseline is the engine's default configuration *in the space's terms* when the engine
  knows its defaults (``default_config``): it is enqueued as the first trial, told like any other,
  and a grid point equal to it is the same configuration. Only when the defaults are unknown is
  it measured as ``{}`` and kept out of the sampler (the loop starts it itself).
* Warm start: the best configurations measured before — earlier generations of this spec and
  specs with the same model, engine and GPU (``warm_start``) — are enqueued right after the
  baseline, ranked by this spec's objective and SLOs.
* Grid order starts at the default (fewest axes changed first), so a budget smaller than the grid
  measures the neighbourhood of the default first.

Each is enqueued once per generation (a flag in the Optuna study), so a resumed study does not
queue them again.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import cast

from reconciler.study.trials import Trials
from specs.model import TuningSpec
from specs.records import ExperimentRecord
from specs.slo import evaluate, hard_ok
from specs.space import Config, axes, grid, in_space

#: grid points enumerated at most to order the grid from the default
GRID_ENUMERATE = 200_000
#: configurations from earlier studies enqueued after the baseline
WARM_START_TOP = 3


def enqueue_start(
    trials: Trials,
    spec: TuningSpec,
    records: Sequence[ExperimentRecord],
    default_config: Config | None,
    warm: Callable[[], Sequence[Config]],
) -> None:
    """Once per generation: the baseline (when its configuration is known), then the warm start
    (``warm`` is asked only then)."""
    if trials.user_attrs.get("start_enqueued"):
        return
    if (
        default_config is not None
        and spec.spec.search.include_default
        and not any(r.baseline for r in records)
    ):
        trials.enqueue(default_config, baseline=True)
    for config in warm():
        trials.enqueue(config, warm_start=True)
    trials.set_user_attr("start_enqueued", True)


def enqueue_grid(
    trials: Trials, spec: TuningSpec, default_config: Config | None, is_valid: Callable[[Config], bool]
) -> None:
    """The grid from the default outwards, leaving out what the constraints, the engine's rules or
    the memory pre-check already say cannot run."""
    if trials.user_attrs.get("grid_enqueued"):
        return
    default = default_config or {}
    points = itertools.islice(grid(spec), GRID_ENUMERATE)
    nearest_first = sorted(points, key=lambda c: sum(default.get(k, c[k]) != c[k] for k in c))
    n = 0
    for config in nearest_first:
        if n >= spec.spec.search.max_experiments:
            break
        if config == default or not is_valid(config):
            continue
        trials.enqueue(config)
        n += 1
    trials.set_user_attr("grid_enqueued", True)


def warm_configs(
    spec: TuningSpec,
    pool: Sequence[ExperimentRecord],
    default_config: Config | None,
    allowed: Callable[[Config], bool],
) -> list[Config]:
    """The best distinct configurations of ``pool`` (earlier studies) that this spec's space holds,
    ranked by this spec's first objective among those that meet its hard SLOs."""
    slo = spec.spec.slo
    obj = spec.spec.objectives[0]
    sign = 1.0 if obj.resolved_direction == "maximize" else -1.0
    names = {a.name for a in axes(spec)}
    scored: list[tuple[float, Config]] = []
    for r in pool:
        if r.state != "COMPLETE" or set(r.config) != names or not in_space(spec, r.config):
            continue
        summary = r.summary
        value = summary.get(obj.metric)
        if value is None or not hard_ok(evaluate(summary, slo)):
            continue
        config = cast(Config, dict(r.config))
        if config == default_config or not allowed(config):
            continue
        scored.append((sign * float(value), config))
    scored.sort(key=lambda s: -s[0])
    out: list[Config] = []
    for _, config in scored:
        if config not in out:
            out.append(config)
        if len(out) >= WARM_START_TOP:
            break
    return out
