"""What is left of a generation's budget, and whether another experiment may start now.

The budget counts experiments recorded in this generation (``maxExperiments``), failed ones
included; environment failures count for nothing (:func:`reconciler.study.identity.host_failed`)
and confirmations (``confirms``) run after the budget. The study stops starting experiments when
the budget is spent, when ``maxFailedExperiments`` is reached, when the host failed one (the study
pauses and is retried), or when the space is exhausted: a finite space with no unmeasured point
left, or :data:`EXHAUSTED_AFTER` proposals in a row that were duplicates or broke a constraint
(what a sampler does once it has nothing new to say).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from specs.model import TuningSpec
from specs.records import ExperimentRecord
from specs.space import feasible_count

#: consecutive samples that were duplicates or violated constraints before the space counts as exhausted
EXHAUSTED_AFTER = 60


@dataclass
class Budget:
    total: int
    parallelism: int
    max_failed: int | None
    #: experiments recorded in this generation, and how many of them failed
    done: int = 0
    failed: int = 0
    #: distinct configurations of a finite space not yet measured (None: the space is not finite)
    distinct_left: int | None = None
    #: proposals in a row that found nothing to measure
    misses: int = 0
    exhausted: bool = False
    #: the first experiment that failed on the host's side in this run
    host_trouble: ExperimentRecord | None = None

    @classmethod
    def of(cls, spec: TuningSpec, counted: Sequence[ExperimentRecord]) -> Budget:
        """The budget left after this generation's ``counted`` records (a resumed study)."""
        search = spec.spec.search
        finite = feasible_count(spec)
        measured = {r.config_hash for r in counted if not (r.baseline and r.trial is None)}
        return cls(
            total=search.max_experiments,
            parallelism=search.parallelism,
            max_failed=search.max_failed_experiments,
            done=len([r for r in counted if r.confirms is None]),
            failed=len([r for r in counted if r.state == "FAILED"]),
            distinct_left=None if finite is None else finite - len(measured),
        )

    def room(self, inflight: int) -> bool:
        """Another experiment may start beside the ``inflight`` ones."""
        return (
            inflight < self.parallelism
            and self.done + inflight < self.total
            and not self.exhausted
            and not (self.max_failed is not None and self.failed >= self.max_failed)
            and self.host_trouble is None
        )

    def space_left(self) -> bool:
        """A finite space still has an unmeasured point; marks the space exhausted when not."""
        if self.distinct_left is not None and self.distinct_left <= 0:
            self.exhausted = True
        return not self.exhausted

    def miss(self) -> None:
        """A proposal found nothing to measure (a duplicate, a constraint)."""
        self.misses += 1
        if self.misses >= EXHAUSTED_AFTER:
            self.exhausted = True

    def hit(self, baseline: bool) -> None:
        """A proposal found a configuration new to this generation (the baseline measured as
        ``{}`` is no point of the space)."""
        self.misses = 0
        if self.distinct_left is not None and not baseline:
            self.distinct_left -= 1

    def count(self, r: ExperimentRecord) -> None:
        self.done += 1
        self.failed += r.state == "FAILED"
