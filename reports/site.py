"""The static site builder: ``index.html``, a page per spec, a page per experiment.

Layout of the site (every link relative, so it works from disk and from any static server)::

    SITE/index.html                               every spec: status, progress, best result
    SITE/data.json                                what a live index polls to know it is stale
    SITE/assets/{plotly.min.js,site.css,site.js}  written once; plotly.js from the installed package
    SITE/specs/<slug>/index.html                  recommendation, charts, experiment table
    SITE/specs/<slug>/data.json                   what a live spec page polls
    SITE/specs/<slug>/experiments/<id>.html       load points, command line, timings, log tail
    SITE/.autotuner-site.json                     the manifest of input hashes

**Incremental** (after coverage.py's ``status.json``): the manifest records, per spec, a hash of
every input file and of the code that renders them (templates, this package, plotly's version,
the site title). A rebuild reads no record of a spec whose hash did not change; inside a changed
spec only the experiment pages whose own record changed are rewritten (records are written once
and never rewritten, so usually just the new ones). To avoid even reading unchanged files, a
file's hash is reused while its size and modification time match — except for files modified
within :data:`RACY_NS` of the build that hashed them, which are hashed again (git's "racily
clean" rule: a same-size rewrite inside the file system's timestamp granularity would otherwise
go unnoticed). Pages of specs whose results disappeared are removed.

Pages are written to a temporary file and renamed, so a web server never serves half a page. They
are not fsynced: unlike results, the site can always be rebuilt, and ten thousand fsyncs would
dominate the build. A lock file serializes builders (the daemon and a manual ``autotuner report``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from importlib.resources import files
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from jinja2 import Environment

from core.clock import utc_now
from core.results import BEST_DIR, EXPERIMENTS_DIR, MAX_RECORD_BYTES, STATUS_FILE, is_record_name
from reports import importance
from reports.render import (
    TEMPLATES,
    environment,
    experiment_context,
    index_context,
    index_row,
    page_name,
    spec_context,
)
from reports.results import BEST_FILES, load_spec, slug
from specs.errors import UserError
from specs.paths import is_real_dir, read_regular, real_dir
from specs.results import spec_dirs

MANIFEST = ".autotuner-site.json"
LOCK = ".autotuner-site.lock"
#: bump when the manifest's shape changes
FORMAT = 1
#: files modified this close to the build that hashed them are hashed again next time
RACY_NS = 2_000_000_000
ASSETS = ("site.css", "site.js")
#: worker processes pay off only for big rebuilds (each one starts a Python interpreter)
PARALLEL_MIN_PAGES = 1500
MAX_WORKERS = 4
DEFAULT_TITLE = "Autotuner results"


@dataclass
class BuildResult:
    """What a build did. ``written + skipped`` is every HTML page of the site."""

    out_dir: Path
    written: int = 0
    skipped: int = 0
    #: asset files (plotly.js, CSS, JS) copied in this build
    assets: int = 0
    removed: int = 0
    specs: int = 0
    experiments: int = 0
    seconds: float = 0.0

    @property
    def index(self) -> Path:
        return self.out_dir / "index.html"

    def __str__(self) -> str:
        return (
            f"{self.written} page(s) written, {self.skipped} unchanged, {self.removed} removed "
            f"({self.specs} spec(s), {self.experiments} experiment(s)) in {self.seconds:.2f} s"
        )


@lru_cache(maxsize=1)
def _tool_version() -> str:
    try:
        return metadata.version("autotuner")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "dev"


@lru_cache(maxsize=1)
def _plotly_version() -> str:
    try:
        return metadata.version("plotly")
    except metadata.PackageNotFoundError:
        return "missing"


@lru_cache(maxsize=1)
def _code_hash() -> str:
    """Hash of everything that shapes a page besides the results: templates, assets, this
    package's source. Editing a template or upgrading the tool rebuilds every page."""
    h = hashlib.blake2b(digest_size=16)
    roots = [Path(str(TEMPLATES)), Path(__file__).parent]
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix in (".html", ".css", ".js", ".py"):
                h.update(path.relative_to(root).as_posix().encode())
                h.update(path.read_bytes())
    return h.hexdigest()


def fingerprint(title: str) -> str:
    parts = [str(FORMAT), _code_hash(), _tool_version(), _plotly_version(), importance.method_name(), title]
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=16).hexdigest()


def _hash_bytes(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _hash_parts(*parts: object) -> str:
    return hashlib.blake2b(
        json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=16
    ).hexdigest()


# ------------------------------------------------------------------------------------ files


class _Writer:
    """Writes pages atomically (temp file + rename) and counts them.

    Folders below ``root`` (the site folder) are made with :func:`specs.paths.real_dir`, so a
    symlink planted there is replaced, never written through; files are created with
    ``O_NOFOLLOW`` and renamed over whatever entry was there (a rename replaces a symlink, not
    its target)."""

    def __init__(self, root: Path | None = None) -> None:
        self._dirs: set[Path] = set()
        self.pid = os.getpid()
        self.root = root

    def write(self, path: Path, data: str | bytes, *, new: bool = False) -> None:
        """Write ``path`` atomically. ``new=True``: the caller knows no page links here yet, so a
        file that does not exist is written in place (an exclusive create, no rename: renaming
        over nothing costs as much again on ext4, and ten thousand new pages add up)."""
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
        tmp = parent / f".{path.name}.{self.pid}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # a leftover (or a planted symlink) is replaced, never written through
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)


def _scan(spec_dir: Path) -> dict[str, tuple[int, int]]:
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


class _FileHashes:
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
                digest = _hash_bytes(read_regular(path, MAX_RECORD_BYTES))
            except OSError:
                digest = "unreadable"
        trusted = sig[1] < self.started_ns - RACY_NS
        self.fresh[key] = [sig[0], sig[1], digest if trusted else ""]
        return digest


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / LOCK, "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _load_manifest(out_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("format") == FORMAT else {}


def _plotly_js() -> bytes:
    """plotly.js as shipped inside the installed ``plotly`` package (never from a CDN)."""
    path = files("plotly") / "package_data" / "plotly.min.js"
    try:
        return path.read_bytes()
    except OSError:  # a future layout of the package: ask it
        from plotly.offline import get_plotlyjs

        return get_plotlyjs().encode("utf-8")


def _write_assets(out: Path, writer: _Writer, manifest: dict[str, Any], fp: str) -> int:
    assets = out / "assets"
    written = 0
    plotly_version = _plotly_version()
    if manifest.get("plotly") != plotly_version or not (assets / "plotly.min.js").is_file():
        writer.write(assets / "plotly.min.js", _plotly_js())
        written += 1
    if manifest.get("fingerprint") != fp or not all((assets / a).is_file() for a in ASSETS):
        for name in ASSETS:
            writer.write(assets / name, (TEMPLATES / "assets" / name).read_bytes())
            written += 1
    return written


def _remove_tree(out: Path, rel: str) -> None:
    """Remove a folder the builder made, never anything outside ``out/specs``."""
    target = (out / rel).resolve()
    specs_root = (out / "specs").resolve()
    if target.parent == specs_root and target.is_dir():
        shutil.rmtree(target)


# ------------------------------------------------------------------------------------ the build


def build_site(
    results_dir: Path, out_dir: Path, *, title: str | None = None, workers: int | None = None
) -> BuildResult:
    """Build or update the site in ``out_dir`` from ``results_dir``; only changed pages are written.

    ``workers``: processes for large rebuilds (default: one per CPU core, at most
    :data:`MAX_WORKERS`); small incremental rebuilds always run in this process.

    Raises :class:`specs.errors.UserError` when ``results_dir`` is not a folder or the two folders
    are the same.
    """
    t0 = time.perf_counter()
    results_dir, out_dir = Path(results_dir), Path(out_dir)
    if not results_dir.is_dir():
        raise UserError(
            f"results folder {results_dir} does not exist",
            hint="give the folder that holds one sub-folder per spec (results/ in the specs repository)",
        )
    if out_dir.resolve() == results_dir.resolve():
        raise UserError(
            f"the site folder {out_dir} is the results folder", hint="pass another folder to --out"
        )
    site_title = title or DEFAULT_TITLE
    result = BuildResult(out_dir)
    with _locked(out_dir):
        _Build(results_dir, out_dir, site_title, result, workers).run()
    result.seconds = time.perf_counter() - t0
    return result


def _common(
    title: str, built_at: str, root: str, *, refresh: bool, input_hash: str, uses_plotly: bool
) -> dict[str, Any]:
    return {
        "site_title": title,
        "tool_version": _tool_version(),
        "root": root,
        "refresh": refresh,
        "input_hash": input_hash,
        "uses_plotly": uses_plotly,
        "built_at": built_at,
    }


@lru_cache(maxsize=1)
def _env() -> Environment:
    """One environment per process: templates are compiled once, then reused for every page."""
    return environment()


def _listing(folder: Path) -> set[str]:
    try:
        return set(os.listdir(folder))
    except OSError:
        return set()


@dataclass(frozen=True)
class _Job:
    """Everything needed to rebuild one spec's pages; picklable, so it can run in a worker."""

    spec_dir: Path
    page_dir: Path
    slug: str
    spec_input: str
    fp: str
    file_hashes: dict[str, str]
    #: page name -> input hash of the pages already there (empty after a code change)
    old_pages: dict[str, str]
    title: str
    built_at: str


@dataclass
class _Done:
    entry: dict[str, Any]
    written: int = 0
    skipped: int = 0
    removed: int = 0


def _render_spec(job: _Job) -> _Done:
    env = _env()
    spec = load_spec(job.spec_dir)
    writer = _Writer(job.page_dir.parent.parent)
    done = _Done({})
    existing = _listing(job.page_dir / EXPERIMENTS_DIR)
    pages: dict[str, str] = {}
    template = env.get_template("experiment.html")
    # experiment pages first, the spec page that links to them last: a reader following a link
    # never finds a page that is still being written
    for record in spec.experiments:
        page = page_name(record.id)
        page_input = _hash_parts(
            job.fp, job.file_hashes.get(spec.sources.get(record.id, "")), spec.name, spec.title
        )
        pages[page] = page_input
        if job.old_pages.get(page) == page_input and page in existing:
            done.skipped += 1
            continue
        ectx = experiment_context(record) | {"spec_name": spec.name}
        ectx |= _common(
            job.title,
            job.built_at,
            "../../../",
            refresh=False,
            input_hash=page_input,
            uses_plotly=ectx["chart"] is not None,
        )
        writer.write(job.page_dir / EXPERIMENTS_DIR / page, template.render(ectx), new=page not in existing)
        done.written += 1
    refresh = spec.reconciling
    ctx = spec_context(spec)
    ctx |= _common(
        job.title,
        job.built_at,
        "../../",
        refresh=refresh,
        input_hash=job.spec_input,
        uses_plotly=bool(ctx["charts"]),
    )
    writer.write(job.page_dir / "index.html", env.get_template("spec.html").render(ctx))
    writer.write(job.page_dir / "data.json", json.dumps({"input": job.spec_input, "reconciling": refresh}))
    done.written += 1
    for stale in (set(job.old_pages) | existing) - set(pages):
        if stale.endswith(".html"):
            with contextlib.suppress(FileNotFoundError):
                (job.page_dir / EXPERIMENTS_DIR / stale).unlink()
                done.removed += 1
    done.entry = {"slug": job.slug, "input": job.spec_input, "pages": pages, "row": index_row(spec)}
    return done


class _Build:
    def __init__(
        self, results_dir: Path, out: Path, title: str, result: BuildResult, workers: int | None
    ) -> None:
        self.results_dir = results_dir
        self.out = out
        self.title = title
        self.result = result
        self.workers = workers
        self.writer = _Writer(out)
        self.started_ns = time.time_ns()
        self.manifest = _load_manifest(out)
        self.fp = fingerprint(title)
        self.full = self.manifest.get("fingerprint") != self.fp
        self.hashes = _FileHashes(self.manifest.get("files", {}), self.started_ns)
        self.built_at = utc_now().strftime("%Y-%m-%d %H:%M UTC")

    def run(self) -> None:
        self.result.assets += _write_assets(self.out, self.writer, self.manifest, self.fp)
        previous: dict[str, Any] = self.manifest.get("specs", {})
        entries: dict[str, Any] = {}
        jobs: list[tuple[str, _Job]] = []
        used_slugs: set[str] = set()
        for spec_dir in spec_dirs(self.results_dir):
            unchanged, job = self.plan(
                spec_dir, None if self.full else previous.get(spec_dir.name), used_slugs
            )
            if job is None:
                entries[spec_dir.name] = unchanged
            else:
                jobs.append((spec_dir.name, job))
        for folder, done in zip((f for f, _ in jobs), self.execute([j for _, j in jobs]), strict=True):
            entries[folder] = done.entry
            self.result.written += done.written
            self.result.skipped += done.skipped
            self.result.removed += done.removed
        for folder, entry in previous.items():
            if folder not in entries or entries[folder]["slug"] != entry.get("slug"):
                self.result.removed += 1 + len(entry.get("pages", {}))
                _remove_tree(self.out, f"specs/{entry.get('slug', slug(folder))}")
        self.result.experiments = sum(len(e["pages"]) for e in entries.values())
        self.result.specs = len(entries)
        self.index(entries)
        manifest = {
            "format": FORMAT,
            "fingerprint": self.fp,
            "plotly": _plotly_version(),
            "index": self._index_input(entries),
            "specs": dict(sorted(entries.items())),
            "files": self.hashes.fresh,
        }
        self.writer.write(self.out / MANIFEST, json.dumps(manifest, separators=(",", ":"), sort_keys=True))

    def plan(
        self, spec_dir: Path, old: dict[str, Any] | None, used_slugs: set[str]
    ) -> tuple[Any, _Job | None]:
        """Hash the spec's inputs; return its old manifest entry when nothing changed, else a job."""
        folder = spec_dir.name
        s = slug(folder)
        while s in used_slugs:  # a plain name that equals another folder's hashed slug
            s = slug(s + "~")
        used_slugs.add(s)
        sigs = _scan(spec_dir)
        file_hashes = {
            rel: self.hashes.get(f"{folder}/{rel}", spec_dir / rel, sig) for rel, sig in sorted(sigs.items())
        }
        spec_input = _hash_parts(self.fp, folder, file_hashes)
        page_dir = self.out / "specs" / s
        if old is not None and old.get("slug") == s and old.get("input") == spec_input:
            pages = old.get("pages", {})
            listing = _listing(page_dir / EXPERIMENTS_DIR) if pages else set()
            if (page_dir / "index.html").is_file() and set(pages) <= listing:
                self.result.skipped += 1 + len(pages)
                return old, None
        old_pages = old.get("pages", {}) if old is not None and old.get("slug") == s else {}
        return None, _Job(
            spec_dir, page_dir, s, spec_input, self.fp, file_hashes, old_pages, self.title, self.built_at
        )

    def execute(self, jobs: list[_Job]) -> list[_Done]:
        """Run the jobs here, or in worker processes when there is enough work to pay for them."""
        pages = sum(len(j.file_hashes) for j in jobs)
        workers = self.workers if self.workers is not None else min(os.cpu_count() or 1, MAX_WORKERS)
        if workers <= 1 or len(jobs) < 2 or pages < PARALLEL_MIN_PAGES:
            return [_render_spec(j) for j in jobs]
        # spawn, not fork: the daemon calling us has threads, and forking a threaded process can
        # copy a lock in the held state into the child
        with ProcessPoolExecutor(
            max_workers=min(workers, len(jobs)), mp_context=get_context("spawn")
        ) as pool:
            return list(pool.map(_render_spec, jobs))

    # -------------------------------------------------------------- index

    def _index_input(self, specs: dict[str, Any]) -> str:
        return _hash_parts(
            self.fp, [(k, v["input"], v["slug"]) for k, v in sorted(specs.items())], str(self.results_dir)
        )

    def index(self, specs: dict[str, Any]) -> None:
        index_input = self._index_input(specs)
        if (
            self.manifest.get("index") == index_input
            and not self.full
            and (self.out / "index.html").is_file()
        ):
            self.result.skipped += 1
            return
        rows = sorted((v["row"] for v in specs.values()), key=lambda r: (r["name"], r["slug"]))
        refresh = any(r.get("reconciling") for r in rows)
        ctx = index_context(rows) | {"results_dir": str(self.results_dir)}
        ctx |= _common(
            self.title, self.built_at, "", refresh=refresh, input_hash=index_input, uses_plotly=False
        )
        self.writer.write(self.out / "index.html", _env().get_template("index.html").render(ctx))
        self.writer.write(self.out / "data.json", json.dumps({"input": index_input, "reconciling": refresh}))
        self.result.written += 1


__all__ = ["BuildResult", "build_site"]
