"""The report site in a real browser: Debian's headless Chromium driven by Playwright.

The site is opened twice, from disk (``file://``) and from a static server on 127.0.0.1, because
both are how people open it: a folder copied off an air-gapped GPU host, or ``python -m
http.server`` next to the daemon. Playwright never downloads a browser here: it launches
``/usr/bin/chromium`` (``apt-get install chromium``), and the tests skip with that instruction
when it is missing.

Run as a script to refresh the README's screenshots::

    python tests/e2e/test_site_browser.py docs/img
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # when run as a script
    sys.path.insert(0, str(ROOT))

from reports import build_site  # noqa: E402
from reports.results import slug  # noqa: E402
from tests.unit.reports.conftest import XSS_NAME, XSS_TITLE, XSS_VALUE, xss_plan  # noqa: E402
from tests.unit.reports.factory import demo_plans, write_results, write_spec  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
#: SVG elements Plotly draws for data: markers, lines, bars, boxes
DATA_MARKS = ".scatterlayer path.point, .scatterlayer path.js-line, .barlayer path, .boxlayer path.box"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium: apt-get install -y chromium"),
]


def make_demo_site(base: Path, *, hostile: bool = True) -> Path:
    """Results as a small fleet would have them, plus (``hostile``) a spec full of hostile strings."""
    results = base / "results"
    write_results(results, demo_plans(4, 24))
    if hostile:
        write_spec(results, xss_plan(), folder=XSS_NAME)
    site = base / "site"
    build_site(results, site, title="Autotuner demo")
    return site


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """A static file server on 127.0.0.1 (a free port), stopped on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_site(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright Python package")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module", params=["file", "http"])
def base_url(request: pytest.FixtureRequest, site: Path) -> Iterator[str]:
    if request.param == "file":
        yield site.as_uri() + "/"
    else:
        with serve(site) as url:
            yield url


class Page:
    """A browser page that records every console error, page error and failed request."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page.on(
            "console",
            lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url} {r.failure}"))
        self.page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, url: str) -> Any:
        response = self.page.goto(url)
        if url.startswith("http"):
            assert response is not None and response.status == 200, url
        self.page.wait_for_load_state("load")
        return self.page

    def wait_for_charts(self) -> int:
        self.page.wait_for_function(
            "document.querySelectorAll('[data-figure]').length"
            " === document.querySelectorAll('[data-drawn]').length",
            timeout=60_000,
        )
        return int(self.page.evaluate("document.querySelectorAll('[data-figure]').length"))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser: Any) -> Iterator[Page]:
    p = Page(browser)
    yield p
    p.close()


def spec_url(base: str, folder: str) -> str:
    return f"{base}specs/{slug(folder)}/index.html"


def test_pages_load_clean_and_every_chart_draws(tab: Page, base_url: str) -> None:
    page = tab.open(base_url + "index.html")
    assert page.locator("#spec-table tbody tr").count() == 5
    for folder in ("spec-000", "spec-001", "spec-002", "spec-003"):
        page = tab.open(spec_url(base_url, folder))
        drawn = tab.wait_for_charts()
        assert drawn >= 8, folder
        for plot in page.locator("[data-figure]").all():
            assert plot.locator("svg.main-svg").count() >= 1
            assert plot.locator(DATA_MARKS).count() > 0, (
                f"{folder}: {plot.get_attribute('data-figure')} has no data"
            )
        # copying a command works (clipboard or selection), without errors
        button = page.locator("button.copy").first
        button.click()
        page.wait_for_function("document.querySelector('button.copy').textContent !== 'Copy'")
        page.locator(".verdict a").click()  # the recommended experiment's page
        page.wait_for_load_state("load")
        assert tab.wait_for_charts() == 1
        assert page.locator("table.points tbody tr").count() > 20
    assert tab.errors == []
    assert tab.dialogs == []


def test_experiment_table_sorts_and_filters(tab: Page, base_url: str) -> None:
    page = tab.open(spec_url(base_url, "spec-000"))
    table = page.locator("#exp-table")
    rows = table.locator("tbody tr")
    # the generation filter starts on the current generation; show all
    page.select_option("[data-gen-filter-for=exp-table]", "")
    total = rows.count()
    assert total == 24

    def column(index: int) -> list[str]:
        return [
            str(x)
            for x in page.eval_on_selector_all(
                "#exp-table tbody tr:not([hidden])",
                f"rows => rows.map(r => r.cells[{index}].getAttribute('data-v')"
                f" ?? r.cells[{index}].textContent)",
            )
        ]

    headers = [h.strip(" ↕▲▼") for h in table.locator("thead th").all_inner_texts()]
    objective = next(i for i, h in enumerate(headers) if h.startswith("Output throughput per GPU"))
    table.locator("thead th").nth(objective).click()
    values = [float(v) if v else float("-inf") for v in column(objective)]
    assert values == sorted(values)
    assert table.locator("thead th").nth(objective).get_attribute("aria-sort") == "ascending"
    table.locator("thead th").nth(objective).click()
    values = [float(v) if v else float("-inf") for v in column(objective)]
    assert values == sorted(values, reverse=True)
    table.locator("thead th").nth(0).click()
    assert column(0) == sorted(column(0))

    page.select_option("[data-state-filter-for=exp-table]", "failed")
    states = page.eval_on_selector_all(
        "#exp-table tbody tr:not([hidden])", "rs => rs.map(r => r.dataset.state)"
    )
    assert states and all("failed" in s for s in states)
    assert page.locator("[data-count-for=exp-table]").inner_text() == f"{len(states)} of {total} shown"
    page.select_option("[data-state-filter-for=exp-table]", "")
    page.fill("[data-filter-for=exp-table]", "fp8_e5m2")
    texts = page.eval_on_selector_all("#exp-table tbody tr:not([hidden])", "rs => rs.map(r => r.textContent)")
    assert texts and all("fp8_e5m2" in t for t in texts)
    assert tab.errors == []


def test_links_resolve(tab: Page, base_url: str) -> None:
    seen: set[str] = set()
    pages = [base_url + "index.html"] + [spec_url(base_url, f) for f in ("spec-000", "spec-001", XSS_NAME)]
    for url in pages:
        page = tab.open(url)
        links = page.eval_on_selector_all(
            "a[href], link[href], script[src]", "els => els.map(e => e.href || e.src)"
        )
        for link in links:
            target = str(link).split("#")[0]
            if not target or target in seen or target.startswith("data:"):
                continue
            seen.add(target)
            assert target.startswith(base_url), f"{url} links outside the site: {target}"
            if target.startswith("file:"):
                assert Path(unquote(urlparse(target).path)).is_file(), f"{url}: broken link {target}"
            else:
                assert page.request.get(target).status == 200, f"{url}: broken link {target}"
    assert len(seen) > 50
    assert tab.errors == []


def test_hostile_names_and_values_show_as_text(tab: Page, base_url: str) -> None:
    page = tab.open(base_url + "index.html")
    assert XSS_NAME in page.locator("#spec-table").inner_text()
    page = tab.open(spec_url(base_url, XSS_NAME))
    tab.wait_for_charts()
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("h1").inner_text().startswith(XSS_NAME)
    assert XSS_TITLE in page.locator("h1").inner_text()
    assert XSS_VALUE in page.locator("#exp-table").inner_text()
    # Plotly draws the value as SVG text (a category tick), not as markup
    ticks = page.evaluate("Array.from(document.querySelectorAll('#slices svg text')).map(t => t.textContent)")
    assert any("</script><script>window.__xss=3</script>" in t for t in ticks)
    page.locator("#exp-table tbody tr:not([hidden]) a").first.click()
    page.wait_for_load_state("load")
    assert XSS_NAME in page.locator("h1").inner_text()
    assert page.evaluate("typeof window.__xss") == "undefined"
    assert tab.dialogs == [] and tab.errors == []


def test_running_spec_polls_its_data_file(tab: Page, site: Path) -> None:
    """Over HTTP a live page fetches data.json and reloads when the build's input changed."""
    with serve(site) as base:
        page = tab.open(spec_url(base, "spec-002"))
        assert page.locator("body").get_attribute("data-refresh-url") == "data.json"
        data = json.loads((site / "specs" / "spec-002" / "data.json").read_text())
        assert page.locator("body").get_attribute("data-input") == data["input"]
        finished = tab.open(spec_url(base, "spec-000"))
        assert finished.locator("body").get_attribute("data-refresh-url") is None
    assert tab.errors == []


def run_demo(out: Path) -> Path:
    """``autotuner demo`` for real (a study on the sim engine); returns its site folder."""
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "demo", "--out", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return out / "site"


@pytest.fixture(scope="module")
def demo_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_demo(tmp_path_factory.mktemp("demo") / "demo")


@pytest.mark.parametrize("how", ["file", "http"])
def test_the_real_demo_site(tab: Page, demo_site: Path, how: str) -> None:
    """The site `autotuner demo` builds from a real study: every chart draws, links work."""
    with contextlib.ExitStack() as stack:
        base = demo_site.as_uri() + "/" if how == "file" else stack.enter_context(serve(demo_site))
        page = tab.open(base + "index.html")
        assert "quickstart-sim" in page.locator("#spec-table").inner_text()
        page = tab.open(spec_url(base, "quickstart-sim"))
        assert tab.wait_for_charts() >= 5
        for plot in page.locator("[data-figure]").all():
            assert plot.locator(DATA_MARKS).count() > 0, plot.get_attribute("data-figure")
        assert "python" in page.locator(".verdict, pre").first.inner_text() or page.locator("pre").count()
        page.locator(".verdict a").click()
        page.wait_for_load_state("load")
        assert tab.wait_for_charts() == 1
    assert tab.errors == [] and tab.dialogs == []


def take_screenshots(out: Path) -> list[Path]:
    """Screenshots of the index and a spec page of the demo site, with the same browser."""
    import tempfile

    from playwright.sync_api import sync_playwright

    out = out.resolve()
    work = Path(tempfile.mkdtemp(prefix="autotuner-screenshots-"))
    site = run_demo(work / "demo")
    shots = []
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        p = Page(b)
        for name, url, full in (
            ("site-index.png", (site / "index.html").as_uri(), False),
            ("site-spec.png", (site / "specs" / slug("quickstart-sim") / "index.html").as_uri(), False),
            (
                "site-spec-charts.png",
                (site / "specs" / slug("quickstart-sim") / "index.html").as_uri() + "#tradeoff",
                False,
            ),
        ):
            p.open(url)
            if "spec" in name:
                p.wait_for_charts()
            p.page.set_viewport_size({"width": 1280, "height": 900})
            p.page.wait_for_timeout(300)
            shots.append(out / name)
            p.page.screenshot(path=str(out / name), full_page=full)
        p.close()
        b.close()
    shutil.rmtree(work, ignore_errors=True)
    return shots


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img")
    target.mkdir(parents=True, exist_ok=True)
    for shot in take_screenshots(target):
        print(shot)
