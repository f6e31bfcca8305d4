"""The reconcile loop's one git writer: what studies changed, committed back, and the site rebuilt.

Study threads report a change with :meth:`Publisher.changed` (cheap, never waits on git); the
loop's thread calls :meth:`Publisher.flush`, which makes one commit of everything that changed
since the last one (:meth:`reconciler.workspace.Workspace.commit_back`) and rebuilds the site.

Trouble is written where users look: a failing commit-back is retried with its own, shorter
backoff and shown as a ``Degraded`` condition (``CommitBackFailing``) in the status of every
spec whose results wait on it; a failing fetch is shown the same way (``SyncFailing``). Such a
condition is taken out again before the next try, so that the commit that works holds none.
Messages are redacted (the daemon's secrets blanked) and bounded, since they are committed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from core.clock import now
from reconciler.backoff import Backoff, commit_backoff
from reconciler.git import GitError
from reconciler.logs import SecretFilter, log_event
from reconciler.results import ResultsStore
from reconciler.status import degraded
from reconciler.workspace import CommitBack, Workspace

log = logging.getLogger(__name__)

#: the most of a message a status condition holds
MAX_MESSAGE = 500


@dataclass
class Tally:
    """What a process did, for summaries that tell the truth (counted where it happens)."""

    experiments: int = 0
    commits: int = 0
    pushed: int = 0
    commit_failures: int = 0


class Publisher:
    def __init__(
        self,
        workspace: Workspace,
        *,
        site_dir: Path | None = None,
        site_branch: str | None = None,
        site_title: str | None = None,
    ) -> None:
        self.ws = workspace
        self.site_branch = site_branch
        # a site branch needs a built site: by default in the state directory
        self.site_dir = (
            site_dir if site_dir is not None or site_branch is None else workspace.state_dir / "site"
        )
        self.site_title = site_title
        self.tally = Tally()
        self.backoff = commit_backoff()
        self.last_commit: CommitBack | None = None
        self._redact = SecretFilter()
        self._dirty = threading.Event()
        self._messages: list[str] = []
        self._msg_lock = threading.Lock()

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
        if self.backoff.waiting:
            return False
        self._dirty.clear()
        with self._msg_lock:
            messages, self._messages = self._messages, []
        self._clear_commit_trouble()
        body = "\n".join(f"- {m}" for m in messages[:50])
        try:
            done = self.ws.commit_back(_subject(messages) + ("\n\n" + body if len(messages) > 1 else ""))
        except GitError as exc:
            self._commit_failed(messages, exc)
            return False
        self.backoff = commit_backoff()
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
        self.rebuild_site(publish=True)
        return done.committed

    def _commit_failed(self, messages: list[str], exc: GitError) -> None:
        delay = self.backoff.fail()
        self.tally.commit_failures += 1
        log.warning("commit-back failed, retrying in %.0fs: %s", delay, exc)
        with self._msg_lock:
            self._messages = messages + self._messages
        text = self._redact.redact(f"results are kept here but not in git: {exc}; retrying in {delay:.0f}s")
        for name in sorted(self.ws.pending):
            with contextlib.suppress(Exception):
                store = ResultsStore(self.ws.results_dir, name)
                store.write_status(
                    degraded(
                        store.status(), name, "CommitBackFailing", text[:MAX_MESSAGE], self.backoff.retry_at
                    )
                )
        self._dirty.set()
        self.rebuild_site(publish=False)

    def _clear_commit_trouble(self) -> None:
        """A commit-back that is about to be tried again takes its own Degraded condition out of
        the statuses it set it in, so that the commit, when it works, holds none."""
        for name in sorted(self.ws.pending):
            drop_degraded(ResultsStore(self.ws.results_dir, name), ("CommitBackFailing", "SyncFailing"))

    # ------------------------------------------------------------------ trouble in status.json

    def degrade(self, name: str, reason: str, message: str, bo: Backoff | None) -> None:
        """Set the spec's Degraded condition (keeping everything else) and commit it."""
        store = ResultsStore(self.ws.results_dir, name)
        # committed and shown on the site: the daemon's secrets blanked, the length bounded
        text = self._redact.redact(message)[:MAX_MESSAGE]
        status = degraded(store.status(), name, reason, text, bo.retry_at if bo else None)
        if store.write_status(status):
            self.changed(f"{name}: degraded ({reason})")

    def recovered(self, name: str, reasons: tuple[str, ...]) -> None:
        """Drop a Degraded condition of one of ``reasons`` once its cause is gone (nobody else
        rewrites the status of a finished spec)."""
        reason = drop_degraded(ResultsStore(self.ws.results_dir, name), reasons)
        if reason is not None:
            self.changed(f"{name}: recovered ({reason})")

    def sync_failed(self, names: set[str], message: str, bo: Backoff) -> None:
        """The pass could not fetch: every spec in ``names`` shows it (on this host: the site and
        ``autotuner status --state-dir``; the remote is what cannot be reached)."""
        text = self._redact.redact(f"cannot sync with the repository: {message}")[:MAX_MESSAGE]
        for name in sorted(names):
            store = ResultsStore(self.ws.results_dir, name)
            old = store.status()
            if old is None:
                continue
            with contextlib.suppress(Exception):
                store.write_status(degraded(old, name, "SyncFailing", text, bo.retry_at))
        self.rebuild_site(publish=False)

    # ------------------------------------------------------------------ the site

    def rebuild_site(self, *, publish: bool) -> None:
        if self.site_dir is None:
            return
        from reconciler.site import publish_site, rebuild_site

        if (
            rebuild_site(self.ws.results_dir, self.site_dir, title=self.site_title)
            and publish
            and self.site_branch
        ):
            publish_site(self.ws, self.site_dir, self.site_branch)


def drop_degraded(store: ResultsStore, reasons: tuple[str, ...]) -> str | None:
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
