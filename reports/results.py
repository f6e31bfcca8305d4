"""A results folder (docs/architecture.md section 4) as the site and the analyses see it.

The reading itself is :mod:`specs.results` (the one reader, which also defines what a spec folder
and a record file are, by the layout in :mod:`core.results`); this module adds what only the
report needs: the ``best/`` files the spec page embeds, URL-safe slugs, and the views of one spec
(current generation, reconciling or not).

The report is rebuilt from ``results/`` alone, so it must survive whatever it finds there: a
spec folder without ``status.json`` yet (its first experiment is still running), a record from a
newer tool version (the pydantic models ignore unknown fields), or a file that is not valid JSON
(a bad merge). An unreadable file is listed on the spec's page with the reason and skipped; it
never stops the build, because one broken record must not hide every other spec's answer.

Folder names become parts of URLs. Spec names are DNS-1123 labels by the spec schema, but the
report does not trust that: a name that is not a plain lowercase slug gets a sanitized slug with
a hash suffix, so two odd names never share a page and no name can climb out of the site.

``results/`` is in a repository anyone with push access writes to, so nothing here follows a
symlink (docs/security.md): a spec folder, ``experiments/`` or ``best/`` that is a symlink is not
a spec's results, and a file that is one is listed as unreadable, never read (a pushed
``best/command.sh -> /proc/self/environ`` would otherwise put the daemon's environment on the
site). Every file is read with a byte cap.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from core.results import BEST_DIR
from specs.errors import TooLarge
from specs.paths import is_real_dir, read_regular
from specs.records import ExperimentRecord, StatusRecord
from specs.results import read_spec_folder, unreadable_reason

#: best/ files shown on the spec page, in display order
BEST_FILES = ("command.sh", "docker-run.sh", "deployment.yaml", "engine-args.json", "pareto.json")
#: largest best/ file the page embeds (a deployment is a few kB; anything huge is not ours)
MAX_BEST_BYTES = 256 * 1024

_SAFE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def slug(name: str) -> str:
    """A URL- and file-system-safe folder name for ``name``, stable across builds."""
    if _SAFE.match(name):
        return name
    cleaned = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "item"
    return f"{cleaned}-{hashlib.sha256(name.encode('utf-8', 'surrogateescape')).hexdigest()[:10]}"


@dataclass
class SpecResults:
    """Everything the site shows about one spec."""

    folder: str
    status: StatusRecord | None
    experiments: list[ExperimentRecord]
    best_files: dict[str, str] = field(default_factory=dict)
    #: (path relative to the spec folder, reason) of files that could not be read
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    #: record id -> its file, relative to the spec folder (the builder hashes files, not records)
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.status.spec if self.status is not None and self.status.spec else self.folder

    @property
    def slug(self) -> str:
        return slug(self.folder)

    @property
    def title(self) -> str | None:
        return self.status.title if self.status is not None else None

    @property
    def generation(self) -> str | None:
        """The generation the spec is at now: the status's, else the newest record's."""
        if self.status is not None and self.status.observed_generation:
            return self.status.observed_generation
        return self.experiments[-1].generation if self.experiments else None

    @property
    def current(self) -> list[ExperimentRecord]:
        """Records of the current generation (what the recommendation is chosen from)."""
        gen = self.generation
        return [r for r in self.experiments if r.generation == gen]

    @property
    def reconciling(self) -> bool:
        cond = self.status.condition("Reconciling") if self.status is not None else None
        return cond is not None and cond.status == "True"


def load_spec(spec_dir: Path) -> SpecResults:
    """Read one spec folder; unreadable files are collected, not raised."""
    folder = read_spec_folder(spec_dir)
    unreadable = list(folder.unreadable)
    best: dict[str, str] = {}
    best_dir = spec_dir / BEST_DIR
    for name in BEST_FILES if is_real_dir(best_dir) else ():
        path = best_dir / name
        try:
            if os.path.lexists(path):
                best[name] = read_regular(path, MAX_BEST_BYTES).decode("utf-8", errors="replace")
        except TooLarge:
            continue  # not ours: the daemon writes a few kB here
        except OSError as exc:
            unreadable.append((f"{BEST_DIR}/{name}", unreadable_reason(exc)))
    return SpecResults(folder.name, folder.status, folder.experiments, best, unreadable, folder.sources)
