"""The report: pure analyses of result records, and the static site built from them.

Public surface: :func:`build_site` and :class:`BuildResult` (what ``autotuner report``, ``run``,
``reconcile`` and the daemon call after every change). The analysis modules (``pareto``,
``curves``, ``history``, ``importance``, ``effects``, ``compare``, ``recommend``) are pure
functions from records to data, in the manner of Optuna's ``_get_*_info`` functions, so they can
be tested without a page; ``charts`` turns their answers into Plotly JSON with captions, and
``render``/``site`` into HTML. This package imports only ``specs`` (enforced by import-linter).
"""

from reports.site import BuildResult, build_site

__all__ = ["BuildResult", "build_site"]
