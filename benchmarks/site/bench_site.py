"""Build benchmark of the report site: 100 specs x 100 experiments (10,000 experiment pages).

Generates the results with the test factory (``tests/unit/reports/factory.py``) into a temporary
folder, then times, each in a fresh process state as the daemon would see it:

1. a full build into an empty site folder,
2. a rebuild with nothing changed (goal: under 2 s),
3. a rebuild after one new experiment in one spec (what the daemon does after every experiment),
4. a full build again after a template change is simulated by a new site title.

It prints a Markdown table and, with ``--write-readme``, replaces the results section of
``benchmarks/site/README.md`` with it. Run from the repository root::

    python benchmarks/site/bench_site.py --write-readme
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from reports import build_site  # noqa: E402
from tests.unit.reports.factory import SpecPlan, add_experiment, demo_plans, write_spec  # noqa: E402

README = Path(__file__).with_name("README.md")
BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"


def size_of(folder: Path) -> tuple[int, int]:
    total = count = 0
    for dirpath, _, names in os.walk(folder):
        for n in names:
            total += (Path(dirpath) / n).stat().st_size
            count += 1
    return total, count


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the build's worker processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", type=int, default=100)
    parser.add_argument("--experiments", type=int, default=100)
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--keep", type=Path, help="keep the results and the site in this folder")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="autotuner-site-bench-"))
    results, site = work / "results", work / "site"
    shutil.rmtree(results, ignore_errors=True)
    shutil.rmtree(site, ignore_errors=True)
    t = time.perf_counter()
    plans: list[SpecPlan] = demo_plans(args.specs, args.experiments)
    for plan in plans:
        write_spec(results, plan)
    generate_s = time.perf_counter() - t
    results_bytes, results_files = size_of(results)
    # let the files age past the builder's "racily clean" window, as results on a real host have
    time.sleep(2.1)

    rows: list[tuple[str, float, float, str]] = []
    load_before = os.getloadavg()[0]

    def timed(label: str, **kwargs: str) -> None:
        cpu = cpu_seconds()
        result = build_site(results, site, **kwargs)  # type: ignore[arg-type]
        rows.append((label, result.seconds, cpu_seconds() - cpu, str(result)))

    timed("full build (empty site folder)")
    timed("rebuild, nothing changed")
    add_experiment(results, plans[len(plans) // 2], {"max-num-seqs": 64, "parallel.tp": 2})
    timed("rebuild after one new experiment")
    timed("full rebuild after a code or title change", title="Renamed site")
    site_bytes, site_files = size_of(site)
    plotly_bytes = (site / "assets" / "plotly.min.js").stat().st_size
    other_kib = (site_bytes - plotly_bytes) / max(1, site_files - 1) / 1024

    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} Linux, "
        f"Python {platform.python_version()}, "
        f"{os.cpu_count()} CPU cores (shared), {args.specs} specs x {args.experiments} experiments "
        f"({results_files} result files, {mib(results_bytes)}; generated in {generate_s:.1f} s).",
        "",
        f"Load average when the builds started: {load_before:.1f} (other work on the machine; wall time "
        "above CPU time / cores means the build waited for a CPU).",
        "",
        "| build | wall s | CPU s (all processes) | what it did |",
        "|---|---:|---:|---|",
        *[f"| {name} | {secs:.2f} | {cpu:.2f} | {what} |" for name, secs, cpu, what in rows],
        "",
        f"Site size: {mib(site_bytes)} in {site_files} files, of which plotly.min.js is {mib(plotly_bytes)} "
        f"(written once); the other files average {other_kib:.1f} KiB.",
    ]
    report = "\n".join(lines)
    print(report)
    if args.write_readme:
        text = README.read_text(encoding="utf-8")
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
        README.write_text(text[:start] + "\n" + report + "\n" + text[end:], encoding="utf-8")
        print(f"\nwrote {README}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
