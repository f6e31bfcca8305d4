"""The local backend runs the shared deploy-backend contract."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.deploy.local import LocalBackend
from tests.contract.backend_contract import BackendContract


class TestLocalBackendContract(BackendContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> LocalBackend:
        # short grace: the stand-in that ignores SIGTERM must not slow the suite down
        return LocalBackend(tmp_path / "state", grace_s=0.5, poll_interval_s=0.05)
