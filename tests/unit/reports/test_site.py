"""The site builder: pages, links, incremental rebuilds, removal, escaping, and the CLI."""

from __future__ import annotations

import json
import os
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from reconciler.cli import main
from reports import build_site
from reports.results import slug
from reports.site.inputs import MANIFEST
from specs.errors import UserError
from tests.unit.reports.conftest import XSS_NAME, XSS_TITLE, XSS_VALUE, xss_plan
from tests.unit.reports.factory import SpecPlan, add_experiment, demo_plans, write_spec


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("href", "src"):
            if a.get(key):
                self.refs.append(a[key] or "")
        if tag == "script" and a.get("src"):
            self.scripts.append(a["src"] or "")


def pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def age(root: Path, seconds: float = 10.0) -> None:
    """Make every file look older than the builder's racy window, as results on a host are."""
    past = time.time() - seconds
    for p in root.rglob("*"):
        os.utime(p, (past, past))


def test_builds_index_spec_and_experiment_pages_with_working_links(results: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    r = build_site(results, site, title="Fleet")
    n_experiments = sum(1 for _ in results.glob("*/experiments/*.json"))
    assert r.specs == 3 and r.experiments == n_experiments
    assert r.written == 1 + 3 + n_experiments and r.skipped == 0 and r.removed == 0
    assert (site / "assets" / "plotly.min.js").stat().st_size > 1_000_000
    for page in pages(site):
        parser = Links()
        parser.feed(page.read_text(encoding="utf-8"))
        for ref in parser.refs:
            if ref.startswith(("#", "data:")):
                continue
            assert not re.match(r"^[a-z]+://", ref), f"{page}: external reference {ref}"
            target = (page.parent / ref.split("#")[0]).resolve()
            assert target.is_file(), f"{page.relative_to(site)} links to missing {ref}"
        assert all(s.endswith(("plotly.min.js", "site.js")) for s in parser.scripts)
    index = (site / "index.html").read_text()
    assert "<title>Fleet</title>" in index
    for name in ("spec-000", "spec-001", "spec-002"):
        assert f'href="specs/{name}/index.html"' in index


def test_spec_page_has_recommendation_charts_table_and_failures(results: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    build_site(results, site)
    html = (site / "specs" / "spec-000" / "index.html").read_text()
    assert "What to deploy" in html and "best/command.sh" in html and "best/deployment.yaml" in html
    assert html.count("<figure") == html.count("<figcaption>") == html.count('type="application/json"') >= 8
    assert html.count('<details class="data">') == html.count("<figure")
    assert 'id="exp-table"' in html and 'data-sort="num"' in html
    assert "oom" in html  # the failures table lists the OOM runs with their reason
    data = json.loads((site / "specs" / "spec-000" / "data.json").read_text())
    assert data["reconciling"] is False
    # a running spec's page asks to be refreshed, a finished one does not
    running = (site / "specs" / "spec-002" / "index.html").read_text()
    assert 'data-refresh-url="data.json"' in running and "data-refresh-url" not in html


def test_experiment_page_shows_load_points_command_timings_and_log_tail(
    results: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    build_site(results, site)
    failed = next(
        p
        for p in sorted(results.glob("spec-000/experiments/*.json"))
        if json.loads(p.read_text())["state"] == "FAILED"
    )
    record = json.loads(failed.read_text())
    html = (site / "specs" / "spec-000" / "experiments" / f"{record['id']}.html").read_text()
    assert record["failure"]["reason"] in html
    assert "CUDA out of memory" in html or "waiting for /health" in html
    complete = next(
        json.loads(p.read_text())
        for p in sorted(results.glob("spec-000/experiments/*.json"))
        if json.loads(p.read_text())["state"] == "COMPLETE"
    )
    html = (site / "specs" / "spec-000" / "experiments" / f"{complete['id']}.html").read_text()
    assert "All load points" in html and "concurrency 64" in html
    assert "vllm serve" in html and "total_s" in html


def test_rebuild_writes_only_what_changed(results: Path, tmp_path: Path) -> None:
    age(results)
    site = tmp_path / "site"
    first = build_site(results, site)
    again = build_site(results, site)
    assert again.written == 0 and again.assets == 0 and again.skipped == first.written
    # touching files without changing them rewrites nothing either (hashes, not times)
    for p in results.rglob("*.json"):
        os.utime(p, None)
    assert build_site(results, site).written == 0

    plan = demo_plans(3, 24)[0]
    age(results)
    new = add_experiment(results, plan, {"max-num-seqs": 64})
    before = {p: p.stat().st_mtime_ns for p in pages(site)}
    r = build_site(results, site)
    assert r.written == 3  # the new experiment's page, its spec's page, the index
    changed = {p.relative_to(site).as_posix() for p in pages(site) if before.get(p) != p.stat().st_mtime_ns}
    assert changed == {"index.html", "specs/spec-000/index.html", f"specs/spec-000/experiments/{new.id}.html"}


def test_same_size_rewrite_inside_the_racy_window_is_noticed(results: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    status = results / "spec-001" / "status.json"
    build_site(results, site)
    text = status.read_text()
    mtime = status.stat().st_mtime_ns
    updated = json.loads(text)["updatedAt"]
    later = "2031" + updated[4:]
    status.write_text(text.replace(updated, later))  # same size
    os.utime(status, ns=(mtime, mtime))  # and, as within one timestamp tick, the same mtime
    r = build_site(results, site)
    assert r.written == 2  # the spec page and the index
    assert "2031-" in (site / "index.html").read_text()


def test_a_missing_page_is_rebuilt_and_a_removed_spec_disappears(results: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    build_site(results, site)
    (site / "specs" / "spec-001" / "experiments" / "0003.html").unlink()
    assert build_site(results, site).written == 1 + 1  # that page; its spec page, which links to it
    import shutil

    shutil.rmtree(results / "spec-002")
    r = build_site(results, site)
    assert r.removed == 1 + 24 and not (site / "specs" / "spec-002").exists()
    assert "spec-002" not in (site / "index.html").read_text()


def test_template_or_title_change_rebuilds_everything(results: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    first = build_site(results, site)
    r = build_site(results, site, title="Another title")
    assert r.written == first.written and r.skipped == 0


def test_unreadable_record_is_listed_not_fatal(results: Path, tmp_path: Path) -> None:
    (results / "spec-000" / "experiments" / "0099.json").write_text("{not json")
    (results / "spec-000" / "experiments" / "0100.json").write_text('{"schemaVersion": 1}')
    site = tmp_path / "site"
    build_site(results, site)
    html = (site / "specs" / "spec-000" / "index.html").read_text()
    assert (
        "experiments/0099.json" in html and "experiments/0100.json" in html and "not a valid record" in html
    )


def test_spec_folder_without_status_or_experiments(tmp_path: Path) -> None:
    results = tmp_path / "results"
    (results / "fresh" / "experiments").mkdir(parents=True)
    write_spec(results, SpecPlan(name="stalled", experiments=0, phase="stalled"))
    site = tmp_path / "site"
    r = build_site(results, site)
    assert r.specs == 2
    assert "No experiment has finished yet" in (site / "specs" / "fresh" / "index.html").read_text()
    assert "Stalled" in (site / "specs" / "stalled" / "index.html").read_text()


def test_hostile_strings_stay_text(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_spec(results, xss_plan(), folder=XSS_NAME)
    site = tmp_path / "site"
    build_site(results, site)
    spec_dir = site / "specs" / slug(XSS_NAME)
    assert spec_dir.is_dir() and re.fullmatch(r"[a-z0-9-]+", spec_dir.name)
    for page in [
        site / "index.html",
        spec_dir / "index.html",
        *sorted((spec_dir / "experiments").glob("*.html")),
    ]:
        html = page.read_text()
        for raw in (XSS_NAME, XSS_TITLE, "<script>window.__xss"):
            assert raw not in html, f"{page}: {raw!r} unescaped"
    spec_html = (spec_dir / "index.html").read_text()
    assert "&lt;img src=x onerror=window.__xss=1&gt;" in spec_html
    assert "&lt;/script&gt;&lt;script&gt;window.__xss=2&lt;/script&gt;" in spec_html
    # inside the chart JSON the value is JSON-escaped and decodes back to the HTML-escaped text
    blocks = re.findall(r'<script type="application/json" id="[^"]+">(.*?)</script>', spec_html, re.S)
    assert blocks
    decoded = json.dumps([json.loads(b) for b in blocks])
    assert "&lt;/script&gt;" in decoded and XSS_VALUE not in decoded


def test_bad_folders_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        build_site(tmp_path / "nope", tmp_path / "site")
    (tmp_path / "r").mkdir()
    with pytest.raises(UserError, match="is the results folder"):
        build_site(tmp_path / "r", tmp_path / "r")


def test_cli_report(results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = tmp_path / "site"
    assert main(["report", str(results), "--out", str(site), "--title", "CLI"]) == 0
    out = capsys.readouterr().out
    assert "page(s) written" in out and (site / "index.html").as_uri() in out
    assert main(["report", str(results), "--out", str(site), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["written"] == 3 + 1 + sum(1 for _ in results.glob("*/experiments/*.json"))  # the new title
    assert main(["report", str(tmp_path / "missing"), "--out", str(site)]) == 1
    err = capsys.readouterr().err
    assert "error: results folder" in err and "hint:" in err and "Traceback" not in err


def test_manifest_survives_corruption(results: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    first = build_site(results, site)
    (site / MANIFEST).write_text("garbage")
    assert build_site(results, site).written == first.written


def test_parallel_build_matches_serial(results: Path, tmp_path: Path) -> None:
    serial = build_site(results, tmp_path / "a", workers=1)
    import reports.site.build as site_mod

    old = site_mod.PARALLEL_MIN_PAGES
    site_mod.PARALLEL_MIN_PAGES = 1
    try:
        parallel = build_site(results, tmp_path / "b", workers=2)
    finally:
        site_mod.PARALLEL_MIN_PAGES = old
    assert parallel.written == serial.written
    strip = re.compile(r"built \d{4}-\d\d-\d\d \d\d:\d\d UTC")
    for page in pages(tmp_path / "a"):
        twin = tmp_path / "b" / page.relative_to(tmp_path / "a")
        assert strip.sub("", twin.read_text()) == strip.sub("", page.read_text())
