"""The study threads of the reconcile loop: one worker thread per running study.

The pass decides *whether* a spec's study runs (:mod:`reconciler.reconcile`); this module runs
it and records *why it stopped*. Each study runs in its own daemon thread with a stop event (set
when its spec changes, is deleted or suspended). Whatever ends the study is written to the spec's
``status.json``, since a status left at "Reconciling" would read as work in progress forever:

* a :class:`~specs.errors.UserError` stalls the spec (``InvalidInput``: not retried until the
  spec changes);
* a :class:`~specs.errors.TransientError` or an ``OSError`` sets ``Degraded`` and backs off;
* anything else is a bug: logged with its traceback, ``Degraded`` (``StudyCrashed``), backed off.

The backoff of each spec lives here (the thread that fails is the one that backs off); the pass
reads it to hold a spec back until its retry time.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.faults import fault_point
from reconciler.backoff import Backoff
from reconciler.git import mask
from reconciler.publisher import Publisher
from reconciler.results import ResultsStore
from reconciler.runspec import RunContext, run_spec, write_status
from reconciler.session import Session
from reconciler.status import Phase
from specs.errors import TransientError, UserError
from specs.loader import LoadedSpec

log = logging.getLogger(__name__)

ProgressFactory = Callable[[LoadedSpec], Callable[..., None] | None]


@dataclass
class Running:
    thread: threading.Thread
    stop: threading.Event
    generation: str


class Workers:
    def __init__(
        self, session: Session, publisher: Publisher, progress_factory: ProgressFactory | None
    ) -> None:
        self.session = session
        self.publisher = publisher
        self.progress_factory = progress_factory
        self.running: dict[str, Running] = {}
        self.backoff: dict[str, Backoff] = {}

    def start(self, name: str, loaded: LoadedSpec, ctx: RunContext) -> None:
        stop = threading.Event()
        ctx.stop = stop

        def on_change(message: str) -> None:
            fault_point("study_change")  # tests: a bug in the study thread
            self.publisher.changed(message)

        ctx.on_change = on_change
        ctx.progress = self.progress_factory(loaded) if self.progress_factory else None
        thread = threading.Thread(
            target=self._work, args=(name, loaded, ctx), name=f"study-{name}", daemon=True
        )
        self.running[name] = Running(thread, stop, loaded.spec.generation())
        log.info("spec=%s generation=%s: starting study", name, loaded.spec.generation())
        thread.start()

    def _work(self, name: str, loaded: LoadedSpec, ctx: RunContext) -> None:
        """A study thread: run the study; whatever stops it is recorded in the spec's status."""
        try:
            ctx.backend = self.session.backend(loaded)
            run_spec(loaded, ctx)
            self.backoff.pop(name, None)
        except UserError as exc:
            log.warning("spec=%s stalled: %s", name, exc)
            self._record_stop(name, loaded, ctx, "stalled", str(exc), "InvalidInput")
        except (TransientError, OSError) as exc:
            bo = self.backoff.setdefault(name, Backoff())
            delay = bo.fail()
            log.warning("spec=%s transient error, retrying in %.0fs: %s", name, delay, exc)
            self._degrade_quietly(name, "TransientError", f"{mask(str(exc))}; retrying in {delay:.0f}s", bo)
        except Exception as exc:
            log.exception("spec=%s study crashed", name)
            bo = self.backoff.setdefault(name, Backoff())
            delay = bo.fail()
            self._degrade_quietly(
                name,
                "StudyCrashed",
                f"the study crashed ({type(exc).__name__}: {mask(str(exc))}); retrying in {delay:.0f}s",
                bo,
            )

    def _record_stop(
        self, name: str, loaded: LoadedSpec, ctx: RunContext, phase: Phase, message: str, reason: str
    ) -> None:
        try:
            store = ResultsStore(ctx.results_root, name)
            if write_status(loaded.spec, store, ctx, phase, message, reason=reason):
                self.publisher.changed(f"{name}: {reason}")
        except Exception:
            log.exception("spec=%s: recording why its study stopped failed", name)

    def _degrade_quietly(self, name: str, reason: str, message: str, bo: Backoff) -> None:
        try:
            self.publisher.degrade(name, reason, message, bo)
        except Exception:  # the status write itself failed: the log line above is all we have
            log.exception("spec=%s: could not record the failure in status.json", name)

    def reap(self) -> None:
        for name, run in list(self.running.items()):
            if not run.thread.is_alive():
                del self.running[name]

    def stop_all(self, timeout: float = math.inf) -> None:
        for run in self.running.values():
            run.stop.set()
        deadline = time.monotonic() + timeout
        for run in list(self.running.values()):
            run.thread.join(timeout=max(0.0, deadline - time.monotonic()) if math.isfinite(timeout) else None)
        self.reap()
