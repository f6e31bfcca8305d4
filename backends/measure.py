"""What one load point measured, whoever measured it (our load generator or an adapter).

Metric names are the vocabulary of :mod:`specs.metrics`; a metric that could not be computed
(e.g. TPOT when every request produced one token) is absent or ``None``, never 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass
class LoadPointResult:
    """Metrics of one load level (a concurrency or a request rate)."""

    #: ``"concurrency"`` (closed loop) or ``"request_rate"`` (open loop, requests/s; ``inf`` = all at once)
    load_kind: Literal["concurrency", "request_rate"]
    load_value: float
    metrics: dict[str, float | None]
    #: who measured it: ``autotuner``, ``genai-bench``, ``vllm-bench``
    source: str = "autotuner"
    #: definition differences, fallbacks used (e.g. "token counts from streamed chunks, no usage")
    notes: list[str] = field(default_factory=list)
    #: error kind -> count (``http_500``, ``timeout``, ``truncated_stream``, ...)
    errors: dict[str, int] = field(default_factory=dict)
    #: free-form extras (scenario name, per-request samples for the report, ...)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadPointResult:
        return cls(**data)
