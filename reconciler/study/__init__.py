"""One spec generation's Optuna study: ask, run, record, tell — resumable after any crash.

The package, one module per concern (each states its design decisions):

* :mod:`~reconciler.study.loop` — :class:`Study`, the loop: candidate, budget, recording;
* :mod:`~reconciler.study.contract` — what executors answer (``Measurement``) and ask (the gate);
* :mod:`~reconciler.study.candidates` — candidate choice: baseline, constraints, duplicates;
* :mod:`~reconciler.study.budget` — what is left, exhaustion, parallelism;
* :mod:`~reconciler.study.start` — baseline, warm start and grid, enqueued once per generation;
* :mod:`~reconciler.study.sampler` — the journal, the sampler, configurations as trial parameters;
* :mod:`~reconciler.study.trials` — telling Optuna, crash recovery, why failures are PRUNED;
* :mod:`~reconciler.study.identity` — the configuration hash, which records are reused;
* :mod:`~reconciler.study.record` — a measurement as an experiment record;
* :mod:`~reconciler.study.gate` — the level gate: stop levels past a hard SLO miss, prune.

Only the study's entry point is exported here; the other names are imported from their module.
"""

from reconciler.study.loop import Study, StudyOutcome

__all__ = ["Study", "StudyOutcome"]
