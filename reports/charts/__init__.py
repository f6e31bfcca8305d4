"""Charts as data: a Plotly figure (plain JSON), a caption that states the finding, a data table.

One module per chart family over the shared primitives of :mod:`reports.charts._base`:
:mod:`~reports.charts.tradeoff` (objective against objective, per-GPU efficiency),
:mod:`~reports.charts.loads` (SLO attainment, goodput and latency against load),
:mod:`~reports.charts.history` (best so far), :mod:`~reports.charts.effects` (importance, slices,
parallel coordinates), :mod:`~reports.charts.compare` (generations, engine versions) and
:mod:`~reports.charts.experiment` (one experiment's load levels).

Figures are built as dictionaries following Plotly's JSON schema instead of ``plotly.graph_objects``
objects: validating a figure object costs milliseconds, and a site of ten thousand experiment
pages would spend most of its build doing that. The browser-side ``plotly.js`` (copied from the
installed ``plotly`` package into the site's assets) draws them.

Only SVG trace types are used (``scatter``, ``bar``, ``box``): WebGL traces (``scattergl``,
``parcoords``, 3-D) do not draw in browsers without a GPU, and a report must draw on the jump box.

Every string that came from a spec or a result (names, parameter values) is HTML-escaped before
it enters a figure: Plotly renders a small subset of HTML inside chart text, and it decodes
entities back into plain characters when it draws, so ``<b>`` in a parameter value shows as the
four characters ``<b>`` rather than as bold text (and ``<img onerror=...>`` as text, not as an
image). The JSON itself is made safe for a ``<script>`` element in :mod:`reports.render`.

A caption is a sentence a reader can act on without reading the chart; the table under it holds
the same numbers for screen readers, for copying, and for when JavaScript is off.
"""

from reports.charts._base import Chart, Table
from reports.charts.compare import comparison
from reports.charts.effects import importance, importance_missing, parallel_coordinates, slices
from reports.charts.experiment import experiment_loads
from reports.charts.history import optimization_history
from reports.charts.loads import slo_and_goodput, throughput_latency
from reports.charts.tradeoff import efficiency, tradeoff, tradeoff_objectives

__all__ = [
    "Chart",
    "Table",
    "comparison",
    "efficiency",
    "experiment_loads",
    "importance",
    "importance_missing",
    "optimization_history",
    "parallel_coordinates",
    "slices",
    "slo_and_goodput",
    "throughput_latency",
    "tradeoff",
    "tradeoff_objectives",
]
