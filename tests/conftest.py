"""Shared fixtures. Paths are relative to the repository so tests run from any cwd."""

from __future__ import annotations

from pathlib import Path

import pytest

# the session's Podman service and test images, for the docker backend's tests (tests/podman.py)
from tests.podman import podman  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "specs" / "examples"
BROKEN = Path(__file__).resolve().parent / "data" / "broken"


@pytest.fixture
def repo_root() -> Path:
    return REPO
