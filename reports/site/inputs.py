"""What a build knows of its inputs and of the build before it: the manifest, the fingerprint of
the code that renders pages, and the content hashes of the input files (reused while a file's
size and mtime match, except within :data:`RACY_NS` of the build that hashed it: git's "racily
clean" rule)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from core.results import BEST_DIR, EXPERIMENTS_DIR, MAX_RECORD_BYTES, STATUS_FILE, is_record_name
from reports import importance
from reports.render import TEMPLATES
from reports.results import BEST_FILES
from specs.paths import is_real_dir, read_regular

MANIFEST = ".autotuner-site.json"
#: bump when the manifest's shape changes
FORMAT = 1
#: files modified this close to the build that hashed them are hashed again next time
RACY_NS = 2_000_000_000


@lru_cache(maxsize=1)
def tool_version() -> str:
    try:
        return metadata.version("autotuner")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "dev"


@lru_cache(maxsize=1)
def plotly_version() -> str:
    try:
        return metadata.version("plotly")
    except metadata.PackageNotFoundError:
        return "missing"


@lru_cache(maxsize=1)
def code_hash() -> str:
    """Hash of everything that shapes a page besides the results: templates, assets, this
    package's source. Editing a template or upgrading the tool rebuilds every page."""
    h = hashlib.blake2b(digest_size=16)
    roots = [Path(str(TEMPLATES)), Path(__file__).parents[1]]  # the templates and all of reports/
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix in (".html", ".css", ".js", ".py"):
                h.update(path.relative_to(root).as_posix().encode())
                h.update(path.read_bytes())
    return h.hexdigest()


def fingerprint(title: str) -> str:
    parts = [str(FORMAT), code_hash(), tool_version(), plotly_version(), importance.method_name(), title]
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=16).hexdigest()


def hash_bytes(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def hash_parts(*parts: object) -> str:
    return hashlib.blake2b(
        json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=16
    ).hexdigest()


def scan_inputs(spec_dir: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (size, mtime_ns) of every file the spec's pages are built from."""
    # lstat throughout: a symlink's own signature, never its target's (reports.results refuses
    # to read symlinks, so what they point at must not even be hashed)
    out: dict[str, tuple[int, int]] = {}
    with contextlib.suppress(OSError):
        st = os.lstat(spec_dir / STATUS_FILE)
        out[STATUS_FILE] = (st.st_size, st.st_mtime_ns)
    if is_real_dir(spec_dir / EXPERIMENTS_DIR):
        with contextlib.suppress(OSError), os.scandir(spec_dir / EXPERIMENTS_DIR) as it:
            for entry in it:
                if is_record_name(entry.name):
                    st = entry.stat(follow_symlinks=False)
                    out[f"{EXPERIMENTS_DIR}/{entry.name}"] = (st.st_size, st.st_mtime_ns)
    if is_real_dir(spec_dir / BEST_DIR):
        for name in BEST_FILES:
            with contextlib.suppress(OSError):
                st = os.lstat(spec_dir / BEST_DIR / name)
                out[f"{BEST_DIR}/{name}"] = (st.st_size, st.st_mtime_ns)
    return out


class FileHashes:
    """Content hashes of input files, reusing the manifest's while size and mtime match."""

    def __init__(self, cached: dict[str, list[Any]], started_ns: int) -> None:
        self.cached = cached
        self.started_ns = started_ns
        self.fresh: dict[str, list[Any]] = {}

    def get(self, key: str, path: Path, sig: tuple[int, int]) -> str:
        old = self.cached.get(key)
        if old is not None and len(old) == 3 and old[0] == sig[0] and old[1] == sig[1] and old[2]:
            digest = str(old[2])
        else:
            try:
                digest = hash_bytes(read_regular(path, MAX_RECORD_BYTES))
            except OSError:
                digest = "unreadable"
        trusted = sig[1] < self.started_ns - RACY_NS
        self.fresh[key] = [sig[0], sig[1], digest if trusted else ""]
        return digest


def load_manifest(out_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("format") == FORMAT else {}
