"""What a built workload is: the exact requests, and a fingerprint that names them.

Plain frozen dataclasses (pydantic stays at the edges). The fingerprint is what an experiment
record stores to say *which* requests were measured, so it has to be the same for the same
requests on any machine and any run, and different as soon as anything that reaches the engine
differs. It is therefore a sha256 over

* the dataset definition as the user wrote it in the spec (canonical JSON, sorted keys), and
* every request, in order: prompt, ``max_tokens`` and ``input_tokens``.

Resolved absolute paths, cache locations and fetch times are left out on purpose: they change
from machine to machine while the requests do not. The seed is not hashed by itself either; it
counts only through the prompts it picks, so a file dataset without ``sample`` keeps its
fingerprint when the search seed changes (the requests are the same, and results stay comparable).
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: bump when the hashed form changes, so old and new fingerprints can never collide
FINGERPRINT_VERSION = "autotuner-workload-v1"


@dataclass(frozen=True)
class RequestSpec:
    """One request of a workload.

    ``max_tokens`` is the output length asked for; the load generator sends it as ``max_tokens``
    and, where the engine supports it, with ``ignore_eos`` so the output really is that long.
    ``input_tokens`` is the intended prompt length when the workload knows it (synthetic prompts),
    ``None`` when it does not (prompts from a file: only the server's tokenizer knows).
    """

    prompt: str
    max_tokens: int
    input_tokens: int | None = None


@dataclass(frozen=True)
class LengthStats:
    mean: float
    min: int
    max: int

    @classmethod
    def of(cls, values: Sequence[int]) -> LengthStats:
        return cls(mean=float(statistics.fmean(values)), min=min(values), max=max(values))

    def to_dict(self) -> dict[str, float | int]:
        return {"mean": round(self.mean, 3), "min": self.min, "max": self.max}


@dataclass(frozen=True)
class WorkloadStats:
    """Length statistics for the report.

    ``input`` counts whitespace-separated words of the prompts: exact tokens for the sim engine,
    an approximation for real tokenizers (see docs/workloads.md). ``output`` is ``max_tokens``,
    the requested output length.
    """

    num_requests: int
    input: LengthStats
    output: LengthStats

    @classmethod
    def of(cls, requests: Sequence[RequestSpec]) -> WorkloadStats:
        return cls(
            num_requests=len(requests),
            input=LengthStats.of([count_words(r.prompt) for r in requests]),
            output=LengthStats.of([r.max_tokens for r in requests]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "numRequests": self.num_requests,
            "inputTokens": self.input.to_dict(),
            "outputTokens": self.output.to_dict(),
            "inputTokensCountedAs": "whitespace-separated words",
        }


@dataclass(frozen=True)
class Workload:
    """The requests of one dataset, built for one seed."""

    #: ``synthetic``, ``jsonl``, ``csv`` or ``sharegpt``
    kind: str
    #: short human name: ``synthetic`` or the file / URL's base name
    name: str
    requests: list[RequestSpec]
    fingerprint: str
    #: one line for logs and the report: source, counts, what was skipped, sampled or removed
    description: str
    stats: WorkloadStats
    #: where the bytes came from (resolved path or URL) and their sha256, for the record
    source: dict[str, str] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """The JSON-able summary stored with results (prompts are not stored, the fingerprint is)."""
        return {
            "kind": self.kind,
            "name": self.name,
            "fingerprint": self.fingerprint,
            "description": self.description,
            "stats": self.stats.to_dict(),
            "source": dict(self.source),
        }


def count_words(text: str) -> int:
    return len(text.split())


def fingerprint(definition: dict[str, Any], requests: Iterable[RequestSpec]) -> str:
    """sha256 of the canonical definition and every request, streamed so large sets stay cheap."""
    digest = hashlib.sha256()
    digest.update(FINGERPRINT_VERSION.encode())
    digest.update(b"\n")
    digest.update(json.dumps(definition, sort_keys=True, separators=(",", ":")).encode())
    digest.update(b"\n")
    for r in requests:
        # a JSON array per request: unambiguous even when prompts contain newlines or quotes
        line = json.dumps([r.prompt, r.max_tokens, r.input_tokens], ensure_ascii=False, separators=(",", ":"))
        digest.update(line.encode())
        digest.update(b"\n")
    return digest.hexdigest()
