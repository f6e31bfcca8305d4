"""Workloads: the exact requests a benchmark sends, built from a spec's dataset.

Public surface (everything else is private to the package):

* :func:`build_workload` — dataset definition + seed → :class:`Workload`
* :class:`Workload`, :class:`RequestSpec`, :class:`WorkloadStats` — plain data
* :class:`DatasetError` — a :class:`~specs.errors.UserError` naming the file and line
* :class:`Fetcher` / :class:`UrlFetcher` — the injectable network part of URL datasets

Kinds: ``synthetic`` (fixed, normal or uniform lengths, shared prefix), ``jsonl``, ``csv`` and
``sharegpt`` files from a path or an ``https://`` URL (fetched once, cached by content). See
docs/workloads.md.
"""

from backends.workloads.build import build_workload, canonical_definition
from backends.workloads.fetch import Fetcher, UrlFetcher
from backends.workloads.model import LengthStats, RequestSpec, Workload, WorkloadStats
from specs.errors import DatasetError

__all__ = [
    "DatasetError",
    "Fetcher",
    "LengthStats",
    "RequestSpec",
    "UrlFetcher",
    "Workload",
    "WorkloadStats",
    "build_workload",
    "canonical_definition",
]
