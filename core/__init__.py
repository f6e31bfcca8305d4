"""The foundation beneath ``specs``, ``backends`` and ``reports``: mechanisms every layer needs
and none may own, so that there is exactly one of each (layering: ``core`` imports nothing of
ours; everything else may import it).

- :mod:`core.clock` — the one clock for timestamps written to records and status.
- :mod:`core.atomic` — the one atomic writer (durable for results, fast for the site).
- :mod:`core.faults` — crash points for the crash-safety tests.
- :mod:`core.results` — the results folder's layout: file and folder names, what a record is.
- :mod:`core.redact` — what counts as a secret, and the one masker of logs, tails and messages.
"""
