"""The layout of a results folder (docs/architecture.md section 4): the one home of its names.

::

    results/<spec>/
        status.json            the spec's status (conditions, best, progress)
        experiments/NNNN.json  one record per experiment, written once, never rewritten
        best/                  the best configuration, ready to deploy
        study.journal          the Optuna study (appended by the running study)

What counts as a *spec folder*: a real folder (not a symlink) whose name does not start with a
dot (dot names are the daemon's temp and seed folders) holding ``status.json`` or a real
``experiments/`` folder. A *record file* is ``experiments/<id>.json`` where the id is four or more
digits (the ids :class:`reconciler.results.ResultsStore` gives, in completion order); anything
else in ``experiments/`` is not a record. Records are ordered by their number.

Only names and pure rules on names live here (``core`` imports nothing of ours); the reader that
applies them to a folder, with the symlink and size rules, is :mod:`specs.results`, and the one
writer is ``ResultsStore``.
"""

from __future__ import annotations

import re

__all__ = [
    "BEST_DIR",
    "EXPERIMENTS_DIR",
    "JOURNAL_FILE",
    "MAX_RECORD_BYTES",
    "STATUS_FILE",
    "is_record_name",
    "is_spec_folder_name",
    "record_name",
    "record_order",
]

STATUS_FILE = "status.json"
EXPERIMENTS_DIR = "experiments"
BEST_DIR = "best"
JOURNAL_FILE = "study.journal"
#: largest status or experiment record read back (a few kB; tens with a long log tail)
MAX_RECORD_BYTES = 8 * 1024 * 1024

_RECORD = re.compile(r"([0-9]{4,})\.json")


def record_name(number: int) -> str:
    """The file name of experiment ``number``: ``0007.json``."""
    return f"{number:04d}.json"


def is_record_name(name: str) -> bool:
    return _RECORD.fullmatch(name) is not None


def record_order(name: str) -> tuple[int, str]:
    """Sort key of record file names: by number (``9999.json`` before ``10000.json``)."""
    match = _RECORD.fullmatch(name)
    return (int(match.group(1)) if match else -1, name)


def is_spec_folder_name(name: str) -> bool:
    """A name under ``results/`` that may be a spec's (dot names are the daemon's own)."""
    return bool(name) and not name.startswith(".")
