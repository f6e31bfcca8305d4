"""Rebuilding the report site after a change. A site failure is logged, never fatal: the
results are what matters, and the next change rebuilds the site anyway."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def rebuild_site(results: Path, site_dir: Path, *, title: str | None = None) -> bool:
    try:
        from reports.site import build_site

        build_site(Path(results), Path(site_dir), title=title)
    except Exception:
        log.exception("rebuilding the report site in %s failed", site_dir)
        return False
    return True
