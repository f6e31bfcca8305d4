"""One line per experiment on stderr: what runs, how it ended, and the best so far."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from specs.model import TuningSpec
from specs.records import ExperimentRecord

KEY_METRICS = ("output_throughput", "ttft_p90_ms", "tpot_p90_ms")


def fmt_config(config: dict[str, Any], limit: int = 90) -> str:
    text = " ".join(f"{k}={v}" for k, v in config.items()) or "engine defaults"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fmt_value(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric.endswith("_ms"):
        return f"{value:.0f}ms"
    return f"{value:.1f}"


class ProgressPrinter:
    def __init__(self, spec: TuningSpec, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.spec = spec
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.lock = threading.Lock()
        self.best: ExperimentRecord | None = None
        self.started = time.monotonic()
        self.objective = spec.spec.objectives[0]

    def _print(self, text: str) -> None:
        if not self.quiet:
            with self.lock:
                print(text, file=self.stream, flush=True)

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if event == "study":
            self._print(
                f"study {self.spec.name} generation {info['generation']}: "
                f"{info['done']}/{info['budget']} experiments done"
            )
        elif event == "started":
            what = "baseline (engine defaults)" if info.get("baseline") else fmt_config(info["config"])
            self._print(f"[{info['number']}/{info['budget']}] start  {what}")
        elif event == "finished":
            self._finished(info["record"], info["done"], info["budget"])

    def _finished(self, r: ExperimentRecord, done: int, budget: int) -> None:
        o = self.objective
        if r.state == "COMPLETE" and r.feasible and r.objectives:
            value = r.objectives[0].value or 0.0
            better = self.best is None or (
                value > (self.best.objectives[0].value or 0.0)
                if o.resolved_direction == "maximize"
                else value < (self.best.objectives[0].value or 0.0)
            )
            if better:
                self.best = r
        if r.state == "COMPLETE":
            metrics = "  ".join(f"{m}={fmt_value(m, r.summary.get(m))}" for m in KEY_METRICS)
            slo = "" if r.feasible else "  (misses a hard SLO)"
            detail = metrics + slo + (f"  (reused #{r.reused_from})" if r.reused_from else "")
        else:
            reason = r.failure.reason if r.failure else ""
            detail = f"{r.failure.kind if r.failure else ''}: {reason[:120]}"
        best = ""
        if self.best is not None:
            best = f"  | best #{self.best.id} {o.metric}={fmt_value(o.metric, self.best.objectives[0].raw)}"
        elapsed = time.monotonic() - self.started
        self._print(
            f"[{done}/{budget}] {r.state:<8} #{r.id} {fmt_config(r.config, 60)}  {detail}{best}  "
            f"({elapsed:.0f}s)"
        )
