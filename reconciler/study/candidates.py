"""Candidate choice: which configuration the study measures next.

In order: the baseline measured as ``{}`` (when the engine's defaults are unknown), then what the
sampler proposes (the enqueued baseline, warm start and grid come out of it first,
:mod:`reconciler.study.start`). A proposal that breaks a constraint, an engine rule or the memory
pre-check is told as infeasible without running; the baseline trial is never skipped, since the
engine's default is what the report compares with. A proposal measured already in this
generation is a duplicate: its trial is kept out of the sampler's history, and an unmeasured
neighbour (:meth:`Chooser.neighbour`) is enqueued in its place, so that a sampler that keeps
returning to its favourite region explores next to it instead of stalling the study.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from reconciler.study.budget import Budget
from reconciler.study.identity import Known, config_hash
from reconciler.study.start import GRID_ENUMERATE
from reconciler.study.trials import Trials
from specs.model import Scalar, TuningSpec
from specs.space import Axis, Config, axes, grid


@dataclass(frozen=True)
class Candidate:
    """A configuration to measure, or to answer from a record measured before."""

    #: the Optuna trial it answers; None for the baseline measured as ``{}``
    trial: int | None
    config: Config
    baseline: bool
    chash: str


class Chooser:
    def __init__(
        self,
        spec: TuningSpec,
        trials: Trials,
        *,
        engine_flags_of: Callable[[Config], dict[str, Any]],
        fingerprint: str,
        allowed: Callable[[Config], bool],
        need_baseline: bool,
    ) -> None:
        self.spec = spec
        self.trials = trials
        self.engine_flags_of = engine_flags_of
        self.fingerprint = fingerprint
        self.allowed = allowed
        self.need_baseline = need_baseline

    def hash_of(self, config: Config) -> str:
        return config_hash(self.spec, self.engine_flags_of(config), self.fingerprint)

    def next(self, budget: Budget, known: Known) -> Candidate | None:
        """A configuration new to this generation, or None when this proposal found none (the
        miss, or the space's exhaustion, is counted in ``budget``)."""
        trial: int | None
        config: Config
        if self.need_baseline:
            self.need_baseline = False
            trial, config, baseline = None, {}, True
        else:
            if not budget.space_left():
                return None
            proposal = self._ask()
            if proposal is None:
                budget.miss()
                return None
            trial, config, baseline = proposal
        chash = self.hash_of(config)
        if known.seen(chash):
            self._duplicate(trial, config, chash, known, budget.misses)
            budget.miss()
            return None
        budget.hit(baseline)
        return Candidate(trial, config, baseline, chash)

    def _ask(self) -> tuple[int, Config, bool] | None:
        """The sampler's next proposal; None when it was skipped for a constraint or an engine rule
        (told as an infeasible trial: it does not use the budget)."""
        trial, config = self.trials.ask()
        baseline = bool(trial.user_attrs.get("baseline"))
        if not baseline and not self.allowed(config):
            self.trials.skip(trial, "violates a constraint or an engine rule")
            return None
        return trial.number, config, baseline

    def _duplicate(self, trial: int | None, config: Config, chash: str, known: Known, attempt: int) -> None:
        """Measured already in this generation (its trial was told then): answered from the
        record, kept out of the sampler's history, not counted; a neighbour is tried instead."""
        if trial is not None:
            prior = known.generation.get(chash)
            self.trials.duplicate(trial, prior.id if prior else "in flight")
        alt = self.neighbour(config, known.hashes(), attempt)
        if alt is not None:
            self.trials.enqueue(alt, neighbour_of_duplicate=True)

    def neighbour(self, config: Config, known: set[str], attempt: int) -> Config | None:
        """An unmeasured configuration one step from ``config`` (a proposal that was measured
        already): the sampler's favourite region, explored instead of asked again. Steps are to
        the adjacent value of an ordered axis or any other value of a categorical one; the nearest
        ring that has an allowed unmeasured point wins, ties broken by the study seed."""
        every = axes(self.spec)
        finite = [a for a in every if a.values is not None]
        if not finite or set(config) != {a.name for a in every}:
            return None
        rng = random.Random(f"{self.spec.spec.search.seed}-{attempt}-{sorted(config.items())}")
        for radius in (1, 2):
            ring = list(_ring(config, finite, radius))
            rng.shuffle(ring)
            found = self._first_new(ring, known)
            if found is not None:
                return found
        # nothing close is left: any unmeasured point of a finite space, by the seed
        if len(finite) == len(every):
            rest = list(itertools.islice(grid(self.spec), GRID_ENUMERATE))
            rng.shuffle(rest)
            return self._first_new(rest, known)
        return None

    def _first_new(self, configs: list[Config], known: set[str]) -> Config | None:
        for cand in configs:
            if self.allowed(cand) and self.hash_of(cand) not in known:
                return cand
        return None


def _ring(config: Config, finite: list[Axis], radius: int) -> Iterator[Config]:
    """The configurations ``radius`` axes away from ``config``, one step along each."""
    for combo in itertools.combinations(finite, radius):
        options = [_steps(a, config[a.name]) for a in combo]
        for picked in itertools.product(*options):
            cand = dict(config)
            cand.update({a.name: v for a, v in zip(combo, picked, strict=True)})
            yield cand


def _steps(axis: Axis, value: Scalar) -> list[Scalar]:
    """The values one step from ``value``: its neighbours on a numeric axis, else every other."""
    assert axis.values is not None
    values = list(axis.values)
    i = next((k for k, v in enumerate(values) if v == value), None)
    if i is None:
        return []
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return [values[j] for j in (i - 1, i + 1) if 0 <= j < len(values)]
    return [v for v in values if v != value]
