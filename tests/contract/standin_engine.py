"""A stand-in inference engine for deploy-backend tests: a real process with scripted misbehaviour.

Run as a script (``python standin_engine.py --mode serve --port 8000``). It serves ``/health``
and ``/v1/models`` like an OpenAI-compatible engine, on ``--host`` (127.0.0.1 unless a
container needs 0.0.0.0), with the standard library alone so that it starts in tens of
milliseconds. Modes:

* ``serve``: answers 503 until ``--ready-delay`` seconds after start, then 200
* ``exit``: prints a fatal error and exits with code 3 at once
* ``never``: never listens (a model that loads forever)
* ``oom``: prints a CUDA out-of-memory traceback and exits with code 1
* ``oom-hang``: prints it and hangs (an engine that does not exit after OOM)
* ``ignore-term``: serves, and ignores SIGTERM (teardown must escalate to SIGKILL)
* ``child``: serves, and starts a child process that sleeps (teardown must kill the group)
* ``setsid-child``: like ``child``, but the child leaves the process group (``setsid``)
* ``crash-after``: serves, then exits with code 7 ``--crash-after`` seconds after becoming ready
* ``hog``: allocates memory, 32 MiB a step, until something kills it (a container memory limit)

``--echo-env NAME`` prints ``NAME=value`` at start (``CUDA_VISIBLE_DEVICES`` always is);
``--cat PATH`` prints a file, relative to the working directory.
On SIGTERM (when not ignored) it prints ``standin: got SIGTERM`` and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = (
    "serve",
    "exit",
    "never",
    "oom",
    "oom-hang",
    "ignore-term",
    "child",
    "setsid-child",
    "crash-after",
    "hog",
)
STARTED = time.monotonic()


def say(text: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    stream.write(f"standin: {text}\n")
    stream.flush()


def serve(host: str, port: int, ready_delay: float) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ready = time.monotonic() - STARTED >= ready_delay
            if self.path not in ("/health", "/v1/models"):
                self.send_response(404)
                self.end_headers()
                return
            if not ready:
                self.send_response(503)
                self.end_headers()
                return
            body = b""
            if self.path == "/v1/models":
                body = json.dumps({"object": "list", "data": [{"id": "standin", "object": "model"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # keep the log readable
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    say(f"listening on {host}:{port}")
    return server


def start_child(new_session: bool) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"],
        start_new_session=new_session,
    )
    say(f"child_pid={child.pid}")


def on_term(signum: int, frame: object) -> None:
    say("got SIGTERM")
    os._exit(0)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=MODES, default="serve")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--ready-delay", type=float, default=0.0)
    p.add_argument("--crash-after", type=float, default=0.5)
    p.add_argument("--echo-env", action="append", default=[])
    p.add_argument("--cat", action="append", default=[])
    args = p.parse_args()

    if args.mode == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, on_term)
    say(f"pid={os.getpid()} mode={args.mode}")
    say(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}")
    for name in args.echo_env:
        say(f"{name}={os.environ.get(name, '<unset>')}")
    for path in args.cat:
        with open(path) as f:
            say(f"{path}: {f.read().strip()}")

    if args.mode == "exit":
        say("fatal: unknown flag --bogus-flag", err=True)
        return 3
    if args.mode in ("oom", "oom-hang"):
        say("Traceback (most recent call last):", err=True)
        say(
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. "
            "GPU 0 has a total capacity of 79.10 GiB of which 1.2 GiB is free.",
            err=True,
        )
        if args.mode == "oom":
            return 1
    if args.mode in ("never", "oom-hang"):
        say("loading model weights...")
        while True:
            time.sleep(3600)

    if args.mode == "hog":
        hoard = []
        while True:
            hoard.append(bytearray(32 * 1024 * 1024))  # bytearray pages are written: resident
            say(f"holding {32 * len(hoard)} MiB")
            time.sleep(0.05)
    serve(args.host, args.port, args.ready_delay)
    if args.mode in ("child", "setsid-child"):
        start_child(new_session=args.mode == "setsid-child")
    if args.mode == "crash-after":
        time.sleep(args.ready_delay + args.crash_after)
        say("fatal: engine core died unexpectedly", err=True)
        return 7
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
