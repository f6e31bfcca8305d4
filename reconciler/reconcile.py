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

Trouble is visible where users look: a crashed study, a transient failure in backoff and a
failing commit-back each set a ``Degraded`` condition (reason, message, next retry time) in the
spec's ``status.json``, which ``autotuner status`` and the site show. A spec's
``lastAppliedRevision`` is the last commit that touched its own file, so a push to one spec never
rewrites another's status (no commit churn).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from backends.faults import fault_point
from reconciler.checking import check_loaded
from reconciler.git import GitError, mask
from reconciler.logs import SecretFilter, log_event
from reconciler.results import ResultsStore
from reconciler.runspec import RunContext, run_spec, write_status
from reconciler.session import Session
from reconciler.status import build_status, degraded
from reconciler.study import now
from reconciler.workspace import CommitBack, Workspace
from specs.errors import SpecError, SpecProblem, TransientError, UserError
from specs.loader import LoadedSpec, load_spec_text
from specs.model import DNS1123_LABEL

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 30.0
BACKOFF_MAX_S = 3600.0


def fallback_name(path: str, text: bytes) -> str:
    """A results folder name for a spec that may be invalid: its metadata.name when that is a
    valid label, else a sanitized file stem."""
    try:
        data = yaml.safe_load(text[:65536]) if len(text) < 1_000_000 else None
        name = data.get("metadata", {}).get("name") if isinstance(data, dict) else None
        if isinstance(name, str) and DNS1123_LABEL.match(name) and len(name) <= 63:
            return name
    except Exception:  # invalid YAML: fall back to the file name
        pass
    stem = Path(path).stem.lower()
    stem = re.sub(r"[^a-z0-9-]+", "-", stem).strip("-")[:63].strip("-")
    return stem or "invalid-spec"


#: a failing commit-back is retried sooner than a failing study: it is cheap, and results wait on it
COMMIT_BACKOFF_BASE_S = 5.0
COMMIT_BACKOFF_MAX_S = 600.0


@dataclass
class Backoff:
    failures: int = 0
    not_before: float = 0.0
    retry_at: str | None = None
    base: float = BACKOFF_BASE_S
    limit: float = BACKOFF_MAX_S

    def fail(self) -> float:
        self.failures += 1
        delay = min(self.limit, self.base * 2 ** (self.failures - 1)) * random.uniform(0.8, 1.2)
        self.not_before = time.monotonic() + delay
        self.retry_at = _wall_clock_in(delay)
        return delay


def _commit_backoff() -> Backoff:
    return Backoff(base=COMMIT_BACKOFF_BASE_S, limit=COMMIT_BACKOFF_MAX_S)


def _wall_clock_in(seconds: float) -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="seconds")


@dataclass
class SpecEntry:
    path: str
    name: str
    loaded: LoadedSpec | None
    problems: list[SpecProblem]
    text: bytes = b""


@dataclass
class Running:
    thread: threading.Thread
    stop: threading.Event
    generation: str


Action = Literal["stalled", "suspended", "done", "run", "running", "skipped", "backoff", "queued"]


@dataclass
class Tally:
    """What a process did, for summaries that tell the truth (counted where it happens)."""

    experiments: int = 0
    commits: int = 0
    pushed: int = 0
    commit_failures: int = 0


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
    ) -> None:
        self.ws = workspace
        self.session = session
        self.labels = labels or {}
        self.site_branch = site_branch
        # a site branch needs a built site: by default in the state directory
        self.site_dir = (
            site_dir if site_dir is not None or site_branch is None else workspace.state_dir / "site"
        )
        self.site_title = site_title
        self.tally = Tally()
        #: specs this host worked on in the last pass (not skipped by placement)
        self.known: set[str] = set()
        self._redact = SecretFilter()
        self.commit_backoff = _commit_backoff()
        self.last_commit: CommitBack | None = None
        self.max_parallel = max_parallel
        self.progress_factory = progress_factory
        self.running: dict[str, Running] = {}
        self._checked: dict[tuple[str, bytes], LoadedSpec | SpecError] = {}
        self.backoff: dict[str, Backoff] = {}
        self.revision: str | None = None
        self._dirty = threading.Event()
        self._messages: list[str] = []
        self._msg_lock = threading.Lock()

    # ------------------------------------------------------------------ desired state

    def desired(self, revision: str) -> list[SpecEntry]:
        files = self.ws.spec_files(revision)
        entries: list[SpecEntry] = []
        seen: dict[str, str] = {}
        cache: dict[tuple[str, bytes], LoadedSpec | SpecError] = {}
        for path in sorted(files):
            text = files[path]
            try:
                loaded = self._check(path, text, cache)
                name = loaded.name
                if name in seen:
                    problem = loaded.problem(
                        ("metadata", "name"), f"name {name!r} is also used by {seen[name]}"
                    )
                    entries.append(SpecEntry(path, name, None, [problem], text))
                    continue
                seen[name] = path
                entries.append(SpecEntry(path, name, loaded, [], text))
            except SpecError as exc:
                entries.append(SpecEntry(path, fallback_name(path, text), None, exc.problems, text))
        self._checked = cache
        return entries

    def _check(
        self, path: str, text: bytes, cache: dict[tuple[str, bytes], LoadedSpec | SpecError]
    ) -> LoadedSpec:
        """Validate a spec file, reusing the last pass's answer for an unchanged file: most passes
        see no change, and the engine checks enumerate each search space."""
        key = (path, hashlib.sha256(text).digest())
        result = self._checked.get(key)
        if result is None:
            try:
                result = check_loaded(load_spec_text(text, path))
            except SpecError as exc:
                result = exc
        cache[key] = result
        if isinstance(result, SpecError):
            raise result
        return result

    def _may_claim(self, entry: SpecEntry) -> bool:
        """An invalid spec's placement cannot be trusted; with several labelled hosts, only a host
        whose labels match a placement found in the raw YAML reports it (else all would write)."""
        try:
            data = yaml.safe_load(entry.text) or {}
            wanted = data.get("spec", {}).get("placement", {}).get("matchLabels", {})
            return isinstance(wanted, dict) and all(self.labels.get(k) == v for k, v in wanted.items())
        except Exception:
            return True

    def selects(self, loaded: LoadedSpec) -> bool:
        placement = loaded.spec.spec.placement
        if placement is None:
            return True
        return all(self.labels.get(k) == v for k, v in placement.match_labels.items())

    # ------------------------------------------------------------------ one pass

    def reconcile(self, *, wait: bool) -> PassReport:
        """One pass. With ``wait``, studies started by this pass run to completion before it returns
        (``autotuner reconcile``); otherwise they keep running in the background (the daemon)."""
        revision = self.ws.fetch()
        self.revision = revision
        before = Tally(**vars(self.tally))
        # the revision of the desired state: the daemon's own result commits do not move it
        report = PassReport(revision=self.ws.specs_revision(revision))
        entries = self.desired(revision)
        # each spec's own revision: a push to one spec must not touch another's status
        own = self.ws.file_revisions(revision, [e.path for e in entries])
        results = self.ws.results_dir
        wanted = set()
        for entry in entries:
            wanted.add(entry.name)
            report.actions[entry.name] = self._reconcile_guarded(
                entry, own.get(entry.path, revision), results
            )
        self.known = {n for n, a in report.actions.items() if a != "skipped"}
        for name in list(self.running):
            if name not in wanted:
                log.info("spec %s was deleted: stopping its study (results stay)", name)
                self.running[name].stop.set()
        self._reap()
        if wait:
            # a one-shot pass runs every spec that needs work: queued ones start as slots free up
            queued = [e for e in entries if report.actions.get(e.name) == "queued"]
            while self.running or queued:
                for run in list(self.running.values()):
                    run.thread.join(timeout=0.5)
                self._reap()
                self.flush()
                while queued and len(self.running) < self.max_parallel:
                    entry = queued.pop(0)
                    report.actions[entry.name] = self._reconcile_guarded(
                        entry, own.get(entry.path, revision), results
                    )
            # a study that just finished wrote its final status
            for entry in entries:
                if entry.loaded is not None and report.actions.get(entry.name) == "run":
                    report.actions[entry.name] = self._final_action(entry)
        self.flush()
        report.experiments = self.tally.experiments - before.experiments
        report.commits = self.tally.commits - before.commits
        report.pushed = self.tally.pushed - before.pushed
        return report

    def _final_action(self, entry: SpecEntry) -> Action:
        status = ResultsStore(self.ws.results_dir, entry.name).status()
        if status is not None:
            for kind, action in (("Stalled", "stalled"), ("Degraded", "backoff"), ("Ready", "done")):
                c = status.condition(kind)
                if c is not None and c.status == "True":
                    return action  # type: ignore[return-value]
        return "running"

    def _reconcile_guarded(self, entry: SpecEntry, revision: str, results: Path) -> Action:
        """One spec's step; an unexpected error is that spec's trouble (logged, shown as Degraded,
        retried with backoff), never the pass's or the daemon's."""
        try:
            action = self._reconcile_one(entry, revision, results)
            self._recovered(entry.name, ("ReconcileError", "SyncFailing"))
            return action
        except Exception as exc:
            log.exception("spec=%s: reconcile step failed", entry.name)
            bo = self.backoff.setdefault(entry.name, Backoff())
            bo.fail()
            with contextlib.suppress(Exception):
                self._degrade(entry.name, "ReconcileError", f"{type(exc).__name__}: {mask(str(exc))}", bo)
            return "backoff"

    def _recovered(self, name: str, reasons: tuple[str, ...]) -> None:
        """Drop a Degraded condition of one of ``reasons`` once its cause is gone (nobody else
        rewrites the status of a finished spec)."""
        reason = _drop_degraded(ResultsStore(self.ws.results_dir, name), reasons)
        if reason is not None:
            self.changed(f"{name}: recovered ({reason})")

    def sync_failed(self, message: str, bo: Backoff) -> None:
        """The pass could not fetch: every spec this host works on shows it (on this host: the
        site and ``autotuner status --state-dir``; the remote is what cannot be reached)."""
        for name in sorted(self.known):
            store = ResultsStore(self.ws.results_dir, name)
            old = store.status()
            if old is None:
                continue
            text = self._redact.redact(f"cannot sync with the repository: {message}")[:500]
            with contextlib.suppress(Exception):
                store.write_status(degraded(old, name, "SyncFailing", text, bo.retry_at))
        self._rebuild_site(publish=False)

    def _degrade(self, name: str, reason: str, message: str, bo: Backoff | None) -> None:
        """Set the spec's Degraded condition (keeping everything else) and commit it."""
        store = ResultsStore(self.ws.results_dir, name)
        # committed and shown on the site: the daemon's secrets blanked, the length bounded
        text = self._redact.redact(message)[:500]
        status = degraded(store.status(), name, reason, text, bo.retry_at if bo else None)
        if store.write_status(status):
            self.changed(f"{name}: degraded ({reason})")

    def _reconcile_one(self, entry: SpecEntry, revision: str, results: Path) -> Action:
        if entry.loaded is None:
            if self.labels and not self._may_claim(entry):
                return "skipped"
        elif not self.selects(entry.loaded):
            return "skipped"
        self.ws.sync_live(entry.name, running=entry.name in self.running)
        store = ResultsStore(results, entry.name)
        old = store.status()
        if entry.loaded is None:
            status = build_status(
                name=entry.name,
                phase="stalled",
                old=old,
                problems=entry.problems,
                message=f"invalid spec: {len(entry.problems)} problem(s); fix {entry.path}",
                revision=revision,
                spec_file=entry.path,
            )
            if store.write_status(status):
                first = str(entry.problems[0]) if entry.problems else None
                log_event(
                    log,
                    logging.WARNING,
                    "spec stalled",
                    spec=entry.name,
                    file=entry.path,
                    problems=len(entry.problems),
                    first=first,
                )
                self.changed(f"{entry.name}: stalled, invalid spec")
            run = self.running.get(entry.name)
            if run is not None:
                run.stop.set()
            return "stalled"
        loaded = entry.loaded
        spec = loaded.spec
        generation = spec.generation()
        run = self.running.get(entry.name)
        if run is not None:
            if run.generation == generation and not spec.spec.suspend:
                return "running"
            log.info("spec %s changed (generation %s): stopping the old study", entry.name, generation)
            run.stop.set()
            return "running"
        if spec.spec.suspend:
            ctx = self._context(entry, revision)
            store.ensure()
            if write_status(spec, store, ctx, "suspended", "spec.suspend is true: no new experiments"):
                self.changed(f"{entry.name}: suspended")
            return "suspended"
        if old is not None and old.observed_generation == generation:
            ready = old.condition("Ready")
            stalled = old.condition("Stalled")
            if ready is not None and ready.status == "True":
                return "done"
            if (
                stalled is not None
                and stalled.status == "True"
                and stalled.reason in ("InvalidInput", "StudyFailed")
            ):
                return "stalled"
        bo = self.backoff.get(entry.name)
        if bo is not None and time.monotonic() < bo.not_before:
            return "backoff"
        if len(self.running) >= self.max_parallel:
            return "queued"
        self._start(entry, loaded, revision)
        return "run"

    def _context(self, entry: SpecEntry, revision: str) -> RunContext:
        return RunContext(
            results_root=self.ws.results_dir,
            state_dir=self.session.state_dir,
            base_dir=self.ws.clone_dir,
            leaser=self.session.leaser,
            revision=revision,
            spec_file=entry.path,
        )

    def _start(self, entry: SpecEntry, loaded: LoadedSpec, revision: str) -> None:
        stop = threading.Event()
        ctx = self._context(entry, revision)
        ctx.stop = stop

        def on_change(message: str) -> None:
            fault_point("study_change")  # tests: a bug in the study thread
            self.changed(message)

        ctx.on_change = on_change
        ctx.progress = self.progress_factory(loaded) if self.progress_factory else None

        def work() -> None:
            try:
                ctx.backend = self.session.backend(loaded)
                run_spec(loaded, ctx)
                self.backoff.pop(entry.name, None)
            except UserError as exc:
                log.warning("spec=%s stalled: %s", entry.name, exc)
            except (TransientError, OSError) as exc:
                bo = self.backoff.setdefault(entry.name, Backoff())
                delay = bo.fail()
                log.warning("spec=%s transient error, retrying in %.0fs: %s", entry.name, delay, exc)
                self._degrade_quietly(
                    entry.name, "TransientError", f"{mask(str(exc))}; retrying in {delay:.0f}s", bo
                )
            except Exception as exc:
                log.exception("spec=%s study crashed", entry.name)
                bo = self.backoff.setdefault(entry.name, Backoff())
                delay = bo.fail()
                self._degrade_quietly(
                    entry.name,
                    "StudyCrashed",
                    f"the study crashed ({type(exc).__name__}: {mask(str(exc))}); retrying in {delay:.0f}s",
                    bo,
                )

        thread = threading.Thread(target=work, name=f"study-{entry.name}", daemon=True)
        self.running[entry.name] = Running(thread, stop, loaded.spec.generation())
        log.info("spec=%s generation=%s: starting study", entry.name, loaded.spec.generation())
        thread.start()

    def _degrade_quietly(self, name: str, reason: str, message: str, bo: Backoff) -> None:
        try:
            self._degrade(name, reason, message, bo)
        except Exception:  # the status write itself failed: the log line above is all we have
            log.exception("spec=%s: could not record the failure in status.json", name)

    def _reap(self) -> None:
        for name, run in list(self.running.items()):
            if not run.thread.is_alive():
                del self.running[name]

    # ------------------------------------------------------------------ commit-back

    def changed(self, message: str) -> None:
        """Something under ``results/<spec>/`` changed; ``message`` starts with the spec's name
        (``name: ...``, names are DNS labels so they hold no colon)."""
        name = message.split(":", 1)[0]
        self.ws.mark(name)
        with self._msg_lock:
            self._messages.append(message)
            if ": experiment " in message:
                self.tally.experiments += 1
        self._dirty.set()

    def flush(self) -> bool:
        """Commit and push what changed under results/ (single writer), then rebuild the site.
        A failing commit-back is retried with backoff and shown as Degraded in each waiting spec."""
        if not self._dirty.is_set() and not self.ws.pending:
            return False
        if time.monotonic() < self.commit_backoff.not_before:
            return False
        self._dirty.clear()
        with self._msg_lock:
            messages, self._messages = self._messages, []
        self._clear_commit_trouble()
        subject = _subject(messages)
        body = "\n".join(f"- {m}" for m in messages[:50])
        try:
            done = self.ws.commit_back(subject + ("\n\n" + body if len(messages) > 1 else ""))
        except GitError as exc:
            delay = self.commit_backoff.fail()
            self.tally.commit_failures += 1
            log.warning("commit-back failed, retrying in %.0fs: %s", delay, exc)
            with self._msg_lock:
                self._messages = messages + self._messages
            for name in sorted(self.ws.pending):
                with contextlib.suppress(Exception):
                    store = ResultsStore(self.ws.results_dir, name)
                    store.write_status(
                        degraded(
                            store.status(),
                            name,
                            "CommitBackFailing",
                            self._redact.redact(
                                f"results are kept here but not in git: {exc}; retrying in {delay:.0f}s"
                            )[:500],
                            self.commit_backoff.retry_at,
                        )
                    )
            self._dirty.set()
            self._rebuild_site(publish=False)
            return False
        self.commit_backoff = _commit_backoff()
        self.last_commit = done
        if done.committed:
            self.tally.commits += 1
            self.tally.pushed += done.pushed
            log_event(
                log,
                logging.INFO,
                "results committed",
                commit=done.commit[:12] if done.commit else None,
                specs=",".join(done.specs),
                pushed=done.pushed,
                branch=self.ws.target,
            )
        self._rebuild_site(publish=True)
        return done.committed

    def _clear_commit_trouble(self) -> None:
        """A commit-back that is about to be tried again takes its own Degraded condition out of
        the statuses it set it in, so that the commit, when it works, holds none."""
        for name in sorted(self.ws.pending):
            _drop_degraded(ResultsStore(self.ws.results_dir, name), ("CommitBackFailing", "SyncFailing"))

    def refresh_site(self) -> None:
        """Build (and publish) the site even when nothing changed: after the first pass, so that
        a fresh host that only took finished results from the repository still has a site."""
        self._rebuild_site(publish=True)

    def _rebuild_site(self, *, publish: bool) -> None:
        if self.site_dir is None:
            return
        from reconciler.site import publish_site, rebuild_site

        if (
            rebuild_site(self.ws.results_dir, self.site_dir, title=self.site_title)
            and publish
            and self.site_branch
        ):
            publish_site(self.ws, self.site_dir, self.site_branch)

    def stop_all(self, timeout: float = math.inf) -> None:
        for run in self.running.values():
            run.stop.set()
        deadline = time.monotonic() + timeout
        for run in list(self.running.values()):
            run.thread.join(timeout=max(0.0, deadline - time.monotonic()) if math.isfinite(timeout) else None)
        self._reap()


def _drop_degraded(store: ResultsStore, reasons: tuple[str, ...]) -> str | None:
    """Remove the spec's Degraded condition when its reason is one of ``reasons``; the reason."""
    status = store.status()
    cond = status.condition("Degraded") if status is not None else None
    if status is None or cond is None or cond.reason not in reasons:
        return None
    kept = [c for c in status.conditions if c.type != "Degraded"]
    store.write_status(status.model_copy(update={"conditions": kept, "updated_at": now()}))
    return cond.reason


def _subject(messages: list[str]) -> str:
    if not messages:
        return "autotuner: results"
    if len(messages) == 1:
        return f"autotuner: {messages[0]}"
    specs = sorted({m.split(":")[0].split(" ")[0] for m in messages})
    return f"autotuner: {len(messages)} updates ({', '.join(specs[:5])}{', ...' if len(specs) > 5 else ''})"
