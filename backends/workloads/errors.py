"""The one error a workload build raises on purpose.

A bad dataset is the user's to fix (a missing file, a row without a prompt, a URL that answers
404), so :class:`DatasetError` is a :class:`~specs.errors.UserError`: the reconciler marks the spec
``Stalled`` instead of retrying, and it is raised while the workload is built, which happens before
any engine starts. Every message names the file (or URL) and, where there is one, the line, row
or byte offset, so the user can go straight to the problem.
"""

from __future__ import annotations

from specs.errors import UserError


class DatasetError(UserError):
    """A dataset cannot be read or turned into requests."""
