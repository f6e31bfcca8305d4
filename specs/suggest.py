"""'Did you mean' hints, shared by the schema, the loader and the engine flag checks."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, candidates: Iterable[str]) -> str | None:
    pool = list(dict.fromkeys(candidates))
    folded = {c.replace("_", "-").lower(): c for c in pool}
    key = word.replace("_", "-").lower()
    if key in folded:
        return folded[key]
    match = difflib.get_close_matches(key, list(folded), n=1, cutoff=0.6)
    return folded[match[0]] if match else None


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` or ``""``."""
    best = closest(word, candidates)
    return f"; did you mean {best!r}?" if best and best != word else ""
