"""Durations written as ``30s``, ``5m``, ``1h30m``, ``250ms`` or a plain number of seconds.

Every duration ends up in a timer or a socket timeout, which overflow (``OverflowError: timeout
doesn't fit into C timeval``) or never fire for absurd values: so a duration is finite and at
most :data:`MAX_SECONDS` (a week).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_SECONDS = 7 * 86400.0
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: Any) -> float:
    """Return seconds; raise ``ValueError`` with the accepted forms on anything else."""
    seconds = _parse(value)
    if not math.isfinite(seconds) or seconds > MAX_SECONDS:
        raise ValueError(f"duration {value!r} is too long: at most {MAX_SECONDS / 86400:g} days")
    return seconds


def _parse(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or a string like '30s', '5m', '1h30m'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text and _PART.sub("", text) == "":
            total = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
            return total
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            if number >= 0:
                return number
    raise ValueError(
        f"invalid duration {value!r}: use a number of seconds or a string like '30s', '5m', '1h30m', '250ms'"
    )


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 120:
        return f"{seconds:g}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(lambda v: v, return_type=float),
]
