"""The example specs of docs/backends.md, loaded and checked as ``autotuner validate`` would."""

from __future__ import annotations

from reconciler.checking import check_loaded
from specs.loader import load_spec_text
from specs.model import TuningSpec
from tests.conftest import REPO


def backends_page_example(after: str) -> TuningSpec:
    """The first YAML block of docs/backends.md after the text ``after``, as a checked spec."""
    text = (REPO / "docs" / "backends.md").read_text()
    section = text[text.index(after) :]
    start = section.index("```yaml") + len("```yaml")
    example = section[start : section.index("```", start)]
    return check_loaded(load_spec_text(example, "docs/backends.md")).spec
