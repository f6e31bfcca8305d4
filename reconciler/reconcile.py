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

from core.clock import now
from core.faults import fault_point
from reconciler.checking import check_loaded
from reconciler.git import GitError, git, mask
from reconciler.logs import SecretFilter, log_event
from reconciler.results import ResultsStore
from reconciler.runspec import RunContext, run_spec, write_status
from reconciler.session import Session
from reconciler.status import Phase, build_status, degraded
from reconciler.workspace import CommitBack, Workspace
from specs.errors import SpecError, SpecProblem, TransientError, UserError
from specs.loader import MAX_BYTES, LoadedSpec, load_spec_text, parse_yaml
from specs.model import DNS1123_LABEL
from specs.paths import real_dir
from specs.policy import Policy

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 30.0
BACKOFF_MAX_S = 3600.0


def raw_yaml(text: bytes) -> object:
    """The plain data of a spec file that may be invalid, or None: never for a file above the
    loader's size cap, and always with the loader's node budget and depth limit."""
    if len(text) > MAX_BYTES or b"\x00" in text:
        return None
    try:
        data, _ = parse_yaml(text.decode("utf-8"), "<spec>")
    except (SpecError, UnicodeDecodeError):
        return None
    return data


def _printable_path(path: str) -> str:
    """A spec path as messages show it: control characters escaped (``specs/b\\nx.yaml``)."""
    if not _has_control(path):
        return path
    return (
        path.encode("utf-8", "surrogateescape")
        .decode("ascii", "backslashreplace")
        .encode("unicode_escape")
        .decode("ascii")
        .replace("\\\\", "\\")
    )


def _has_control(text: str) -> bool:
    """Control characters, or bytes that are not UTF-8 (git hands them over as surrogates)."""
    return any(ord(c) < 32 or ord(c) == 127 or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def fallback_name(path: str, text: bytes, data: object = ...) -> str:
    """A results folder name for a spec that may be invalid: its metadata.name when that is a
    valid label, else a sanitized file stem."""
    if data is ...:
        data = raw_yaml(text)
    metadata = data.get("metadata") if isinstance(data, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if isinstance(name, str) and DNS1123_LABEL.match(name) and len(name) <= 63:
        return name
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
    #: the file that holds this entry's name, when another file does (the identity rule)
    held_by: str | None = None
    #: raw YAML of an invalid file (for its placement), parsed once per content
    raw: object = None


@dataclass
class Running:
    thread: threading.Thread
    stop: threading.Event
    generation: str


Action = Literal[
    "stalled", "suspended", "done", "run", "running", "skipped", "backoff", "queued", "conflict", "error"
]


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
        policy: Policy | None = None,
    ) -> None:
        self.ws = workspace
        self.policy = policy or session.policy
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
        self._raw: dict[bytes, object] = {}
        #: (path, holder) conflicts already logged: a conflict is logged once, not every pass
        self._told: set[tuple[str, str]] = set()
        self.backoff: dict[str, Backoff] = {}
        self.revision: str | None = None
        self._dirty = threading.Event()
        self._messages: list[str] = []
        self._msg_lock = threading.Lock()

    # ------------------------------------------------------------------ desired state

    def desired(self, revision: str) -> list[SpecEntry]:
        files = self.ws.spec_files(revision)
        entries: list[SpecEntry] = []
        cache: dict[tuple[str, bytes], LoadedSpec | SpecError] = {}
        raw_cache: dict[bytes, object] = {}
        for path in sorted(files):
            text = files[path]
            if _has_control(path):
                shown = _printable_path(path)
                problem = SpecProblem(
                    shown,
                    None,
                    "",
                    "the file name contains control characters (a newline or tab?): rename the file",
                )
                raw = self._raw_of(text, raw_cache)
                entries.append(
                    SpecEntry(path, fallback_name(path, text, raw), None, [problem], text, raw=raw)
                )
                continue
            try:
                loaded = self._check(path, text, cache)
                entries.append(SpecEntry(path, loaded.name, loaded, [], text))
            except SpecError as exc:
                raw = self._raw_of(text, raw_cache)
                entries.append(
                    SpecEntry(path, fallback_name(path, text, raw), None, exc.problems, text, raw=raw)
                )
        self._checked = cache
        self._raw = raw_cache
        self._apply_identity(entries, revision)
        return entries

    def _raw_of(self, text: bytes, cache: dict[bytes, object]) -> object:
        key = hashlib.sha256(text).digest()
        if key not in cache:
            cache[key] = self._raw[key] if key in self._raw else raw_yaml(text)
        return cache[key]

    def _apply_identity(self, entries: list[SpecEntry], revision: str) -> None:
        """The identity rule (module docstring): one holder per name, the others refused."""
        by_name: dict[str, list[SpecEntry]] = {}
        for entry in entries:
            by_name.setdefault(entry.name, []).append(entry)
        for name, group in by_name.items():
            if len(group) < 2:
                continue
            holder = self._holder(name, group, revision)
            for entry in group:
                if entry is holder:
                    continue
                message = (
                    f"name {name!r} is already used by {_printable_path(holder.path)}, which holds "
                    f"results/{name}/; give this spec another metadata.name (names must be unique "
                    "across all spec files, valid or not)"
                )
                line = entry.loaded.line_of(("metadata", "name")) if entry.loaded is not None else None
                entry.problems = [SpecProblem(_printable_path(entry.path), line, "metadata.name", message)]
                entry.loaded = None
                entry.held_by = holder.path

    def _holder(self, name: str, group: list[SpecEntry], revision: str) -> SpecEntry:
        old = ResultsStore(self.ws.results_dir, name).status()
        if old is not None and old.spec_file is not None:
            for entry in group:
                if entry.path == old.spec_file:
                    return entry
        order = {entry.path: self._added_at(entry.path, revision) for entry in group}
        return min(group, key=lambda e: (order[e.path], e.path))

    def _added_at(self, path: str, revision: str) -> int:
        """How many commits precede the one that added ``path`` (the history's order, which
        commit times cannot give: they tie within a second and can be set by the author)."""
        try:
            added = git(
                ["log", "--format=%H", "--diff-filter=A", revision, "--", path], self.ws.clone_dir
            ).split()
            if not added:
                return 1 << 62
            return int(git(["rev-list", "--count", added[-1]], self.ws.clone_dir).strip())
        except (GitError, ValueError):
            return 1 << 62

    def _check(
        self, path: str, text: bytes, cache: dict[tuple[str, bytes], LoadedSpec | SpecError]
    ) -> LoadedSpec:
        """Validate a spec file, reusing the last pass's answer for an unchanged file: most passes
        see no change, and the engine checks enumerate each search space."""
        key = (path, hashlib.sha256(text).digest())
        result = self._checked.get(key)
        if result is None:
            try:
                result = check_loaded(
                    load_spec_text(text, path), policy=self.policy, checkout=self.ws.clone_dir
                )
            except SpecError as exc:
                result = exc
            except Exception:
                # a bug in validation must not take the pass (and every other spec) down with it
                log.exception("validating %s failed unexpectedly (a bug); the spec is held back", path)
                result = SpecError(
                    [
                        SpecProblem(
                            _printable_path(path),
                            None,
                            "",
                            "the daemon could not validate this spec (an internal error, logged); "
                            "it is retried when the file changes or the daemon restarts",
                        )
                    ]
                )
        cache[key] = result
        if isinstance(result, SpecError):
            raise result
        return result

    def _may_claim(self, entry: SpecEntry) -> bool:
        """An invalid spec's placement cannot be trusted; with several labelled hosts, only a host
        whose labels match a placement found in the raw YAML reports it (else all would write)."""
        data = entry.raw
        if not isinstance(data, dict):
            return True
        body = data.get("spec")
        placement = body.get("placement") if isinstance(body, dict) else None
        wanted = placement.get("matchLabels") if isinstance(placement, dict) else None
        if wanted is None:
            return True
        return isinstance(wanted, dict) and all(self.labels.get(k) == v for k, v in wanted.items())

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
        self._own_results_dir()
        wanted = set()
        for entry in entries:
            wanted.add(entry.name)
            if entry.held_by is not None:
                self._refuse(entry)
                report.actions.setdefault(entry.name, "conflict")
                continue
            report.actions[entry.name] = self._reconcile_guarded(
                entry, own.get(entry.path, revision), results
            )
        self.known = {n for n, a in report.actions.items() if a not in ("skipped", "conflict")}
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
            file=_printable_path(entry.path),
            holder=_printable_path(entry.held_by),
            first=str(entry.problems[0]) if entry.problems else None,
        )

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
            policy=self.policy,
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

        def record(phase: Phase, message: str, reason: str) -> None:
            # the status must say why the study stopped; else it reads "Reconciling" forever
            try:
                store = ResultsStore(ctx.results_root, entry.name)
                if write_status(loaded.spec, store, ctx, phase, message, reason=reason):
                    self.changed(f"{entry.name}: {reason}")
            except Exception:
                log.exception("spec=%s: recording why its study stopped failed", entry.name)

        def work() -> None:
            try:
                ctx.backend = self.session.backend(loaded)
                run_spec(loaded, ctx)
                self.backoff.pop(entry.name, None)
            except UserError as exc:
                log.warning("spec=%s stalled: %s", entry.name, exc)
                record("stalled", str(exc), "InvalidInput")
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
