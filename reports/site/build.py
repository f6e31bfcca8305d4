"""The build: plan which specs changed, render them (here or in workers), remove what is gone,
rebuild the index, and write the manifest last."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from core.clock import utc_now
from core.results import EXPERIMENTS_DIR
from reports.pages.index import index_context
from reports.results import slug
from reports.site.files import PageWriter, locked, remove_tree, write_assets
from reports.site.inputs import (
    FORMAT,
    MANIFEST,
    FileHashes,
    fingerprint,
    hash_parts,
    load_manifest,
    plotly_version,
    scan_inputs,
)
from reports.site.pages import Done, Job, common_context, listing, page_environment, render_spec
from specs.errors import UserError
from specs.results import spec_dirs

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
    with locked(out_dir):
        _Build(results_dir, out_dir, site_title, result, workers).run()
    result.seconds = time.perf_counter() - t0
    return result


class _Build:
    def __init__(
        self, results_dir: Path, out: Path, title: str, result: BuildResult, workers: int | None
    ) -> None:
        self.results_dir = results_dir
        self.out = out
        self.title = title
        self.result = result
        self.workers = workers
        self.writer = PageWriter(out)
        self.started_ns = time.time_ns()
        self.manifest = load_manifest(out)
        self.fp = fingerprint(title)
        self.full = self.manifest.get("fingerprint") != self.fp
        self.hashes = FileHashes(self.manifest.get("files", {}), self.started_ns)
        self.built_at = utc_now().strftime("%Y-%m-%d %H:%M UTC")

    def run(self) -> None:
        self.result.assets += write_assets(self.out, self.writer, self.manifest, self.fp)
        previous: dict[str, Any] = self.manifest.get("specs", {})
        entries: dict[str, Any] = {}
        jobs: list[tuple[str, Job]] = []
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
                remove_tree(self.out, f"specs/{entry.get('slug', slug(folder))}")
        self.result.experiments = sum(len(e["pages"]) for e in entries.values())
        self.result.specs = len(entries)
        self.index(entries)
        manifest = {
            "format": FORMAT,
            "fingerprint": self.fp,
            "plotly": plotly_version(),
            "index": self._index_input(entries),
            "specs": dict(sorted(entries.items())),
            "files": self.hashes.fresh,
        }
        self.writer.write(self.out / MANIFEST, json.dumps(manifest, separators=(",", ":"), sort_keys=True))

    def plan(
        self, spec_dir: Path, old: dict[str, Any] | None, used_slugs: set[str]
    ) -> tuple[Any, Job | None]:
        """Hash the spec's inputs; return its old manifest entry when nothing changed, else a job."""
        folder = spec_dir.name
        s = slug(folder)
        while s in used_slugs:  # a plain name that equals another folder's hashed slug
            s = slug(s + "~")
        used_slugs.add(s)
        sigs = scan_inputs(spec_dir)
        file_hashes = {
            rel: self.hashes.get(f"{folder}/{rel}", spec_dir / rel, sig) for rel, sig in sorted(sigs.items())
        }
        spec_input = hash_parts(self.fp, folder, file_hashes)
        page_dir = self.out / "specs" / s
        if old is not None and old.get("slug") == s and old.get("input") == spec_input:
            pages = old.get("pages", {})
            present = listing(page_dir / EXPERIMENTS_DIR) if pages else set()
            if (page_dir / "index.html").is_file() and set(pages) <= present:
                self.result.skipped += 1 + len(pages)
                return old, None
        old_pages = old.get("pages", {}) if old is not None and old.get("slug") == s else {}
        return None, Job(
            spec_dir, page_dir, s, spec_input, self.fp, file_hashes, old_pages, self.title, self.built_at
        )

    def execute(self, jobs: list[Job]) -> list[Done]:
        """Run the jobs here, or in worker processes when there is enough work to pay for them."""
        pages = sum(len(j.file_hashes) for j in jobs)
        workers = self.workers if self.workers is not None else min(os.cpu_count() or 1, MAX_WORKERS)
        if workers <= 1 or len(jobs) < 2 or pages < PARALLEL_MIN_PAGES:
            return [render_spec(j) for j in jobs]
        # spawn, not fork: the daemon calling us has threads, and forking a threaded process can
        # copy a lock in the held state into the child
        with ProcessPoolExecutor(
            max_workers=min(workers, len(jobs)), mp_context=get_context("spawn")
        ) as pool:
            return list(pool.map(render_spec, jobs))

    # -------------------------------------------------------------- index

    def _index_input(self, specs: dict[str, Any]) -> str:
        return hash_parts(
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
        ctx |= common_context(
            self.title, self.built_at, "", refresh=refresh, input_hash=index_input, uses_plotly=False
        )
        self.writer.write(self.out / "index.html", page_environment().get_template("index.html").render(ctx))
        self.writer.write(self.out / "data.json", json.dumps({"input": index_input, "reconciling": refresh}))
        self.result.written += 1
