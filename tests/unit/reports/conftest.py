"""Fixtures of the report tests: generated result folders (see factory.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from specs.records import ExperimentRecord
from tests.unit.reports.factory import SpecPlan, demo_plans, make_records, write_results

#: hostile strings, as a spec name, a title and a parameter value could carry them
XSS_NAME = "<img src=x onerror=window.__xss=1>"
XSS_TITLE = "</script><script>window.__xss=2</script>"
XSS_VALUE = "</script><script>window.__xss=3</script>\"'&amp;"


@pytest.fixture
def records() -> list[ExperimentRecord]:
    """One spec, two generations, 40 experiments, a baseline per generation, some OOMs."""
    return make_records(SpecPlan(name="llama-h100", experiments=40, seed=1))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A results folder with three specs: one objective, two objectives, one still running."""
    root = tmp_path / "results"
    write_results(root, demo_plans(3, 24))
    return root


def xss_plan() -> SpecPlan:
    return SpecPlan(
        name=XSS_NAME,
        title=XSS_TITLE,
        experiments=16,
        extra_values={"quant.kvcache_dtype": [XSS_VALUE]},
        seed=5,
    )
