"""How fast can the load generator drive a server, and how late does it see what the server sent?

Two measurements, each against two servers in a separate process — our deliberately cheap
raw-asyncio ``stream_server.py`` (worst case for the client: it emits faster than the client can
parse) and the sim engine (``python -m backends.sim``, an aiohttp server with a per-chunk cost
like a real engine's API server):

1. **Ceiling** — zero model cost (the servers emit tokens as fast as their event loop turns):
   closed loop at several concurrencies; streamed requests/s, output tokens/s, SSE events/s, and
   the client's own CPU microseconds per event (``time.process_time`` of this process only),
   which projects the client's ceiling on one core whatever the server costs.
2. **Lag** — paced servers (ours: one token to every stream every ``--itl-ms``; the sim: steps
   timed by its roofline model): for every content chunk, client receive time (wall clock)
   minus the server's ``x_sent_at``; p50/p99 at 1, 64 and 256 streams, median of ``--repeats``
   runs. Measured with the load generator's stamping event loop (what ``autotuner`` uses) and
   with a plain ``asyncio.run`` loop that stamps when the coroutine resumes, to show what the
   stamping buys.

Run from the repository root: ``python benchmarks/loadgen/bench_loadgen.py`` (about three
minutes; ``--quick`` for a smoke run, ``--server stream|sim`` for one server, ``--json`` for
machine output). Client and server share this machine's cores, so the numbers are for this
machine under whatever else runs on it; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
from floor_client import run_floor

from backends.loadgen import LoadOptions, TargetConfig, collect, fetch_model, percentile, run_sync
from backends.loadgen.runner import LoadPointRun
from backends.workloads.synthetic import synthetic_requests
from specs.errors import AutotunerError

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


class Server:
    """The server process under load: ``stream`` (ours, raw asyncio) or ``sim`` (backends.sim).

    ``itl_ms`` 0 means zero model cost. The sim engine has no fixed step time: paced, it follows
    its roofline model (default model and GPU: llama-3-8b on an H100, about 10-30 ms a step).
    """

    def __init__(self, kind: str, itl_ms: float) -> None:
        self.kind = kind
        if kind == "stream":
            cmd = [sys.executable, str(HERE / "stream_server.py"), "--port", "0", "--itl-ms", str(itl_ms)]
        else:
            cmd = [sys.executable, "-m", "backends.sim", "--port", "0", "--emit-timestamps"]
            cmd += ["--zero-cost"] if itl_ms == 0 else ["--startup-seconds", "0"]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        port = None
        for line in self.proc.stdout:
            found = re.search(r"LISTENING (\d+)|listening on http://[^:\s]+:(\d+)", line)
            if found:
                port = int(found.group(1) or found.group(2))
                break
        if port is None:
            self.proc.kill()
            raise SystemExit(f"{kind} server did not start: {' '.join(cmd)}")
        # keep draining its log so a full pipe never blocks the server
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        self.url = f"http://127.0.0.1:{port}"
        self.model = self._wait_ready()

    def _wait_ready(self) -> str:
        for _ in range(100):
            try:
                return run_sync(fetch_model(TargetConfig(self.url), timeout_s=2))
            except AutotunerError:  # still loading: 503, or not accepting yet
                time.sleep(0.1)
        self.proc.kill()
        raise SystemExit(f"server at {self.url} never became ready")

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _run(coro: Coroutine[Any, Any, LoadPointRun], stamped: bool) -> LoadPointRun:
    return run_sync(coro) if stamped else asyncio.run(coro)


def ceiling(server: Server, levels: list[int], requests: int, output_len: int) -> list[dict[str, Any]]:
    target = TargetConfig(server.url, model=server.model, ignore_eos=True)
    rows = []
    for c in levels:
        reqs = synthetic_requests(max(requests, 2 * c), input_len=16, output_len=output_len, seed=c)
        cpu0, scpu0, t0 = time.process_time(), server.cpu_s(), time.perf_counter()
        run = run_sync(
            collect(target, reqs, concurrency=c, options=LoadOptions(warmup=min(c, 32), timeout_s=120))
        )
        wall, cpu, scpu = time.perf_counter() - t0, time.process_time() - cpu0, server.cpu_s() - scpu0
        ok = [r for r in run.records if r.ok]
        start = min(r.send_time for r in run.records)
        end = max(r.end_time or 0 for r in run.records)
        dur = end - start
        events = sum(len(r.chunk_times) for r in ok)
        rows.append(
            {
                "server": server.kind,
                "concurrency": c,
                "requests": len(run.records),
                "failed": len(run.records) - len(ok),
                "requests_per_s": len(ok) / dur,
                "output_tokens_per_s": sum(r.output_tokens for r in ok) / dur,
                "events_per_s": events / dur,
                # CPU over the whole call (warm-up included) per measured+warm-up event
                "client_cpu_us_per_event": 1e6 * cpu / (events * (1 + len(run.warmup) / len(run.records))),
                "client_cpu_share": cpu / wall,
                "server_cpu_share": scpu / wall,
            }
        )
    return rows


def marginal_costs(server: Server) -> list[dict[str, Any]]:
    """CPU microseconds per request and per event, load generator vs the asyncio floor.

    Marginal costs: the difference between a small and a large run divided by the difference in
    requests (or events), so fixed costs (session set-up, the collection before a level) cancel.
    """
    target = TargetConfig(server.url, model=server.model, ignore_eos=True)

    def loadgen(n: int, out: int) -> tuple[float, int]:
        reqs = synthetic_requests(n, input_len=16, output_len=out, seed=n)
        cpu0 = time.process_time()
        run = run_sync(collect(target, reqs, concurrency=64, options=LoadOptions(timeout_s=120)))
        return time.process_time() - cpu0, sum(len(r.chunk_times) for r in run.records)

    def floor(n: int, out: int) -> tuple[float, int]:
        res = asyncio.run(run_floor(server.url, server.model, concurrency=64, requests=n, output_len=out))
        return res["cpu_us_per_request"] * n / 1e6, round(res["events_per_s"] * n / res["requests_per_s"])

    rows = []
    for name, measure in (
        ("autotuner loadgen (aiohttp)", loadgen),
        ("asyncio floor (floor_client.py)", floor),
    ):
        measure(200, 1)  # warm up imports, connections and caches
        (c1, _), (c2, _) = measure(500, 1), measure(2500, 1)
        (e1cpu, e1), (e2cpu, e2) = measure(64, 256), measure(320, 256)
        rows.append(
            {
                "client": name,
                "cpu_us_per_request": 1e6 * (c2 - c1) / 2000,
                "cpu_us_per_event": 1e6 * (e2cpu - e1cpu) / max(e2 - e1, 1),
            }
        )
    return rows


NAMES = {"stamped": "loadgen", "resume": "loadgen, resume stamps", "floor": "asyncio floor"}


def _lag_run(server: Server, client: str, streams: int, output_len: int, seed: int) -> dict[str, Any]:
    """One run: ``2 * streams`` requests at concurrency ``streams``; lag samples in ms."""
    n = 2 * streams
    if client == "floor":
        lags: list[float] = []
        options: dict[str, Any] = {"concurrency": streams, "requests": n, "output_len": output_len}
        asyncio.run(run_floor(server.url, server.model, warmup=min(streams, 32), lags=lags, **options))
        return {"all": sorted(x * 1000 for x in lags), "steady": [], "failed": 0}
    target = TargetConfig(server.url, model=server.model, ignore_eos=True, server_timestamps=True)
    reqs = synthetic_requests(n, input_len=16, output_len=output_len, seed=seed)
    stamped = client == "stamped"
    run = _run(
        collect(
            target, reqs, concurrency=streams, options=LoadOptions(warmup=min(streams, 32), timeout_s=120)
        ),
        stamped,
    )
    samples: list[float] = []
    steady: list[float] = []  # without each request's first chunk (sent amid new requests)
    for r in run.records:
        for i, (t, sent) in enumerate(zip(r.chunk_times, r.server_sent_at or [], strict=False)):
            if sent:
                samples.append((t + run.wall_offset - sent) * 1000)
                if i:
                    steady.append(samples[-1])
    return {
        "all": sorted(samples),
        "steady": sorted(steady),
        "failed": sum(1 for r in run.records if not r.ok),
    }


def lag(server: Server, levels: list[int], output_len: int, repeats: int) -> list[dict[str, Any]]:
    """Per level and client, the median over ``repeats`` runs of p50 and p99 lag.

    The three clients take turns run by run, so that whatever else the machine does falls on
    all of them alike: the floor client's lag is what the server, the kernel and the machine
    add; the load generator's excess over it is the instrument's own.
    """
    clients = ("stamped", "resume", "floor")
    rows = []
    for streams in levels:
        runs: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
        for rep in range(repeats):
            for client in clients:
                runs[client].append(_lag_run(server, client, streams, output_len, rep))
        for client in clients:
            p50s = sorted(x for r in runs[client] if (x := percentile(r["all"], 50)) is not None)
            p99s = sorted(x for r in runs[client] if (x := percentile(r["all"], 99)) is not None)
            steady = [x for r in runs[client] if (x := percentile(r["steady"], 99)) is not None]
            rows.append(
                {
                    "server": server.kind,
                    "streams": streams,
                    "client": NAMES[client],
                    "chunks_per_run": len(runs[client][0]["all"]),
                    "failed": sum(r["failed"] for r in runs[client]),
                    "lag_p50_ms": statistics.median(p50s) if p50s else None,
                    "lag_p99_ms": statistics.median(p99s) if p99s else None,
                    "p99_range_ms": f"{p99s[0]:.2f}-{p99s[-1]:.2f}" if p99s else "-",
                    "p99_not_first_ms": statistics.median(steady) if steady else None,
                }
            )
    return rows


def _workers_lag_run(server: Server, workers: int, streams: int, output_len: int, seed: int) -> list[float]:
    target = TargetConfig(server.url, model=server.model, ignore_eos=True, server_timestamps=True)
    reqs = synthetic_requests(2 * streams, input_len=16, output_len=output_len, seed=seed)
    run = run_sync(
        collect(
            target,
            reqs,
            concurrency=streams,
            options=LoadOptions(warmup=min(streams, 32), timeout_s=120, workers=workers),
        )
    )
    return sorted(
        (t + run.wall_offset - sent) * 1000
        for r in run.records
        for t, sent in zip(r.chunk_times, r.server_sent_at or [], strict=False)
        if sent
    )


def workers_study(
    kind: str, itl_ms: float, workers: list[int], streams: int, output_len: int, repeats: int
) -> dict[str, list[dict[str, Any]]]:
    """Lag at ``streams`` streams against the paced server, and the zero-cost ceiling, for each
    number of load generator processes; the worker counts take turns run by run."""
    lags: dict[int, list[tuple[float, float]]] = {w: [] for w in workers}
    server = Server(kind, itl_ms)
    try:
        for rep in range(repeats):
            for w in workers:
                samples = _workers_lag_run(server, w, streams, output_len, rep)
                lags[w].append((percentile(samples, 50) or 0.0, percentile(samples, 99) or 0.0))
    finally:
        server.stop()
    ceilings: dict[int, list[float]] = {w: [] for w in workers}
    server = Server(kind, 0.0)
    try:
        target = TargetConfig(server.url, model=server.model, ignore_eos=True)
        for rep in range(repeats):
            for w in workers:
                reqs = synthetic_requests(2 * streams, input_len=16, output_len=256, seed=rep)
                run = run_sync(
                    collect(
                        target,
                        reqs,
                        concurrency=streams,
                        options=LoadOptions(warmup=32, timeout_s=120, workers=w),
                    )
                )
                ok = [r for r in run.records if r.ok]
                dur = max(r.end_time or 0 for r in run.records) - min(r.send_time for r in run.records)
                ceilings[w].append(sum(r.output_tokens for r in ok) / dur)
    finally:
        server.stop()
    return {
        "lag": [
            {
                "server": kind,
                "streams": streams,
                "workers": w,
                "lag_p50_ms": statistics.median(x[0] for x in lags[w]),
                "lag_p99_ms": statistics.median(x[1] for x in lags[w]),
                "p99_per_run_ms": " / ".join(f"{x[1]:.2f}" for x in lags[w]),
            }
            for w in workers
        ],
        "ceiling": [
            {
                "server": kind,
                "streams": streams,
                "workers": w,
                "output_tokens_per_s": statistics.median(ceilings[w]),
                "per_run": " / ".join(f"{x / 1000:.0f}k" for x in ceilings[w]),
            }
            for w in workers
        ],
    }


def _table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    fmt: Callable[[Any], str] = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    cells = [[fmt(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    lines = ["  ".join(k.rjust(w) for k, w in zip(keys, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--server",
        choices=["stream", "sim", "both"],
        default="both",
        help="server(s) to drive (default both)",
    )
    p.add_argument("--itl-ms", type=float, default=20.0, help="decode step of the paced stream server")
    p.add_argument("--repeats", type=int, default=3, help="lag runs per level; the median is reported")
    p.add_argument("--quick", action="store_true", help="fewer levels and requests (smoke run)")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--workers",
        metavar="N,N,...",
        help="only the multi-process study: lag at 256 streams and the ceiling for each number of workers",
    )
    args = p.parse_args(argv)
    if args.workers:
        counts = [int(x) for x in args.workers.split(",")]
        before = os.getloadavg()
        study = {
            kind: workers_study(kind, args.itl_ms, counts, 256, 64, args.repeats)
            for kind in (["stream", "sim"] if args.server == "both" else [args.server])
        }
        out = {"loadavg_before": before, "loadavg_after": os.getloadavg(), "cpus": os.cpu_count(), **study}
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            print(f"load average before {before[0]:.2f}, after {out['loadavg_after'][0]:.2f}")
            for kind, res in study.items():
                print(f"\n{kind}: lag at 256 streams")
                print(_table(res["lag"]))
                print(f"\n{kind}: ceiling at 256 streams, zero model cost")
                print(_table(res["ceiling"]))
        return 0

    ceiling_levels = [1, 64] if args.quick else [1, 16, 64, 256]
    lag_levels = [1, 64] if args.quick else [1, 64, 256]
    out_len = 64 if args.quick else 256
    repeats = 1 if args.quick else args.repeats
    kinds = ["stream", "sim"] if args.server == "both" else [args.server]
    result: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, aiohttp {aiohttp.__version__}",
        "loadavg_before": os.getloadavg(),
        "ceiling": [],
        "lag": [],
    }
    for kind in kinds:
        server = Server(kind, 0.0)
        try:
            result["ceiling"] += ceiling(server, ceiling_levels, 64 if args.quick else 256, out_len)
            if kind == "stream" and not args.quick:
                result["costs"] = marginal_costs(server)
        finally:
            server.stop()
        server = Server(kind, args.itl_ms)
        try:
            result["lag"] += lag(server, lag_levels, 32 if args.quick else 64, repeats)
        finally:
            server.stop()
    result["loadavg_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['machine']}; load average before {result['loadavg_before'][0]:.2f}")
    print(f"\nceiling: zero model cost, {out_len} output tokens per request")
    print(_table(result["ceiling"]))
    if result.get("costs"):
        print("\nmarginal client CPU, concurrency 64, stream server (1-token and 256-token requests)")
        print(_table(result["costs"]))
    print(
        f"\nlag: client receive - server x_sent_at; stream server paced at {args.itl_ms:g} ms per step, "
        f"sim paced by its roofline; median of {repeats} run(s)"
    )
    print(_table(result["lag"]))
    print(f"\nload average after {result['loadavg_after'][0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
