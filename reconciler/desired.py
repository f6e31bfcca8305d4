"""The desired state of one pass: every spec file at the fetched revision, validated, with the
identity rule applied (the rules are in :mod:`reconciler.reconcile`'s docstring).

Why a module of its own: reading the desired state is the part of a pass that handles untrusted
input (docs/security.md), and it keeps caches across passes (validation answers by content, the
raw YAML of invalid files by content), so it is one object that the reconciler asks once per pass.
What it returns is plain :class:`SpecEntry` values; it never writes anything.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from reconciler.checking import check_loaded
from reconciler.git import GitError, git
from reconciler.results import ResultsStore
from reconciler.workspace import Workspace
from specs.errors import SpecError, SpecProblem
from specs.loader import MAX_BYTES, LoadedSpec, load_spec_text, parse_yaml
from specs.model import DNS1123_LABEL
from specs.policy import Policy

log = logging.getLogger(__name__)

#: the history position of a file git cannot place: after every real one
_UNKNOWN_ORDER = 1 << 62


def raw_yaml(text: bytes) -> object:
    """The plain data of a spec file that may be invalid, or None: never for a file above the
    loader's size cap, and always with the loader's node budget and depth limit."""
    if len(text) > MAX_BYTES or b"\x00" in text:
        return None
    try:
        data, _ = parse_yaml(text.decode("utf-8"), "<spec>")
    except (SpecError, UnicodeDecodeError):
        return None
    return data


def printable_path(path: str) -> str:
    """A spec path as messages show it: control characters escaped (``specs/b\\nx.yaml``)."""
    if not has_control(path):
        return path
    return (
        path.encode("utf-8", "surrogateescape")
        .decode("ascii", "backslashreplace")
        .encode("unicode_escape")
        .decode("ascii")
        .replace("\\\\", "\\")
    )


def has_control(text: str) -> bool:
    """Control characters, or bytes that are not UTF-8 (git hands them over as surrogates)."""
    return any(ord(c) < 32 or ord(c) == 127 or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def fallback_name(path: str, text: bytes, data: object = ...) -> str:
    """A results folder name for a spec that may be invalid: its metadata.name when that is a
    valid label, else a sanitized file stem."""
    if data is ...:
        data = raw_yaml(text)
    metadata = data.get("metadata") if isinstance(data, dict) else None
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if isinstance(name, str) and DNS1123_LABEL.match(name) and len(name) <= 63:
        return name
    stem = Path(path).stem.lower()
    stem = re.sub(r"[^a-z0-9-]+", "-", stem).strip("-")[:63].strip("-")
    return stem or "invalid-spec"


@dataclass
class SpecEntry:
    path: str
    name: str
    loaded: LoadedSpec | None
    problems: list[SpecProblem]
    text: bytes = b""
    #: the file that holds this entry's name, when another file does (the identity rule)
    held_by: str | None = None
    #: raw YAML of an invalid file (for its placement), parsed once per content
    raw: object = None


def may_claim(entry: SpecEntry, labels: dict[str, str]) -> bool:
    """An invalid spec's placement cannot be trusted; with several labelled hosts, only a host
    whose labels match a placement found in the raw YAML reports it (else all would write)."""
    data = entry.raw
    if not isinstance(data, dict):
        return True
    body = data.get("spec")
    placement = body.get("placement") if isinstance(body, dict) else None
    wanted = placement.get("matchLabels") if isinstance(placement, dict) else None
    if wanted is None:
        return True
    return isinstance(wanted, dict) and all(labels.get(k) == v for k, v in wanted.items())


def selects(loaded: LoadedSpec, labels: dict[str, str]) -> bool:
    """Whether a valid spec's placement picks a host with these labels."""
    placement = loaded.spec.spec.placement
    if placement is None:
        return True
    return all(labels.get(k) == v for k, v in placement.match_labels.items())


class DesiredState:
    """Reads the spec files of a revision into entries, reusing the last pass's work for every
    file whose content did not change."""

    def __init__(self, workspace: Workspace, policy: Policy) -> None:
        self.ws = workspace
        self.policy = policy
        self._checked: dict[tuple[str, bytes], LoadedSpec | SpecError] = {}
        self._raw: dict[bytes, object] = {}

    def read(self, revision: str) -> list[SpecEntry]:
        files = self.ws.spec_files(revision)
        entries: list[SpecEntry] = []
        # this pass's caches replace the last pass's: a file gone or changed drops its entry
        cache: dict[tuple[str, bytes], LoadedSpec | SpecError] = {}
        raw_cache: dict[bytes, object] = {}
        for path in sorted(files):
            entries.append(self._entry(path, files[path], cache, raw_cache))
        self._checked = cache
        self._raw = raw_cache
        self._apply_identity(entries, revision)
        return entries

    def _entry(
        self,
        path: str,
        text: bytes,
        cache: dict[tuple[str, bytes], LoadedSpec | SpecError],
        raw_cache: dict[bytes, object],
    ) -> SpecEntry:
        if has_control(path):
            problems = [
                SpecProblem(
                    printable_path(path),
                    None,
                    "",
                    "the file name contains control characters (a newline or tab?): rename the file",
                )
            ]
        else:
            try:
                loaded = self._check(path, text, cache)
                return SpecEntry(path, loaded.name, loaded, [], text)
            except SpecError as exc:
                problems = exc.problems
        raw = self._raw_of(text, raw_cache)
        return SpecEntry(path, fallback_name(path, text, raw), None, problems, text, raw=raw)

    def _raw_of(self, text: bytes, cache: dict[bytes, object]) -> object:
        key = hashlib.sha256(text).digest()
        if key not in cache:
            cache[key] = self._raw[key] if key in self._raw else raw_yaml(text)
        return cache[key]

    def _apply_identity(self, entries: list[SpecEntry], revision: str) -> None:
        """The identity rule: one holder per name, the others refused."""
        by_name: dict[str, list[SpecEntry]] = {}
        for entry in entries:
            by_name.setdefault(entry.name, []).append(entry)
        for name, group in by_name.items():
            if len(group) < 2:
                continue
            holder = self._holder(name, group, revision)
            for entry in group:
                if entry is not holder:
                    _refuse_name(entry, name, holder)

    def _holder(self, name: str, group: list[SpecEntry], revision: str) -> SpecEntry:
        old = ResultsStore(self.ws.results_dir, name).status()
        if old is not None and old.spec_file is not None:
            for entry in group:
                if entry.path == old.spec_file:
                    return entry
        order = {entry.path: self._added_at(entry.path, revision) for entry in group}
        return min(group, key=lambda e: (order[e.path], e.path))

    def _added_at(self, path: str, revision: str) -> int:
        """How many commits precede the one that added ``path`` (the history's order, which
        commit times cannot give: they tie within a second and can be set by the author)."""
        try:
            added = git(
                ["log", "--format=%H", "--diff-filter=A", revision, "--", path], self.ws.clone_dir
            ).split()
            if not added:
                return _UNKNOWN_ORDER
            return int(git(["rev-list", "--count", added[-1]], self.ws.clone_dir).strip())
        except (GitError, ValueError):
            return _UNKNOWN_ORDER

    def _check(
        self, path: str, text: bytes, cache: dict[tuple[str, bytes], LoadedSpec | SpecError]
    ) -> LoadedSpec:
        """Validate a spec file, reusing the last pass's answer for an unchanged file: most passes
        see no change, and the engine checks enumerate each search space."""
        key = (path, hashlib.sha256(text).digest())
        result = self._checked.get(key)
        if result is None:
            result = self._validate(path, text)
        cache[key] = result
        if isinstance(result, SpecError):
            raise result
        return result

    def _validate(self, path: str, text: bytes) -> LoadedSpec | SpecError:
        try:
            return check_loaded(load_spec_text(text, path), policy=self.policy, checkout=self.ws.clone_dir)
        except SpecError as exc:
            return exc
        except Exception:
            # a bug in validation must not take the pass (and every other spec) down with it
            log.exception("validating %s failed unexpectedly (a bug); the spec is held back", path)
            return SpecError(
                [
                    SpecProblem(
                        printable_path(path),
                        None,
                        "",
                        "the daemon could not validate this spec (an internal error, logged); "
                        "it is retried when the file changes or the daemon restarts",
                    )
                ]
            )


def _refuse_name(entry: SpecEntry, name: str, holder: SpecEntry) -> None:
    message = (
        f"name {name!r} is already used by {printable_path(holder.path)}, which holds "
        f"results/{name}/; give this spec another metadata.name (names must be unique "
        "across all spec files, valid or not)"
    )
    line = entry.loaded.line_of(("metadata", "name")) if entry.loaded is not None else None
    entry.problems = [SpecProblem(printable_path(entry.path), line, "metadata.name", message)]
    entry.loaded = None
    entry.held_by = holder.path
