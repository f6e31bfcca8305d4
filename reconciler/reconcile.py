"""The reconcile loop (after Flux and controller-runtime): level-based and idempotent.

A pass reads the specs at the fetched revision and the results already committed, and moves each
spec toward done: invalid → ``Stalled`` (not retried until the spec changes); suspended → no new
experiments; work left in its generation → run (or keep running) its study; finished → nothing.
Running a pass twice with nothing new starts no experiment and makes no commit.

Threads: the pass itself runs in one thread; each study runs in its own worker thread, started by
the pass and stopped (via its stop event) when its spec changes, is deleted or suspended. Every
write under ``results/`` goes through one commit-back writer, so there is a single git writer.
"""

from __future__ import annotations

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

from reconciler.checking import check_loaded
from reconciler.git import GitError
from reconciler.logs import log_event
from reconciler.results import ResultsStore
from reconciler.runspec import RunContext, run_spec, write_status
from reconciler.session import Session
from reconciler.status import build_status
from reconciler.workspace import Workspace
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


@dataclass
class Backoff:
    failures: int = 0
    not_before: float = 0.0

    def fail(self) -> float:
        self.failures += 1
        delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (self.failures - 1)) * random.uniform(0.8, 1.2)
        self.not_before = time.monotonic() + delay
        return delay


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
class PassReport:
    revision: str
    actions: dict[str, Action] = field(default_factory=dict)
    committed: bool = False


class Reconciler:
    def __init__(
        self,
        workspace: Workspace,
        session: Session,
        *,
        labels: dict[str, str] | None = None,
        site_dir: Path | None = None,
        max_parallel: int = 4,
        progress_factory: Callable[[LoadedSpec], Callable[..., None] | None] | None = None,
    ) -> None:
        self.ws = workspace
        self.session = session
        self.labels = labels or {}
        self.site_dir = site_dir
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
        revision = self.ws.specs_revision(self.ws.fetch())
        self.revision = revision
        report = PassReport(revision=revision)
        entries = self.desired(revision)
        results = self.ws.results_dir
        wanted = set()
        for entry in entries:
            wanted.add(entry.name)
            report.actions[entry.name] = self._reconcile_one(entry, revision, results)
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
                    report.actions[entry.name] = self._reconcile_one(entry, revision, results)
            # a study that just finished wrote its final status
            for entry in entries:
                if entry.loaded is not None and report.actions.get(entry.name) == "run":
                    report.actions[entry.name] = "done"
        report.committed = self.flush()
        return report

    def _reconcile_one(self, entry: SpecEntry, revision: str, results: Path) -> Action:
        store = ResultsStore(results, entry.name)
        old = store.status()
        if entry.loaded is None:
            if self.labels and not self._may_claim(entry):
                return "skipped"
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
        if not self.selects(loaded):
            return "skipped"
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
        ctx.on_change = self.changed
        ctx.progress = self.progress_factory(loaded) if self.progress_factory else None

        def work() -> None:
            try:
                ctx.backend = self.session.backend(loaded)
                run_spec(loaded, ctx)
                self.backoff.pop(entry.name, None)
            except UserError as exc:
                log.warning("spec=%s stalled: %s", entry.name, exc)
            except (TransientError, OSError) as exc:
                delay = self.backoff.setdefault(entry.name, Backoff()).fail()
                log.warning("spec=%s transient error, retrying in %.0fs: %s", entry.name, delay, exc)
            except Exception:
                log.exception("spec=%s study crashed", entry.name)
                self.backoff.setdefault(entry.name, Backoff()).fail()

        thread = threading.Thread(target=work, name=f"study-{entry.name}", daemon=True)
        self.running[entry.name] = Running(thread, stop, loaded.spec.generation())
        log.info("spec=%s generation=%s: starting study", entry.name, loaded.spec.generation())
        thread.start()

    def _reap(self) -> None:
        for name, run in list(self.running.items()):
            if not run.thread.is_alive():
                del self.running[name]

    # ------------------------------------------------------------------ commit-back

    def changed(self, message: str) -> None:
        with self._msg_lock:
            self._messages.append(message)
        self._dirty.set()

    def flush(self) -> bool:
        """Commit and push what changed under results/ (single writer), then rebuild the site."""
        if not self._dirty.is_set():
            return False
        self._dirty.clear()
        with self._msg_lock:
            messages, self._messages = self._messages, []
        subject = _subject(messages)
        body = "\n".join(f"- {m}" for m in messages[:50])
        try:
            committed = self.ws.commit(subject + ("\n\n" + body if len(messages) > 1 else ""))
            if committed:
                self.ws.publish()
        except GitError as exc:
            log.warning("commit-back failed, will retry: %s", exc)
            self._dirty.set()
            with self._msg_lock:
                self._messages = messages + self._messages
            return False
        if self.site_dir is not None:
            from reconciler.site import rebuild_site

            rebuild_site(self.ws.results_dir, self.site_dir)
        return committed

    def stop_all(self, timeout: float = math.inf) -> None:
        for run in self.running.values():
            run.stop.set()
        deadline = time.monotonic() + timeout
        for run in list(self.running.values()):
            run.thread.join(timeout=max(0.0, deadline - time.monotonic()) if math.isfinite(timeout) else None)
        self._reap()


def _subject(messages: list[str]) -> str:
    if not messages:
        return "autotuner: results"
    if len(messages) == 1:
        return f"autotuner: {messages[0]}"
    specs = sorted({m.split(":")[0].split(" ")[0] for m in messages})
    return f"autotuner: {len(messages)} updates ({', '.join(specs[:5])}{', ...' if len(specs) > 5 else ''})"
