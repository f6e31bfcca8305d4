"""Every spec of the broken corpus gets a located, readable error and exit code 1."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reconciler.checking import check_paths
from reconciler.cli import main
from specs.errors import SpecError
from tests.conftest import BROKEN

EXPECTED: dict[str, dict] = json.loads((BROKEN / "expected.json").read_text())


def test_corpus_is_large_enough() -> None:
    assert len(EXPECTED) >= 40
    assert sorted(EXPECTED) == sorted(p.name for p in BROKEN.glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_spec_is_rejected_with_location(name: str) -> None:
    expect = EXPECTED[name]
    [(path, result)] = check_paths([BROKEN / name])
    assert isinstance(result, SpecError), f"{name} was accepted"
    messages = [str(p) for p in result.problems]
    hits = [p for p in result.problems if expect["expect"].lower() in str(p).lower()]
    assert hits, f"{name}: expected {expect['expect']!r} in {messages}"
    for p in result.problems:
        assert p.file == str(path)
        assert "Traceback" not in p.message
        assert len(p.message) < 400, p.message
    if "at" in expect:
        # the reported line is the line of the offending node
        lines = (BROKEN / name).read_bytes().decode("utf-8", "replace").splitlines()
        at_lines = [lines[p.line - 1] for p in hits if p.line]
        assert any(expect["at"] in text for text in at_lines), (
            f"{name}: expected the line of {expect['at']!r}: {messages}"
        )


@pytest.mark.parametrize(
    "name", ["01-bad-name-uppercase.yaml", "48-billion-laughs.yaml", "65-binary-garbage.yaml"]
)
def test_validate_exit_code_and_format(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(BROKEN / name)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(str(BROKEN / name) + ":")


def test_validate_whole_corpus_in_a_subprocess() -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", str(BROKEN)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"{len(EXPECTED)} file(s): 0 valid, {len(EXPECTED)} invalid" in proc.stderr
    assert time.monotonic() - started < 60


def test_huge_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as fh:
        fh.truncate(100 * 1024 * 1024)  # sparse: 100 MB on paper, nothing on disk
    started = time.monotonic()
    [(_, result)] = check_paths([big])
    assert isinstance(result, SpecError)
    assert "refused" in str(result) and "limit" in str(result)
    assert time.monotonic() - started < 2


def test_alias_bomb_is_refused_quickly() -> None:
    started = time.monotonic()
    [(_, result)] = check_paths([BROKEN / "48-billion-laughs.yaml"])
    assert isinstance(result, SpecError)
    assert time.monotonic() - started < 5


def test_one_bad_spec_does_not_stop_the_others(tmp_path: Path, repo_root: Path) -> None:
    good = (repo_root / "specs" / "examples" / "quickstart-sim.yaml").read_text()
    (tmp_path / "a.yaml").write_text(good)
    (tmp_path / "b.yaml").write_text("apiVersion: autotuner/v1\nkind: Nope\n")
    (tmp_path / "c.yaml").write_text(good.replace("name: quickstart-sim", "name: other"))
    results = dict(check_paths([tmp_path]))
    assert not isinstance(results[tmp_path / "a.yaml"], SpecError)
    assert isinstance(results[tmp_path / "b.yaml"], SpecError)
    assert not isinstance(results[tmp_path / "c.yaml"], SpecError)


def test_duplicate_names_in_a_folder_are_reported(tmp_path: Path, repo_root: Path) -> None:
    good = (repo_root / "specs" / "examples" / "quickstart-sim.yaml").read_text()
    (tmp_path / "a.yaml").write_text(good)
    (tmp_path / "b.yaml").write_text(good)
    results = dict(check_paths([tmp_path]))
    err = results[tmp_path / "b.yaml"]
    assert isinstance(err, SpecError) and "names must be unique" in str(err)
