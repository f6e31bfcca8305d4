"""Rebuilding the report site after a change, and publishing it to a branch.

A site failure is logged, never fatal: the results are what matters, and the next change rebuilds
the site anyway.

Where the site is (docs/operations.md): with ``--site-dir DIR`` it is built there on the daemon's
host; with ``--site-branch NAME`` it is also committed, as the whole tree of an orphan branch
``NAME``, and pushed, so that GitHub or GitLab Pages (or anyone who clones the branch) serves it.
The builder writes only pages whose inputs changed and the commit is made from the folder's
blobs, so each rebuild is one commit whose diff is exactly the pages that changed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reconciler.workspace import Workspace

log = logging.getLogger(__name__)


def rebuild_site(results: Path, site_dir: Path, *, title: str | None = None) -> bool:
    try:
        from reports.site import build_site

        build_site(Path(results), Path(site_dir), title=title)
    except Exception:
        log.exception("rebuilding the report site in %s failed", site_dir)
        return False
    return True


def publish_site(ws: Workspace, site_dir: Path, branch: str) -> str | None:
    """Commit the built site to ``branch`` and push it; the commit, or None when unchanged/failed."""
    try:
        commit = ws.publish_tree(Path(site_dir), branch, "autotuner: report site")
    except Exception:
        log.exception("publishing the report site to branch %s failed; retried after the next change", branch)
        return None
    if commit:
        log.info("report site published to branch %s (%s)", branch, commit[:12])
    return commit
