"""Telling Optuna what happened to a trial, and recovering its trials after a crash.

* ``experiments/NNNN.json`` is the truth about what was measured. A record is written (atomically)
  *before* the trial is told to Optuna. On restart, a trial left RUNNING is either told from its
  record (the crash hit between the write and the tell) or failed and its parameters re-queued
  (the crash hit mid-experiment), so a completed experiment is never lost nor re-run, and at
  most the in-flight ones run again.
* Failed experiments are never told as an invented score (the original system told ``-inf``,
  which became the "best" trial of a maximize study), nor as ``FAIL``, which TPE and NSGA-II drop
  from their history, so that they proposed failing configurations *more* often than random
  search. A configuration failure (:func:`specs.records.failure_side`) is told as ``PRUNED`` with
  a large constraint violation: TPE keeps it in its "bad" group, so the region is learned as
  infeasible. Configurations skipped by a constraint, an engine rule or the memory pre-check are
  told the same way. Environment and transient failures say nothing about the configuration and
  are told as ``FAIL``. Hard SLOs are Optuna constraints; soft SLOs are a continuous penalty
  (:mod:`specs.slo`).
* A configuration proposed again within a generation is answered from its record and its trial
  told ``FAIL``, which samplers ignore, so no measurement is counted twice in their history.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import TrialState

from reconciler.study.sampler import legacy_axes, params_now, suggest, to_params
from specs.model import TuningSpec
from specs.records import ExperimentRecord, failure_side
from specs.space import Config

log = logging.getLogger(__name__)

#: constraint value a configuration failure is told with: above any SLO violation, so that among
#: infeasible trials TPE ranks the ones that at least ran first
FAIL_VIOLATION = 1000.0


class Trials:
    """One generation's Optuna study as the study loop uses it. Only the loop's thread calls it."""

    def __init__(self, spec: TuningSpec, study: optuna.Study) -> None:
        self.spec = spec
        self.study = study
        self.legacy = legacy_axes(spec, study)

    @property
    def user_attrs(self) -> dict[str, Any]:
        return self.study.user_attrs

    def set_user_attr(self, key: str, value: Any) -> None:
        self.study.set_user_attr(key, value)

    def ask(self) -> tuple[optuna.Trial, Config]:
        trial = self.study.ask()
        return trial, suggest(trial, self.spec, self.legacy)

    def enqueue(self, config: Config, **user_attrs: Any) -> None:
        self.study.enqueue_trial(to_params(self.spec, config, self.legacy), user_attrs=user_attrs or None)

    def skip(self, trial: optuna.Trial, why: str) -> None:
        """A proposal not run (a constraint or an engine rule): infeasible, costs no budget."""
        trial.set_user_attr("skipped", why)
        self._set_constraints(trial, [], FAIL_VIOLATION)
        self.study.tell(trial, state=TrialState.PRUNED)

    def duplicate(self, number: int, prior: str) -> None:
        """A proposal measured already in this generation: kept out of the sampler's history."""
        storage = self.study._storage
        trial_id = storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        storage.set_trial_user_attr(trial_id, "duplicate_of", prior)
        self.study.tell(number, state=TrialState.FAIL)

    def tell(self, number: int, rec: ExperimentRecord) -> None:
        # Constraints must be set on the trial before it is told; for a trial known only by its
        # number (recovered after a crash, or answered from a record) Optuna has no public way
        # to get a Trial handle, hence its storage and study id.
        study = self.study
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
        handle = optuna.Trial(study, trial_id)
        if rec.state == "COMPLETE" and rec.objectives and all(o.value is not None for o in rec.objectives):
            self._set_constraints(handle, rec.constraints, 0.0)
            study.tell(number, [float(o.value or 0.0) for o in rec.objectives])
        elif rec.state == "PRUNED":
            self._set_constraints(handle, [], 0.0)
            study.tell(number, state=TrialState.PRUNED)
        elif rec.failure is not None and failure_side(rec.failure.kind) == "configuration":
            self._set_constraints(handle, [], FAIL_VIOLATION)
            study.tell(number, state=TrialState.PRUNED)
        else:
            study.tell(number, state=TrialState.FAIL)

    def requeue(self, number: int, params: dict[str, Any] | None = None) -> None:
        """An experiment that did not finish (crash, shutdown) is failed in Optuna — nothing is
        known about it — and its parameters are queued to run first next time."""
        trial = self.study.get_trials(deepcopy=False)[number]
        if params is None:
            params = trial.params
        attrs: dict[str, Any] = {"requeued_from": number}
        if trial.user_attrs.get("baseline"):
            attrs["baseline"] = True
        self.study.tell(number, state=TrialState.FAIL)
        self.study.enqueue_trial(params, user_attrs=attrs, skip_if_exists=False)

    def recover(self, records: Sequence[ExperimentRecord]) -> None:
        """The trials a crash left RUNNING: told from their record, or re-queued."""
        by_trial = {r.trial: r for r in records if r.trial is not None}
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            rec = by_trial.get(t.number)
            if rec is not None:
                log.info("trial %d was recorded as %s before a crash; telling Optuna", t.number, rec.id)
                self.tell(t.number, rec)
            else:
                log.info("trial %d was in flight when the last run stopped; re-queuing it", t.number)
                self.requeue(t.number, params_now(self.spec, t, self.legacy))

    def _set_constraints(self, handle: optuna.Trial, slo_values: Sequence[float], failed: float) -> None:
        # every trial carries the same keys: NSGA-II compares constraint vectors position by position
        hard = [m for m, b in self.spec.spec.slo.items() if b.hard]
        values = list(slo_values) + [0.0] * (len(hard) - len(slo_values))
        for metric, value in zip(hard, values, strict=False):
            handle.set_constraint(metric, value)
        handle.set_constraint("failed", failed)
