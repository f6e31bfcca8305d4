"""Convert other benchmark tools' results into our load points and metric names.

So a user can compare a genai-bench or ``vllm bench serve`` run with ours, or bring results
measured elsewhere into the report, each adapter maps its tool's fields onto the vocabulary of
:mod:`specs.metrics` and returns :class:`~specs.records.LoadPointRecord` objects with
``source`` set to the tool and ``notes`` listing every way the tool's definition differs from ours
(docs/adapters.md has the full table). Nothing is estimated: a metric the tool does not report is
``None``. Per-GPU metrics need the GPU count, which the tools' files do not reliably carry, so
they are filled only when ``gpus`` is given.

Public surface: :func:`import_results`, :data:`KINDS`, :class:`AdapterError`.
"""

from __future__ import annotations

from pathlib import Path

from backends.adapters._common import AdapterError, check_gpus
from backends.adapters.genai_bench import read_genai_bench
from backends.adapters.vllm_bench import read_vllm_bench
from specs.records import LoadPointRecord
from specs.suggest import did_you_mean

#: kind -> what ``path`` must be
KINDS = {"genai-bench": "an experiment folder", "vllm-bench": "a --save-result JSON file"}


def import_results(kind: str, path: Path, *, gpus: int | None = None) -> list[LoadPointRecord]:
    """Read ``path`` (a genai-bench experiment folder, or a ``vllm bench serve`` result file) into
    load points, sorted by series then load. Raises :class:`AdapterError` (a user error naming the
    file) for anything unreadable."""
    check_gpus(gpus)
    path = Path(path)
    if kind == "genai-bench":
        return read_genai_bench(path, gpus)
    if kind == "vllm-bench":
        return read_vllm_bench(path, gpus)
    raise AdapterError(
        f"unknown result kind {kind!r}; expected one of {', '.join(KINDS)}{did_you_mean(kind, KINDS)}"
    )


__all__ = ["KINDS", "AdapterError", "import_results"]
