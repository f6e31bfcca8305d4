"""The view model of each page of the site, one module per template: :mod:`~.index`
(``index.html``), :mod:`~.spec` (``spec.html``) and :mod:`~.experiment` (``experiment.html``).
What they share (the environment, conditions, dates, the summary load point) is in
:mod:`reports.render`.
"""
