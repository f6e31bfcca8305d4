"""One spec generation's study loop: choose a candidate, start it within the budget, record what
it measured — resumable after any crash.

Each turn of the loop is three steps, each with its own home:

* candidate choice (:class:`~reconciler.study.candidates.Chooser`): the baseline, the sampler's
  proposal, constraints, duplicates;
* budget (:class:`~reconciler.study.budget.Budget`): whether another experiment may start;
* recording (:meth:`Study._finish`): the record written, then told to the sampler, counted, and
  taken as the incumbent where it is the best so far.

A candidate measured before (any generation, :class:`~reconciler.study.identity.Known`) is
answered from that record instead of started. After the search, the best ``confirmTop``
configurations are measured once more (:meth:`Study._confirm`).

Only the thread that calls :meth:`Study.run` talks to Optuna; experiments run in worker threads
(``parallelism`` of them), each told to stop through one ``cancel`` event on shutdown; an
experiment cut short is re-queued, never recorded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, cast

from core.clock import now
from core.faults import crash_point
from reconciler.results import ResultsStore
from reconciler.study.budget import Budget
from reconciler.study.candidates import Candidate, Chooser
from reconciler.study.contract import Executor, GateVerdict, Measurement, Progress
from reconciler.study.gate import Gate
from reconciler.study.identity import Known, host_failed
from reconciler.study.record import RecordBuilder
from reconciler.study.sampler import open_study
from reconciler.study.start import enqueue_grid, enqueue_start, warm_configs
from reconciler.study.trials import Trials
from specs.errors import FAILURE_HINTS, HostUnavailable
from specs.model import TuningSpec
from specs.ranking import best as best_record
from specs.ranking import rankable
from specs.records import ExperimentRecord, FailureRecord, LoadPointRecord
from specs.space import Config, constraint_view, constraints, in_space

#: how long the loop waits for an experiment to finish before it looks at the stop flag again
POLL_S = 0.5


@dataclass
class StudyOutcome:
    """What :meth:`Study.run` did: this generation's totals, and why it stopped."""

    generation: str
    completed: int
    failed: int
    #: recorded PRUNED: clearly worse than the best at a lower load level, not run further
    pruned: int
    reused: int
    exhausted: bool
    interrupted: bool
    best: ExperimentRecord | None


@dataclass
class _Run:
    """The state of one :meth:`Study.run`."""

    trials: Trials
    budget: Budget
    known: Known
    chooser: Chooser
    pool: ThreadPoolExecutor
    cancel: threading.Event = field(default_factory=threading.Event)
    inflight: dict[Future[Measurement], Candidate] = field(default_factory=dict)
    reused: int = 0


class Study:
    """One spec generation's study over ``store``, measuring with ``executor``.

    ``engine_flags_of`` resolves a configuration to the engine's flags (part of its identity);
    ``is_valid`` says whether the engine can run it (start-up rules, the memory pre-check);
    ``default_config`` is the engine's default in the space's terms, when known; ``warm_start``
    holds records of related specs. Setting ``stop`` ends :meth:`run` within a poll interval:
    the experiments in flight are cancelled and re-queued, not recorded."""

    def __init__(
        self,
        spec: TuningSpec,
        store: ResultsStore,
        executor: Executor,
        *,
        workload_fingerprint: str,
        workload_info: dict[str, Any],
        engine_flags_of: Callable[[Config], dict[str, Any]],
        is_valid: Callable[[Config], bool] = lambda c: True,
        progress: Progress | None = None,
        on_record: Callable[[ExperimentRecord], None] | None = None,
        stop: threading.Event | None = None,
        default_config: Config | None = None,
        warm_start: Sequence[ExperimentRecord] = (),
    ) -> None:
        self.spec = spec
        self.store = store
        self.executor = executor
        self.fingerprint = workload_fingerprint
        self.engine_flags_of = engine_flags_of
        self.is_valid = is_valid
        self.progress = progress or (lambda event, info: None)
        self.on_record = on_record or (lambda r: None)
        self.stop = stop or threading.Event()
        self.generation = spec.generation()
        self.search = spec.spec.search
        self.constraints = constraints(spec)
        self.default_config = (
            default_config if default_config is not None and in_space(spec, default_config) else None
        )
        self.warm_start = list(warm_start)
        self.gate = Gate(spec)
        self.builder = RecordBuilder(spec, workload_fingerprint, workload_info)

    def level_gate(
        self, config: Config, points: list[LoadPointRecord], remaining: list[float]
    ) -> GateVerdict | None:
        """Called by the executor after each load level, from its thread (:mod:`reconciler.study.gate`)."""
        return self.gate(config, points, remaining)

    def _records(self) -> list[ExperimentRecord]:
        return [r for r in self.store.experiments() if r.generation == self.generation]

    def _allowed(self, config: Config) -> bool:
        view = constraint_view(config)
        return all(c.evaluate(view) for c in self.constraints) and self.is_valid(config)

    # ------------------------------------------------------------------ the loop

    def run(self) -> StudyOutcome:
        run = self._prepare()
        try:
            while not self.stop.is_set():
                self._fill(run)
                if not run.inflight:
                    break
                finished, _ = wait(list(run.inflight), timeout=POLL_S, return_when=FIRST_COMPLETED)
                for fut in finished:
                    self._settle(run, fut, draining=False)
        finally:
            if self.stop.is_set():
                run.cancel.set()
            for fut in list(run.inflight):
                self._settle(run, fut, draining=True)  # the executor tears its engine down when cancelled
            run.pool.shutdown(wait=True)
        self._raise_for_host(run.budget)
        if not self.stop.is_set() and self.search.confirm_top > 0:
            self._confirm(run.cancel)
        records = self._records()
        return StudyOutcome(
            generation=self.generation,
            completed=len([r for r in records if r.state == "COMPLETE"]),
            failed=len([r for r in records if r.state == "FAILED"]),
            pruned=len([r for r in records if r.state == "PRUNED"]),
            reused=run.reused,
            exhausted=run.budget.exhausted,
            interrupted=self.stop.is_set(),
            best=best_record(records),
        )

    def _prepare(self) -> _Run:
        """Open (or resume) the generation's study: recover what a crash left, enqueue the start,
        and count what this generation has recorded already."""
        trials = Trials(self.spec, open_study(self.spec, self.store))
        records = self._records()
        trials.recover(records)
        enqueue_start(trials, self.spec, records, self.default_config, self._warm_configs)
        if self.search.strategy == "grid":
            enqueue_grid(trials, self.spec, self.default_config, self.is_valid)
        # an environment failure says nothing about its configuration and spent no budget: the
        # configuration is measured again once the host can run it
        counted = [r for r in records if not host_failed(r)]
        budget = Budget.of(self.spec, counted)
        # with a known default the baseline is the first enqueued trial; else it is measured as {}
        need_baseline = (
            self.search.include_default
            and self.default_config is None
            and not any(r.baseline for r in counted)
        )
        chooser = Chooser(
            self.spec,
            trials,
            engine_flags_of=self.engine_flags_of,
            fingerprint=self.fingerprint,
            allowed=self._allowed,
            need_baseline=need_baseline,
        )
        self.gate.update(records)
        pool = ThreadPoolExecutor(
            max_workers=self.search.parallelism, thread_name_prefix=f"exp-{self.spec.name}"
        )
        run = _Run(trials, budget, Known.of(self.store.experiments(), counted), chooser, pool)
        self.progress("study", {"generation": self.generation, "done": budget.done, "budget": budget.total})
        return run

    def _warm_configs(self) -> list[Config]:
        earlier = [
            *(r for r in self.store.experiments() if r.generation != self.generation),
            *self.warm_start,
        ]
        return warm_configs(self.spec, earlier, self.default_config, self._allowed)

    def _fill(self, run: _Run) -> None:
        """Start experiments while the budget has room (answering from records where it can)."""
        while run.budget.room(len(run.inflight)) and not self.stop.is_set():
            cand = run.chooser.next(run.budget, run.known)
            if cand is not None:
                self._dispatch(run, cand)

    def _dispatch(self, run: _Run, cand: Candidate) -> None:
        """Answer ``cand`` from an earlier record, record it as predicted to fail, or start it."""
        source = run.known.reusable.get(cand.chash)
        if source is not None:
            run.reused += 1
            self._finish(run, self.builder.reused(source, cand.config, cand.trial, cand.baseline), cand.trial)
            return
        if cand.baseline and cand.config and not self.is_valid(cand.config):
            # the engine default itself is predicted to fail (a 70B model at TP 1): recorded as
            # the comparison point, with the reason, but not run
            predicted = Measurement(
                state="FAILED",
                failure=FailureRecord(
                    kind="invalid_config",
                    reason="the engine default is excluded by a start-up rule or the memory "
                    "pre-check (autotuner plan lists why); not run",
                ),
                started_at=now(),
            )
            self._finish(run, self._build(cand, predicted), cand.trial)
            return
        self.progress(
            "started",
            {
                "config": cand.config,
                "baseline": cand.baseline,
                "trial": cand.trial,
                "number": run.budget.done + len(run.inflight) + 1,
                "budget": run.budget.total,
            },
        )
        fut = run.pool.submit(self.executor, cand.config, baseline=cand.baseline, cancel=run.cancel)
        run.inflight[fut] = cand
        run.known.inflight.add(cand.chash)

    def _settle(self, run: _Run, fut: Future[Measurement], *, draining: bool) -> None:
        """A finished experiment: recorded, or re-queued when it was cut short (a shutdown)."""
        cand = run.inflight.pop(fut)
        run.known.inflight.discard(cand.chash)
        m = fut.result()
        if m.interrupted or (draining and self.stop.is_set()):
            if cand.trial is not None:
                run.trials.requeue(cand.trial)
            return
        self._finish(run, self._build(cand, m), cand.trial)

    def _build(self, cand: Candidate, m: Measurement) -> ExperimentRecord:
        return self.builder.build(cand.config, m, trial=cand.trial, baseline=cand.baseline, chash=cand.chash)

    # ------------------------------------------------------------------ recording

    def _finish(self, run: _Run, rec: ExperimentRecord, trial: int | None) -> None:
        """Write the record, then tell the sampler, count it and update the incumbent — in this
        order, so that a crash between any two steps is recovered from the record."""
        written = self.store.add_experiment(rec)
        crash_point("record_written")
        if host_failed(written):
            # recorded (the site and status show it), not counted, not learned: the same
            # configuration is asked again when the study resumes; nothing more is started
            if trial is not None:
                run.trials.requeue(trial)
            run.budget.host_trouble = run.budget.host_trouble or written
        else:
            if trial is not None:
                run.trials.tell(trial, written)
            run.budget.count(written)
            self.gate.update([written])
            run.known.add(written)
        self.on_record(written)
        self.progress("finished", {"record": written, "done": run.budget.done, "budget": run.budget.total})

    def _raise_for_host(self, budget: Budget) -> None:
        trouble = budget.host_trouble
        if trouble is None or self.stop.is_set():
            return
        f = trouble.failure
        assert f is not None
        raise HostUnavailable(
            f"experiment #{trouble.id} failed on the host's side ({f.kind}: {f.reason}); "
            f"the study pauses at {budget.done}/{budget.total} and is retried",
            hint=f.kind and FAILURE_HINTS.get(f.kind),
        )

    def _confirm(self, cancel: threading.Event) -> None:
        """Re-measure the best ``confirmTop`` distinct configurations once each, after the search.

        The re-measurements are recorded (``confirms`` names the original) but never told to the
        sampler nor ranked: they are the evidence of the winner's spread, which the report sets
        against its gain over the default. Done ones are not repeated after a restart."""
        records = self._records()
        confirmed = {r.confirms for r in records if r.confirms is not None}
        order = sorted(rankable(records), key=lambda r: [-k for k in _larger_is_better(r)])
        seen: set[str] = set()
        top: list[ExperimentRecord] = []
        for r in order:
            if r.config_hash not in seen:
                seen.add(r.config_hash)
                top.append(r)
        for source in top[: self.search.confirm_top]:
            if source.id in confirmed or self.stop.is_set():
                continue
            config = cast(Config, dict(source.config))
            # progress lines read "[confirm/#0007] ..." for these
            where = {"number": "confirm", "budget": f"#{source.id}"}
            self.progress("started", {"config": config, "baseline": source.baseline, **where})
            m = self.executor(config, baseline=source.baseline, cancel=cancel)
            if m.interrupted:
                return
            rec = self.builder.build(
                config, m, trial=None, baseline=source.baseline, chash=source.config_hash
            )
            written = self.store.add_experiment(rec.model_copy(update={"confirms": source.id}))
            self.on_record(written)
            self.progress("finished", {"record": written, "done": "confirm", "budget": f"#{source.id}"})


def _larger_is_better(r: ExperimentRecord) -> list[float]:
    return [(o.value or 0.0) if o.direction == "maximize" else -(o.value or 0.0) for o in r.objectives]
