"""Rendering one spec's pages: a :class:`Job` is everything it needs and is picklable, so that
large rebuilds run it in worker processes. Experiment pages are written before the spec page
that links to them."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment

from core.results import EXPERIMENTS_DIR
from reports.pages.experiment import experiment_context
from reports.pages.index import index_row
from reports.pages.spec import spec_context
from reports.render import environment, page_name
from reports.results import load_spec
from reports.site.files import PageWriter
from reports.site.inputs import hash_parts, tool_version


def common_context(
    title: str, built_at: str, root: str, *, refresh: bool, input_hash: str, uses_plotly: bool
) -> dict[str, Any]:
    return {
        "site_title": title,
        "tool_version": tool_version(),
        "root": root,
        "refresh": refresh,
        "input_hash": input_hash,
        "uses_plotly": uses_plotly,
        "built_at": built_at,
    }


@lru_cache(maxsize=1)
def page_environment() -> Environment:
    """One environment per process: templates are compiled once, then reused for every page."""
    return environment()


def listing(folder: Path) -> set[str]:
    try:
        return set(os.listdir(folder))
    except OSError:
        return set()


@dataclass(frozen=True)
class Job:
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
class Done:
    entry: dict[str, Any]
    written: int = 0
    skipped: int = 0
    removed: int = 0


def render_spec(job: Job) -> Done:
    env = page_environment()
    spec = load_spec(job.spec_dir)
    writer = PageWriter(job.page_dir.parent.parent)
    done = Done({})
    existing = listing(job.page_dir / EXPERIMENTS_DIR)
    pages: dict[str, str] = {}
    template = env.get_template("experiment.html")
    # experiment pages first, the spec page that links to them last: a reader following a link
    # never finds a page that is still being written
    for record in spec.experiments:
        page = page_name(record.id)
        page_input = hash_parts(
            job.fp, job.file_hashes.get(spec.sources.get(record.id, "")), spec.name, spec.title
        )
        pages[page] = page_input
        if job.old_pages.get(page) == page_input and page in existing:
            done.skipped += 1
            continue
        ectx = experiment_context(record) | {"spec_name": spec.name}
        ectx |= common_context(
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
    ctx |= common_context(
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
