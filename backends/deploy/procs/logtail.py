"""The tail of an engine's log file, read from the end with a byte cap."""

from __future__ import annotations

import os
from pathlib import Path


def read_tail(path: Path, n_lines: int, *, max_bytes: int = 256 * 1024) -> str:
    """The last ``n_lines`` of a log file, reading at most ``max_bytes`` from its end.

    Carriage-return progress bars (``\\r``-separated redraws on one line) are reduced to their
    last state, so a tail of tqdm output is readable in a record.
    """
    if n_lines <= 0:
        return ""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size - max_bytes)
            f.seek(start)
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    lines = text.split("\n")
    if start > 0 and len(lines) > 1:
        lines = lines[1:]  # the first line is cut
    if lines and lines[-1] == "":
        lines.pop()
    cleaned = []
    for line in lines[-n_lines:]:
        if "\r" in line:
            parts = [p for p in line.split("\r") if p.strip()]
            line = parts[-1] if parts else ""
        cleaned.append(line)
    return "\n".join(cleaned)
