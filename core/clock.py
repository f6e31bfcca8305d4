"""The one clock for wall-clock timestamps that end up in files (records, status, pid files).

One function, so that every timestamp has the same form (UTC, ISO 8601, whole seconds: the
form ``status.json`` compares to decide whether anything changed) and tests have one place to
look. Durations are never measured with it: they use ``time.monotonic()`` or
``time.perf_counter()`` where they are taken, since wall time jumps.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["now", "utc_now"]


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def now() -> str:
    """The current time as ISO 8601 UTC with whole seconds, e.g. ``2026-12-01T21:12:27+00:00``."""
    return utc_now().isoformat(timespec="seconds")
