"""Idle cost of the daemon with many specs (issue 5).

Builds a bare repository with N specs (default 100) whose studies are finished (each a
one-experiment study on the sim engine, run once by a first reconcile), then measures

1. the wall time of a no-op reconcile pass over all N specs (in-process, repeated),
2. the daemon's CPU and memory while idle: ``autotuner daemon`` polling every 5 s, sampled
   from /proc for 60 s.

Usage: python benchmarks/daemon/bench_idle.py [--specs 100] [--idle 60] [--workdir DIR]
Prints a JSON summary; the numbers measured on this project's 2-core machine are in README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from reconciler.git import git  # noqa: E402

SPEC = """\
apiVersion: autotuner/v1
kind: TuningSpec
metadata: {{name: spec-{i:03d}}}
spec:
  model: {{id: llama-3-8b}}
  engine: {{name: sim, args: {{max-model-len: 1024, time-scale: 100, startup-seconds: 0.05}}}}
  search:
    strategy: random
    maxExperiments: 1
    includeDefault: false
    seed: {i}
    parameters:
      max-num-seqs: {{values: [{seqs}]}}
  workload:
    dataset: {{kind: synthetic, input: {{mean: 32}}, output: {{mean: 8}}}}
    load: {{concurrency: [2]}}
    requestsPerLevel: 4
    warmupRequests: 0
"""


def make_repo(root: Path, n: int) -> Path:
    remote = root / "remote.git"
    user = root / "user"
    remote.mkdir(parents=True)
    git(["init", "-q", "--bare", "-b", "main"], remote)
    git(["clone", "-q", str(remote), str(user)], root)
    (user / "specs").mkdir()
    for i in range(n):
        (user / "specs" / f"spec-{i:03d}.yaml").write_text(SPEC.format(i=i, seqs=8 * (1 + i % 8)))
    git(["add", "-A"], user)
    git(["commit", "-q", "-m", "specs"], user)
    git(["push", "-q", "origin", "HEAD:main"], user)
    return remote


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--specs", type=int, default=100)
    ap.add_argument("--idle", type=float, default=60.0)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="autotuner-bench-daemon-"))
    remote = make_repo(work, args.specs)
    state = work / "state"

    from reconciler.reconcile import Reconciler
    from reconciler.session import open_session
    from reconciler.workspace import Workspace

    t = time.monotonic()
    with open_session(state) as session:
        rec = Reconciler(Workspace(str(remote), state), session, max_parallel=2)
        first = rec.reconcile(wait=True)
        first_s = time.monotonic() - t
        assert all(a == "done" for a in first.actions.values()), first.actions
        head = git(["rev-parse", "main"], remote).strip()
        times = []
        for _ in range(args.passes):
            t = time.monotonic()
            report = rec.reconcile(wait=True)
            times.append(time.monotonic() - t)
            assert not report.committed and all(a == "done" for a in report.actions.values())
        assert git(["rev-parse", "main"], remote).strip() == head

    env = {**os.environ, "AUTOTUNER_INTERVAL": "5"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "daemon", "--repo", str(remote), "--state-dir", str(state)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=work,
    )
    try:
        time.sleep(10)  # start-up and first pass
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        rss = []
        while time.monotonic() - t0 < args.idle:
            rss.append(rss_mib(proc.pid))
            time.sleep(1)
        cpu = cpu_seconds(proc.pid) - cpu0
        elapsed = time.monotonic() - t0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    result = {
        "specs": args.specs,
        "first_pass_s (runs every study once)": round(first_s, 1),
        "noop_pass_s": {
            "median": round(statistics.median(times), 3),
            "max": round(max(times), 3),
            "runs": len(times),
        },
        "daemon_idle": {
            "poll_interval_s": 5,
            "seconds": round(elapsed, 1),
            "cpu_percent_of_one_core": round(100 * cpu / elapsed, 2),
            "rss_mib": {"min": round(min(rss), 1), "max": round(max(rss), 1)},
        },
        "daemon_exit_code": proc.returncode,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
