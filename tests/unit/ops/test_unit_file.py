"""systemd/autotuner.service: accepted by ``systemd-analyze verify``, and says what the docs say.

``systemd-analyze`` comes with Debian's ``systemd`` package; without it the verify tests skip
and say so. Two things about ``verify`` shape these tests:

* It checks that ``ExecStart=``'s program exists. The unit names the installed location,
  ``/usr/local/bin/autotuner``, which a test machine lacks, so the test verifies a copy, in a
  temporary directory, whose ``ExecStart=`` points at the ``autotuner`` this test run uses
  (``shutil.which``). Nothing else in the copy changes.
* It reports unknown keys and bad values as warnings on stderr but still exits 0. So a clean
  unit means exit 0 *and* no output, and a control test shows a broken copy is caught.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
UNIT = REPO / "systemd" / "autotuner.service"
ENV_EXAMPLE = REPO / "systemd" / "autotuner.env.example"
OPERATIONS = REPO / "docs" / "operations.md"
INSTALLED_EXEC = "/usr/local/bin/autotuner"

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None,
    reason="systemd-analyze not installed (Debian/Ubuntu: apt-get install systemd)",
)


def settings() -> dict[str, list[str]]:
    """The unit's [Service] settings, every value of a repeated key kept in order."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key}", []).append(value)
    return out


def verify_copy(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    autotuner = shutil.which("autotuner")
    if autotuner is None:
        pytest.skip("the autotuner console script is not on PATH (pip install -e .)")
    assert f"ExecStart={INSTALLED_EXEC} " in text
    copy = tmp_path / "autotuner.service"
    copy.write_text(text.replace(f"ExecStart={INSTALLED_EXEC} ", f"ExecStart={autotuner} "))
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )


@needs_analyze
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    result = verify_copy(tmp_path, UNIT.read_text())
    assert result.returncode == 0, result.stderr
    assert (result.stdout + result.stderr).strip() == ""


@needs_analyze
def test_verify_catches_what_it_should(tmp_path: Path) -> None:
    """Control: the clean result above means something. A typo and a bad value are reported."""
    broken = (
        UNIT.read_text()
        .replace("NotifyAccess=main", "NotifyAcces=main")
        .replace("KillMode=mixed", "KillMode=gently")
    )
    result = verify_copy(tmp_path, broken)
    assert "Unknown key 'NotifyAcces'" in result.stderr
    assert "kill mode" in result.stderr.lower() and "gently" in result.stderr


def test_unit_promises() -> None:
    """The settings the issue and docs/operations.md rely on, checked where a reader looks."""
    s = settings()
    expected = {
        "Service.Type": ["notify"],
        "Service.NotifyAccess": ["main"],
        "Service.ExecStart": [f"{INSTALLED_EXEC} daemon"],
        "Service.EnvironmentFile": ["-/etc/autotuner/autotuner.env"],
        "Service.User": ["autotuner"],
        "Service.StateDirectory": ["autotuner"],
        "Service.WorkingDirectory": ["/var/lib/autotuner"],
        "Service.KillMode": ["mixed"],
        "Service.TimeoutStopSec": ["120"],
        "Service.Restart": ["on-failure"],
        "Service.RestartSec": ["10"],
        "Service.WatchdogSec": ["120"],
        "Service.NoNewPrivileges": ["yes"],
        "Service.ProtectSystem": ["strict"],
        "Service.ProtectHome": ["yes"],
        "Service.MemoryMax": ["90%"],
        "Service.OOMPolicy": ["continue"],
        "Service.TasksMax": ["16384"],
        "Service.LimitCORE": ["0"],
        "Service.PrivateTmp": ["yes"],
        "Service.DevicePolicy": ["closed"],
        "Install.WantedBy": ["multi-user.target"],
    }
    for key, value in expected.items():
        assert s.get(key) == value, key
    # GPUs stay usable: no private /dev, and every NVIDIA device group allowed read-write
    assert "Service.PrivateDevices" not in s
    allowed = {v.split()[0]: v.split()[1] for v in s["Service.DeviceAllow"]}
    for group in ("char-nvidiactl", "char-nvidia-frontend", "char-nvidia-uvm", "char-nvidia-caps"):
        assert allowed.get(group) == "rw", group
    # JIT compilers (CUDA, Triton) need writable executable memory
    assert "Service.MemoryDenyWriteExecute" not in s


def test_unit_parses_as_ini() -> None:
    """No stray syntax: every line is a comment, a section or KEY=VALUE."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    assert parser.sections() == ["Unit", "Service", "Install"]


def _daemon_variables() -> set[str]:
    """AUTOTUNER_* variables named in ``autotuner daemon --help`` and read by the workspace."""
    help_text = subprocess.run(
        [sys.executable, "-m", "reconciler", "daemon", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=REPO,
    ).stdout
    names = set(re.findall(r"AUTOTUNER_[A-Z_]+", help_text))
    workspace = REPO / "reconciler" / "workspace.py"
    if workspace.exists():
        names |= set(re.findall(r"\"(AUTOTUNER_[A-Z_]+)\"", workspace.read_text()))
    return names


def test_every_daemon_setting_is_documented() -> None:
    """A setting the daemon reads is in the example environment file and in the operations guide."""
    names = _daemon_variables()
    assert "AUTOTUNER_REPO" in names
    example = ENV_EXAMPLE.read_text()
    guide = OPERATIONS.read_text()
    for name in sorted(names):
        assert re.search(rf"^#?{name}=", example, re.M), f"{name} missing from {ENV_EXAMPLE.name}"
        assert f"`{name}`" in guide, f"{name} missing from docs/operations.md"


def test_env_example_is_valid_environment_file_syntax() -> None:
    """Every non-comment line is VAR=value (what EnvironmentFile= accepts), with no export."""
    for number, line in enumerate(ENV_EXAMPLE.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assert re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", line), f"{ENV_EXAMPLE.name}:{number}: {line!r}"
        assert "${" not in line, f"{ENV_EXAMPLE.name}:{number}: EnvironmentFile= does not expand variables"
