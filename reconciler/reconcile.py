"""The reconcile loop (after Flux and controller-runtime): level-based and idempotent.

A pass reads the specs at the fetched revision and the results already committed, and moves each
spec toward done: invalid → ``Stalled`` (not retried until the spec changes); suspended → no new
experiments; work left in its generation → run (or keep running) its study; finished → nothing.
Running a pass twice with nothing new starts no experiment and makes no commit.

Threads: the pass itself runs in one thread; each study runs in its own worker thread, started by
the pass and stopped (via its stop event) when its spec changes, is deleted or suspended. Studies
write the live results in the state directory; one commit-back writer copies what changed into
git (:mod:`reconciler.workspace`), so there is a single git writer and git never touches a file
a study writes.

This module is the pass and each spec's step of it. Its parts live beside it, one concern each:
reading and validating the desired state with the identity rule (:mod:`reconciler.desired`), the
study threads and why they stop (:mod:`reconciler.workers`), the one git writer and the
``Degraded`` conditions it shows (:mod:`reconciler.publisher`), and retry timing
(:mod:`reconciler.backoff`).

Spec files are untrusted input (docs/security.md), which shapes three rules here:

* **One identity rule.** A spec is its ``metadata.name`` (it names ``results/<name>/``); an
  invalid file claims the name it would write to (its ``metadata.name`` when readable, else its
  file stem). When several files claim one name, exactly one *holds* it, decided the same way on
  every pass and every host: the file that ``results/<name>/status.json`` already names, else
  the file added to the history first, else the first path. The others are refused with a
  located message naming the holder, write nothing and never stop the holder's study.
* **Per-spec isolation.** Each spec's step of a pass runs under its own ``try``: an unexpected
  error is logged with the spec's name and the pass goes on with the others.
* **Bounded work before validation.** A file above the loader's size cap is never parsed, not
  even to find a fallback name or a placement; the raw YAML of invalid files is read with the
  loader's node budget (``yaml.safe_load`` would expand an alias bomb) and cached by content.

Trouble is visible where users look: a crashed study, a transient failure in backoff and a
failing commit-back each set a ``Degraded`` condition (reason, message, next retry time) in the
spec's ``status.json``, which ``autotuner status`` and the site show. A spec's
``lastAppliedRevision`` is the last commit that touched its own file, so a push to one spec never
rewrites another's status (no commit churn).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from reconciler.backoff import Backoff
from reconciler.desired import DesiredState, SpecEntry, may_claim, printable_path, selects
from reconciler.git import mask
from reconciler.logs import log_event
from reconciler.publisher import Publisher, Tally
from reconciler.results import ResultsStore
from reconciler.runspec import RunContext, write_status
from reconciler.session import Session
from reconciler.status import build_status
from reconciler.workers import Running, Workers
from reconciler.workspace import Workspace
from specs.loader import LoadedSpec
from specs.paths import real_dir
from specs.policy import Policy
from specs.records import StatusRecord

log = logging.getLogger(__name__)


Action = Literal[
    "stalled", "suspended", "done", "run", "running", "skipped", "backoff", "queued", "conflict", "error"
]

#: Stalled reasons that hold until the spec changes (anything else is retried)
_FINAL_STALLS = ("InvalidInput", "StudyFailed")


@dataclass
class PassReport:
    revision: str
    actions: dict[str, Action] = field(default_factory=dict)
    #: during this pass (with ``wait``: including the studies it ran to completion)
    experiments: int = 0
    commits: int = 0
    pushed: int = 0

    @property
    def committed(self) -> bool:
        return self.commits > 0

    @property
    def busy(self) -> bool:
        """Whether the pass did or started anything (else the daemon logs it at DEBUG)."""
        return bool(self.experiments or self.commits or any(a == "run" for a in self.actions.values()))


class Reconciler:
    def __init__(
        self,
        workspace: Workspace,
        session: Session,
        *,
        labels: dict[str, str] | None = None,
        site_dir: Path | None = None,
        site_branch: str | None = None,
        site_title: str | None = None,
        max_parallel: int = 4,
        progress_factory: Callable[[LoadedSpec], Callable[..., None] | None] | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.ws = workspace
        self.policy = policy or session.policy
        self.session = session
        self.labels = labels or {}
        self.publisher = Publisher(
            workspace, site_dir=site_dir, site_branch=site_branch, site_title=site_title
        )
        self.desired = DesiredState(workspace, self.policy)
        #: specs this host worked on in the last pass (not skipped by placement)
        self.known: set[str] = set()
        self.max_parallel = max_parallel
        self.workers = Workers(session, self.publisher, progress_factory)
        #: (path, holder) conflicts already logged: a conflict is logged once, not every pass
        self._told: set[tuple[str, str]] = set()
        self.revision: str | None = None

    # ------------------------------------------------------------------ the publisher's face

    @property
    def running(self) -> dict[str, Running]:
        """The study threads now running, by spec name."""
        return self.workers.running

    def stop_all(self, timeout: float = math.inf) -> None:
        self.workers.stop_all(timeout)

    @property
    def tally(self) -> Tally:
        return self.publisher.tally

    @property
    def site_dir(self) -> Path | None:
        return self.publisher.site_dir

    @property
    def site_branch(self) -> str | None:
        return self.publisher.site_branch

    def changed(self, message: str) -> None:
        self.publisher.changed(message)

    def flush(self) -> bool:
        return self.publisher.flush()

    def refresh_site(self) -> None:
        """Build (and publish) the site even when nothing changed: after the first pass, so that
        a fresh host that only took finished results from the repository still has a site."""
        self.publisher.rebuild_site(publish=True)

    def sync_failed(self, message: str, bo: Backoff) -> None:
        """The pass could not fetch: every spec this host works on shows it."""
        self.publisher.sync_failed(self.known, message, bo)

    # ------------------------------------------------------------------ one pass

    def reconcile(self, *, wait: bool) -> PassReport:
        """One pass. With ``wait``, studies started by this pass run to completion before it returns
        (``autotuner reconcile``); otherwise they keep running in the background (the daemon)."""
        revision = self.ws.fetch()
        self.revision = revision
        before = Tally(**vars(self.tally))
        # the revision of the desired state: the daemon's own result commits do not move it
        report = PassReport(revision=self.ws.specs_revision(revision))
        entries = self.desired.read(revision)
        # each spec's own revision: a push to one spec must not touch another's status
        own = self.ws.file_revisions(revision, [e.path for e in entries])
        self._own_results_dir()
        for entry in entries:
            if entry.held_by is not None:
                self._refuse(entry)
                report.actions.setdefault(entry.name, "conflict")
                continue
            report.actions[entry.name] = self._reconcile_guarded(entry, own.get(entry.path, revision))
        self.known = {n for n, a in report.actions.items() if a not in ("skipped", "conflict")}
        self._stop_deleted({entry.name for entry in entries})
        if wait:
            self._run_to_completion(entries, own, revision, report)
        self.flush()
        report.experiments = self.tally.experiments - before.experiments
        report.commits = self.tally.commits - before.commits
        report.pushed = self.tally.pushed - before.pushed
        return report

    def _stop_deleted(self, wanted: set[str]) -> None:
        for name in list(self.running):
            if name not in wanted:
                log.info("spec %s was deleted: stopping its study (results stay)", name)
                self.running[name].stop.set()
        self.workers.reap()

    def _run_to_completion(
        self, entries: list[SpecEntry], own: dict[str, str], revision: str, report: PassReport
    ) -> None:
        """A one-shot pass runs every spec that needs work: queued ones start as slots free up."""
        queued = [e for e in entries if report.actions.get(e.name) == "queued"]
        while self.running or queued:
            for run in list(self.running.values()):
                run.thread.join(timeout=0.5)
            self.workers.reap()
            self.flush()
            while queued and len(self.running) < self.max_parallel:
                entry = queued.pop(0)
                report.actions[entry.name] = self._reconcile_guarded(entry, own.get(entry.path, revision))
        # a study that just finished wrote its final status
        for entry in entries:
            if entry.loaded is not None and report.actions.get(entry.name) == "run":
                report.actions[entry.name] = self._final_action(entry)

    def _own_results_dir(self) -> None:
        """``results/`` itself must be the daemon's folder: a pushed symlink there is replaced
        (in the state directory, where studies write), never written through."""
        replaced: list[Path] = []
        real_dir(self.ws.state_dir, ["results"], replaced=replaced)
        for path in replaced:
            log.warning("%s was a symlink or a file: replaced by the daemon's own folder", path)

    def _refuse(self, entry: SpecEntry) -> None:
        """A file refused by the identity rule writes nothing (the name's folder is the holder's):
        it is logged once per (file, holder), with the located message."""
        assert entry.held_by is not None
        key = (entry.path, entry.held_by)
        if key in self._told:
            return
        self._told.add(key)
        log_event(
            log,
            logging.WARNING,
            "spec refused: name in use",
            spec=entry.name,
            file=printable_path(entry.path),
            holder=printable_path(entry.held_by),
            first=str(entry.problems[0]) if entry.problems else None,
        )

    def _final_action(self, entry: SpecEntry) -> Action:
        status = self._store(entry.name).status()
        if status is not None:
            for kind, action in (("Stalled", "stalled"), ("Degraded", "backoff"), ("Ready", "done")):
                c = status.condition(kind)
                if c is not None and c.status == "True":
                    return action  # type: ignore[return-value]
        return "running"

    def _store(self, name: str) -> ResultsStore:
        return ResultsStore(self.ws.results_dir, name)

    # ------------------------------------------------------------------ one spec's step

    def _reconcile_guarded(self, entry: SpecEntry, revision: str) -> Action:
        """One spec's step; an unexpected error is that spec's trouble (logged, shown as Degraded,
        retried with backoff), never the pass's or the daemon's."""
        try:
            action = self._reconcile_one(entry, revision)
            self.publisher.recovered(entry.name, ("ReconcileError", "SyncFailing"))
            return action
        except Exception as exc:
            log.exception("spec=%s: reconcile step failed", entry.name)
            bo = self.workers.backoff.setdefault(entry.name, Backoff())
            bo.fail()
            with contextlib.suppress(Exception):
                self.publisher.degrade(
                    entry.name, "ReconcileError", f"{type(exc).__name__}: {mask(str(exc))}", bo
                )
            return "backoff"

    def _placed_here(self, entry: SpecEntry) -> bool:
        if entry.loaded is None:
            return not self.labels or may_claim(entry, self.labels)
        return selects(entry.loaded, self.labels)

    def _reconcile_one(self, entry: SpecEntry, revision: str) -> Action:
        if not self._placed_here(entry):
            return "skipped"
        self.ws.sync_live(entry.name, running=entry.name in self.running)
        if entry.loaded is None:
            return self._stall_invalid(entry, revision)
        spec = entry.loaded.spec
        generation = spec.generation()
        run = self.running.get(entry.name)
        if run is not None:
            if run.generation != generation or spec.spec.suspend:
                log.info("spec %s changed (generation %s): stopping the old study", entry.name, generation)
                run.stop.set()
            return "running"
        if spec.spec.suspend:
            return self._suspend(entry, entry.loaded, revision)
        settled = _settled(self._store(entry.name).status(), generation)
        if settled is not None:
            return settled
        bo = self.workers.backoff.get(entry.name)
        if bo is not None and bo.waiting:
            return "backoff"
        if len(self.running) >= self.max_parallel:
            return "queued"
        self.workers.start(entry.name, entry.loaded, self._context(entry, revision))
        return "run"

    def _stall_invalid(self, entry: SpecEntry, revision: str) -> Action:
        """An invalid spec: ``Stalled`` with its located problems, and its study (if any) stopped."""
        store = self._store(entry.name)
        status = build_status(
            name=entry.name,
            phase="stalled",
            old=store.status(),
            problems=entry.problems,
            message=f"invalid spec: {len(entry.problems)} problem(s); fix {entry.path}",
            revision=revision,
            spec_file=entry.path,
        )
        if store.write_status(status):
            log_event(
                log,
                logging.WARNING,
                "spec stalled",
                spec=entry.name,
                file=entry.path,
                problems=len(entry.problems),
                first=str(entry.problems[0]) if entry.problems else None,
            )
            self.changed(f"{entry.name}: stalled, invalid spec")
        run = self.running.get(entry.name)
        if run is not None:
            run.stop.set()
        return "stalled"

    def _suspend(self, entry: SpecEntry, loaded: LoadedSpec, revision: str) -> Action:
        store = self._store(entry.name)
        store.ensure()
        if write_status(
            loaded.spec,
            store,
            self._context(entry, revision),
            "suspended",
            "spec.suspend is true: no new experiments",
        ):
            self.changed(f"{entry.name}: suspended")
        return "suspended"

    def _context(self, entry: SpecEntry, revision: str) -> RunContext:
        return RunContext(
            results_root=self.ws.results_dir,
            state_dir=self.session.state_dir,
            base_dir=self.ws.clone_dir,
            leaser=self.session.leaser,
            revision=revision,
            spec_file=entry.path,
            policy=self.policy,
        )


def _settled(old: StatusRecord | None, generation: str) -> Action | None:
    """``done`` or ``stalled`` when the committed status already answers this generation."""
    if old is None or old.observed_generation != generation:
        return None
    ready = old.condition("Ready")
    if ready is not None and ready.status == "True":
        return "done"
    stalled = old.condition("Stalled")
    if stalled is not None and stalled.status == "True" and stalled.reason in _FINAL_STALLS:
        return "stalled"
    return None
