"""Retry with exponential backoff, for a failing study, a failing fetch and a failing commit-back.

The delay doubles per failure up to a cap, with ±20 % jitter so that several hosts (or several
specs of one host) that failed together do not retry together. ``not_before`` is monotonic (what
the loop compares); ``retry_at`` is wall-clock ISO 8601 (what a ``Degraded`` condition shows).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import timedelta

from core.clock import utc_now

BACKOFF_BASE_S = 30.0
BACKOFF_MAX_S = 3600.0

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
        self.retry_at = (utc_now() + timedelta(seconds=delay)).isoformat(timespec="seconds")
        return delay

    @property
    def waiting(self) -> bool:
        """Whether the next try is still in the future."""
        return time.monotonic() < self.not_before


def commit_backoff() -> Backoff:
    return Backoff(base=COMMIT_BACKOFF_BASE_S, limit=COMMIT_BACKOFF_MAX_S)
