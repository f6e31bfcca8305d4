"""The site's files on disk: the page writer, the builders' lock, the static assets, and the
removal of a spec's pages when its results are gone."""

from __future__ import annotations

import contextlib
import fcntl
import shutil
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

from core import atomic
from reports.render import TEMPLATES
from reports.site.inputs import plotly_version
from specs.paths import real_dir

LOCK = ".autotuner-site.lock"
ASSETS = ("site.css", "site.js")


class PageWriter:
    """Writes pages atomically (:func:`core.atomic.write_bytes`, fast mode: renamed, not fsynced,
    since the site can always be rebuilt and ten thousand fsyncs would dominate the build).

    Folders below ``root`` (the site folder) are made with :func:`specs.paths.real_dir`, so a
    symlink planted there is replaced, never written through; the temporary file is created
    exclusively under a random name and renamed over whatever entry was there (a rename replaces
    a symlink, not its target)."""

    def __init__(self, root: Path | None = None) -> None:
        self._dirs: set[Path] = set()
        self.root = root

    def write(self, path: Path, data: str | bytes, *, new: bool = False) -> None:
        """Write ``path`` atomically. ``new=True``: the caller knows no page links here yet, so a
        file that does not exist is written in place (an exclusive create, which never follows a
        symlink; no rename: renaming over nothing costs as much again on ext4, and ten thousand
        new pages add up)."""
        parent = path.parent
        if parent not in self._dirs:
            if self.root is not None and parent.is_relative_to(self.root):
                self.root.mkdir(parents=True, exist_ok=True)
                real_dir(self.root, parent.relative_to(self.root).parts)
            else:
                parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(parent)
        payload = data.encode("utf-8") if isinstance(data, str) else data
        if new:
            try:
                with open(path, "xb") as f:
                    f.write(payload)
                return
            except FileExistsError:
                pass
        atomic.write_bytes(path, payload, durable=False)


@contextlib.contextmanager
def locked(out_dir: Path) -> Iterator[None]:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / LOCK, "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def plotly_js() -> bytes:
    """plotly.js as shipped inside the installed ``plotly`` package (never from a CDN)."""
    path = files("plotly") / "package_data" / "plotly.min.js"
    try:
        return path.read_bytes()
    except OSError:  # a future layout of the package: ask it
        from plotly.offline import get_plotlyjs

        return get_plotlyjs().encode("utf-8")


def write_assets(out: Path, writer: PageWriter, manifest: dict[str, Any], fp: str) -> int:
    assets = out / "assets"
    written = 0
    version = plotly_version()
    if manifest.get("plotly") != version or not (assets / "plotly.min.js").is_file():
        writer.write(assets / "plotly.min.js", plotly_js())
        written += 1
    if manifest.get("fingerprint") != fp or not all((assets / a).is_file() for a in ASSETS):
        for name in ASSETS:
            writer.write(assets / name, (TEMPLATES / "assets" / name).read_bytes())
            written += 1
    return written


def remove_tree(out: Path, rel: str) -> None:
    """Remove a folder the builder made, never anything outside ``out/specs``."""
    target = (out / rel).resolve()
    specs_root = (out / "specs").resolve()
    if target.parent == specs_root and target.is_dir():
        shutil.rmtree(target)
