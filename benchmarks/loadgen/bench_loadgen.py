"""How fast can the load generator drive a server, and how late does it see what the server sent?

Two measurements, against a streaming server in a separate process (our cheap raw-asyncio
``stream_server.py`` by default, or the sim engine with ``--server sim``):

1. **Ceiling** — zero model cost (the server emits a token to every stream each event-loop
   turn): closed loop at several concurrencies; streamed requests/s, output tokens/s, SSE
   events/s, and the client's own CPU seconds per event (``time.process_time`` of this process
   only), which projects the client's ceiling on one core independent of the server's cost.
2. **Lag** — a paced, batched server (one token to every stream every ``--itl-ms``): for every
   content chunk, client receive time (wall clock) minus the server's ``x_sent_at``; p50/p99 at
   1, 64 and 256 streams. Measured twice: with the load generator's stamping event loop (what
   ``autotuner`` uses) and with a plain ``asyncio.run`` loop that stamps when the coroutine
   resumes, to show what the stamping buys.

Run: ``python benchmarks/loadgen/bench_loadgen.py`` (about a minute; ``--quick`` for a smoke
run, ``--json`` for machine output). Both processes share this machine's cores, so the numbers
are for this machine under whatever else runs on it; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from backends.loadgen import TargetConfig, collect, fetch_model, percentile, run_sync, synthetic_requests
from backends.loadgen.runner import LoadPointRun
from specs.errors import AutotunerError

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


class Server:
    """The server process under load: ``stream`` (ours, raw asyncio) or ``sim`` (backends.sim).

    ``itl_ms`` 0 means zero model cost. The sim engine has no fixed step time: paced, it follows
    its roofline model (default model and GPU: llama-3-8b on an H100, about 10-30 ms a step).
    """

    def __init__(self, kind: str, itl_ms: float) -> None:
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
        run = run_sync(collect(target, reqs, concurrency=c, warmup=min(c, 32), timeout_s=120))
        wall, cpu, scpu = time.perf_counter() - t0, time.process_time() - cpu0, server.cpu_s() - scpu0
        ok = [r for r in run.records if r.ok]
        start = min(r.send_time for r in run.records)
        end = max(r.end_time or 0 for r in run.records)
        dur = end - start
        events = sum(len(r.chunk_times) for r in ok)
        rows.append(
            {
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


def lag(
    server: Server, levels: list[int], output_len: int, stamped: bool, rounds: int = 2
) -> list[dict[str, Any]]:
    target = TargetConfig(server.url, model=server.model, ignore_eos=True, server_timestamps=True)
    rows = []
    for c in levels:
        reqs = synthetic_requests(rounds * c, input_len=16, output_len=output_len, seed=c)
        run = _run(collect(target, reqs, concurrency=c, warmup=min(c, 32), timeout_s=120), stamped)
        samples = []
        for r in run.records:
            for t, sent in zip(r.chunk_times, r.server_sent_at or [], strict=False):
                if sent:
                    samples.append((t + run.wall_offset - sent) * 1000)
        samples.sort()
        rows.append(
            {
                "streams": c,
                "stamping_loop": stamped,
                "chunks": len(samples),
                "failed": sum(1 for r in run.records if not r.ok),
                "lag_p50_ms": percentile(samples, 50),
                "lag_p99_ms": percentile(samples, 99),
                "lag_max_ms": samples[-1] if samples else None,
            }
        )
    return rows


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
    p.add_argument("--server", choices=["stream", "sim"], default="stream")
    p.add_argument("--itl-ms", type=float, default=20.0, help="decode step of the paced server (lag test)")
    p.add_argument("--quick", action="store_true", help="fewer levels and requests (smoke run)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    ceiling_levels = [1, 64] if args.quick else [1, 16, 64, 256]
    lag_levels = [1, 64] if args.quick else [1, 64, 256]
    out_len = 64 if args.quick else 256
    result: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}",
        "loadavg_before": os.getloadavg(),
        "server": args.server,
    }
    server = Server(args.server, 0.0)
    try:
        result["ceiling"] = ceiling(server, ceiling_levels, 64 if args.quick else 256, out_len)
    finally:
        server.stop()
    server = Server(args.server, args.itl_ms)
    try:
        result["lag"] = lag(server, lag_levels, 32 if args.quick else 64, stamped=True)
        result["lag"] += lag(server, lag_levels, 32 if args.quick else 64, stamped=False)
    finally:
        server.stop()
    result["loadavg_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['machine']}; load average before {result['loadavg_before'][0]:.2f}")
    print(f"\nceiling (zero model cost, {out_len} output tokens per request, server: {args.server})")
    print(_table(result["ceiling"]))
    print(f"\nlag: client receive - server x_sent_at, paced server ({args.itl_ms:g} ms per step)")
    print(_table(result["lag"]))
    print(f"\nload average after {result['loadavg_after'][0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
