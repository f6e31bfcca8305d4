"""The long-running reconciler that systemd runs (``autotuner daemon``).

Triggers: an APScheduler interval job with jitter (so that many hosts polling one remote do not
fetch in lockstep), plus, for a repository on a local path, a watchfiles watcher on its files
that ignores ``results/``, the site and ``.git``. Either sets one event; the main loop runs a
pass when it is set, and in between commits finished work, pings the systemd watchdog and
publishes a STATUS line.

Start-up resolves every path given relative to the current folder, then logs one line naming the
repository, the spec branch (the remote's HEAD unless ``--branch``), the state directory and where
the site goes. A pass that found nothing to do is logged at DEBUG, so that an idle daemon's journal
shows only what happened.

SIGTERM: stop scheduling, ask every study to stop (each tears its engines down and leaves its
checkpoint consistent: in-flight trials are re-queued on the next start), commit what was
written, send STOPPING=1, exit 0 — well within ``TimeoutStopSec``.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from reconciler.backoff import Backoff
from reconciler.clone import is_local, resolve_repo
from reconciler.git import mask
from reconciler.reconcile import PassReport, Reconciler
from reconciler.sdnotify import Notifier
from reconciler.session import open_session
from reconciler.workspace import Workspace
from specs.errors import TransientError
from specs.policy import Policy

log = logging.getLogger(__name__)


@dataclass
class DaemonConfig:
    repo: str
    branch: str | None = None
    results_branch: str | None = None
    interval: float = 60.0
    state_dir: Path = Path("/var/lib/autotuner")
    site_dir: Path | None = None
    site_branch: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    max_parallel: int = 4
    fake_gpus: str | None = None
    push: bool = True
    stop_timeout: float = 90.0
    #: the operator policy (docs/security.md); the default policy when not given
    policy: Policy = field(default_factory=Policy)


def _summary(report: PassReport, running: int) -> str:
    counts: dict[str, int] = {}
    for action in report.actions.values():
        counts[action] = counts.get(action, 0) + 1
    parts = [f"{n} {a}" for a, n in sorted(counts.items())]
    return (
        f"rev {report.revision[:8]}: {len(report.actions)} spec(s)"
        + (f" ({', '.join(parts)})" if parts else "")
        + (f", {running} study(ies) running" if running else "")
    )


def _watch_local(path: Path, trigger: threading.Event, stop: threading.Event) -> threading.Thread | None:
    try:
        import watchfiles
    except ImportError:  # pragma: no cover - a declared dependency
        return None

    def keep(change: watchfiles.Change, p: str) -> bool:
        parts = Path(p).relative_to(path).parts if p.startswith(str(path)) else ()
        return bool(parts) and parts[0] not in ("results", "site", ".git")

    def loop() -> None:
        for _ in watchfiles.watch(
            path, watch_filter=keep, stop_event=stop, raise_interrupt=False, debounce=500
        ):
            trigger.set()

    thread = threading.Thread(target=loop, name="watch", daemon=True)
    thread.start()
    return thread


def run_daemon(cfg: DaemonConfig, *, stop: threading.Event | None = None) -> int:
    faulthandler.enable()  # a watchdog kill (SIGABRT) prints every thread's stack to the journal
    stop = stop or threading.Event()
    trigger = threading.Event()
    trigger.set()  # first pass at once
    notifier = Notifier()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = BackgroundScheduler(daemon=True)
    scheduler.add_job(
        trigger.set,
        "interval",
        seconds=cfg.interval,
        jitter=max(1, int(cfg.interval * 0.1)),
        id="poll",
        max_instances=1,
        coalesce=True,
    )
    scheduler.start()
    repo = resolve_repo(cfg.repo)
    state_dir = Path(os.path.abspath(cfg.state_dir))
    site_dir = Path(os.path.abspath(cfg.site_dir)) if cfg.site_dir is not None else None
    if is_local(repo) and Path(repo).is_dir():
        _watch_local(Path(repo).resolve(), trigger, stop)

    ready = False
    failure = Backoff()
    last_text = ""
    with open_session(state_dir, fake_gpus=cfg.fake_gpus, policy=cfg.policy) as session:
        ws = Workspace(repo, state_dir, branch=cfg.branch, results_branch=cfg.results_branch, push=cfg.push)
        rec = Reconciler(
            ws,
            session,
            labels=cfg.labels,
            site_dir=site_dir,
            site_branch=cfg.site_branch,
            max_parallel=cfg.max_parallel,
        )
        if not (ws.clone_dir / ".git").is_dir():
            notifier.extend_timeout(900)
            notifier.status(f"cloning {mask(repo)}")
        announced = False
        watchdog = notifier.watchdog_interval()
        try:
            while not stop.is_set():
                if trigger.is_set() and time.monotonic() >= failure.not_before:
                    trigger.clear()
                    try:
                        if not announced:
                            ws.ensure_clone()
                            log.info("%s", startup_line(ws, rec, cfg))
                            announced = True
                        report = rec.reconcile(wait=False)
                        failure = Backoff()
                        text = _summary(report, len(rec.running))
                        # an idle pass is not news: DEBUG unless it did something or the picture changed
                        level = logging.INFO if report.busy or text != last_text else logging.DEBUG
                        log.log(level, "pass done: %s", text)
                        last_text = text
                        if not ready:
                            rec.refresh_site()
                            notifier.ready(text)
                            ready = True
                        else:
                            notifier.status(text)
                    except TransientError as exc:
                        delay = failure.fail()
                        log.warning("sync failed, retrying in %.0fs: %s", delay, exc)
                        rec.sync_failed(str(exc), failure)
                        notifier.status(f"sync failing: {exc}")
                        trigger.set()
                rec.flush()
                notifier.watchdog()
                stop.wait(min(1.0, watchdog or 1.0))
                if any(not r.thread.is_alive() for r in rec.running.values()):
                    trigger.set()  # a study finished: the next pass may start another
        finally:
            notifier.stopping("tearing down running engines")
            notifier.extend_timeout(cfg.stop_timeout)
            scheduler.shutdown(wait=False)
            rec.stop_all(timeout=cfg.stop_timeout)
            rec.flush()
            ws.close()
            log.info("stopped")
    return 0


def startup_line(ws: Workspace, rec: Reconciler, cfg: DaemonConfig) -> str:
    """The one line that says what this daemon works on (the first thing an operator looks for)."""
    if rec.site_branch:
        site = f"site branch {rec.site_branch} (built in {rec.site_dir})"
    elif rec.site_dir is not None:
        site = f"site {rec.site_dir}"
    else:
        site = "no site (give --site-dir or --site-branch)"
    results = f", results to branch {ws.target}" if ws.target != ws.spec_branch else ""
    return (
        f"autotuner daemon: repository {mask(ws.repo)}, branch {ws.spec_branch}{results}, "
        f"state {ws.state_dir}, {site}" + ("" if cfg.push else ", no push")
    )


def env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"AUTOTUNER_{name}", default)
