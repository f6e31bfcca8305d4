"""The tuning spec: schema, YAML loading with located errors, search space, objectives and SLOs.

This package imports nothing else of ours (enforced by import-linter); every other package builds
on it. Public surface: :func:`load_spec`, :func:`load_spec_text`, :class:`TuningSpec`,
:class:`SpecError`, :class:`SpecProblem`.
"""

from specs.errors import AutotunerError, SpecError, SpecProblem, TransientError, UserError
from specs.loader import load_spec, load_spec_text, load_specs_from_paths
from specs.model import TuningSpec

__all__ = [
    "AutotunerError",
    "SpecError",
    "SpecProblem",
    "TransientError",
    "TuningSpec",
    "UserError",
    "load_spec",
    "load_spec_text",
    "load_specs_from_paths",
]
