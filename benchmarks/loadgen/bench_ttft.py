"""How far is the load generator's TTFT from the truth? Against a server with exactly known timing.

The server is ``stream_server.py --exact``: every stream on its own timer, first token exactly
``--ttft-ms`` after the request was parsed, then one every ``--itl-ms``; each chunk says how
late the server's own loop was (``x_late_ms``). Beside the load generator, in the same run and
taking turns round by round (so machine noise falls on both alike), a minimal raw client: one
asyncio protocol per keep-alive connection, the request pre-encoded, the send time taken right
before ``transport.write`` and the first chunk stamped in ``data_received``. What the raw client
measures above the server's exact TTFT is the network stack, the server's parse and loop lag;
what the load generator measures above the raw client is its own bias.

Run from the repository root: ``python benchmarks/loadgen/bench_ttft.py`` (about a minute;
``--rounds``, ``--requests``, ``--json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from backends.loadgen import LoadOptions, TargetConfig, collect, percentile, run_sync
from backends.loadgen.aggregate import request_latencies
from backends.workloads.synthetic import synthetic_requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


class _Raw(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.sent = 0.0
        self.first: float | None = None
        self.late: float | None = None
        self.last = 0.0
        self.buf = b""
        self.done: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, raw: bytes) -> asyncio.Future[None]:
        assert self.transport is not None
        self.done = asyncio.get_running_loop().create_future()
        self.first, self.late, self.buf = None, None, b""
        self.sent = time.perf_counter()
        self.transport.write(raw)
        return self.done

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.buf += data
        if self.first is None and b'"text"' in self.buf:
            self.first = now
            start = self.buf.find(b'"x_late_ms":')
            if start >= 0:
                self.late = float(self.buf[start + 12 :].split(b"}", 1)[0])
        self.last = now
        if self.buf.endswith(b"0\r\n\r\n") and self.done is not None and not self.done.done():
            self.done.set_result(None)
            self.buf = b""


async def raw_client(url: str, concurrency: int, requests: int, output_len: int) -> dict[str, list[float]]:
    host, port = url.split("//")[1].split(":")
    loop = asyncio.get_running_loop()
    body = json.dumps(
        {"model": "bench", "prompt": "hello " * 16, "max_tokens": output_len, "stream": True}
    ).encode()
    raw = (
        b"POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (url.split("//")[1].encode(), len(body), body)
    )
    conns = [(await loop.create_connection(_Raw, host, int(port)))[1] for _ in range(concurrency)]
    left = [requests + concurrency]  # the first request of each connection is a warm-up
    out: dict[str, list[float]] = {"ttft": [], "tpot": [], "server_late": []}

    async def worker(c: _Raw, warm: bool) -> None:
        while left[0] > 0:
            left[0] -= 1
            await c.send(raw)
            if warm:
                warm = False
                continue
            assert c.first is not None
            out["ttft"].append(c.first - c.sent)
            out["tpot"].append((c.last - c.first) / (output_len - 1))
            if c.late is not None:
                out["server_late"].append(c.late / 1000)

    await asyncio.gather(*(worker(c, True) for c in conns))
    for c in conns:
        assert c.transport is not None
        c.transport.close()
    return out


def loadgen(url: str, concurrency: int, requests: int, output_len: int) -> dict[str, list[float]]:
    reqs = synthetic_requests(requests, input_len=16, output_len=output_len)
    target = TargetConfig(url, model="bench")
    run = run_sync(collect(target, reqs, concurrency=concurrency, options=LoadOptions(warmup=concurrency)))
    lat = [request_latencies(r) for r in run.records if r.ok]
    return {"ttft": [v["ttft"] or 0.0 for v in lat], "tpot": [v["tpot"] or 0.0 for v in lat]}


def p50_ms(values: list[float]) -> float:
    return (percentile(sorted(values), 50) or 0.0) * 1000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--itl-ms", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--requests", type=int, default=40)
    p.add_argument("--output-len", type=int, default=16)
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--ticker",
        action="store_true",
        help="also against the shared-ticker server (stream_server.py without --exact), whose new "
        "streams wait for the batch's next step: what an inexact reference server adds",
    )
    args = p.parse_args()
    load_start = os.getloadavg()
    rows: list[dict[str, Any]] = []
    for exact in (True, False) if args.ticker else (True,):
        rows += measure(args, exact)
    result = {
        "server": {"ttft_ms": args.ttft_ms, "itl_ms": args.itl_ms},
        "rounds": args.rounds,
        "requests": args.requests,
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "cpus": os.cpu_count(),
        "rows": rows,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"load average start {result['load_average']['start']}, end {result['load_average']['end']}")
        for r in rows:
            lo, hi = r["loadgen_minus_raw_range_ms"]
            print(
                f"{r['server']} c={r['concurrency']}: TTFT p50 load generator "
                f"{r['loadgen_ttft_p50_ms']:.2f} ms, "
                f"raw client {r['raw_ttft_p50_ms']:.2f} ms, difference {r['loadgen_minus_raw_ms']:+.2f} ms "
                f"(rounds {lo:+.2f}..{hi:+.2f}); "
                f"TPOT p50 {r['loadgen_tpot_p50_ms']:.2f} / {r['raw_tpot_p50_ms']:.2f} ms; "
                f"server loop late p50 {r['server_late_p50_ms']:.2f} ms"
            )
    return 0


def measure(args: argparse.Namespace, exact: bool) -> list[dict[str, Any]]:
    argv = [sys.executable, str(HERE / "stream_server.py"), "--ttft-ms", str(args.ttft_ms)]
    argv += ["--itl-ms", str(args.itl_ms), *(["--exact"] if exact else [])]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline().split()[1])
        url = f"http://127.0.0.1:{port}"
        rows: list[dict[str, Any]] = []
        for c in (1, 4):
            per: dict[str, list[dict[str, float]]] = {"loadgen": [], "raw": []}
            for _ in range(args.rounds):
                lg = loadgen(url, c, args.requests, args.output_len)
                raw = asyncio.run(raw_client(url, c, args.requests, args.output_len))
                per["loadgen"].append({"ttft": p50_ms(lg["ttft"]), "tpot": p50_ms(lg["tpot"])})
                per["raw"].append(
                    {
                        "ttft": p50_ms(raw["ttft"]),
                        "tpot": p50_ms(raw["tpot"]),
                        "server_late": p50_ms(raw["server_late"]),
                    }
                )
            diffs = [a["ttft"] - b["ttft"] for a, b in zip(per["loadgen"], per["raw"], strict=True)]
            rows.append(
                {
                    "server": "exact" if exact else "ticker",
                    "concurrency": c,
                    "loadgen_ttft_p50_ms": statistics.median(x["ttft"] for x in per["loadgen"]),
                    "raw_ttft_p50_ms": statistics.median(x["ttft"] for x in per["raw"]),
                    "loadgen_minus_raw_ms": statistics.median(diffs),
                    "loadgen_minus_raw_range_ms": [min(diffs), max(diffs)],
                    "loadgen_tpot_p50_ms": statistics.median(x["tpot"] for x in per["loadgen"]),
                    "raw_tpot_p50_ms": statistics.median(x["tpot"] for x in per["raw"]),
                    "server_late_p50_ms": statistics.median(x["server_late"] for x in per["raw"]),
                }
            )
        return rows
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    sys.exit(main())
