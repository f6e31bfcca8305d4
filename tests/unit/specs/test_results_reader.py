"""The one reader of a results folder (specs.results, by the layout in core.results): what a spec
folder and a record file are, record order, and files that cannot be read. The site, ``status``,
``export`` and the daemon all read through it, so they agree on what a folder holds."""

from __future__ import annotations

import json
import os
from pathlib import Path

from core.results import is_record_name, record_name, record_order
from reconciler.results import ResultsStore
from reconciler.table import load_all
from reports.results import load_spec
from specs.records import ExperimentRecord
from specs.results import is_spec_dir, read_spec_folder, record_files, spec_dirs


def _record(id_: str, spec: str = "s") -> dict[str, object]:
    return ExperimentRecord.model_validate(
        {
            "toolVersion": "test",
            "id": id_,
            "spec": spec,
            "generation": "g1",
            "state": "COMPLETE",
            "config": {},
            "configHash": "h",
        }
    ).dump()


def _write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_record_names_and_order() -> None:
    assert record_name(7) == "0007.json"
    assert is_record_name("0007.json") and is_record_name("10000.json")
    assert not is_record_name("007.json") and not is_record_name("notes.json")
    assert not is_record_name(".0007.json.tmp") and not is_record_name("0007abc.json")
    names = ["10000.json", "9999.json", "0001.json"]
    assert sorted(names, key=record_order) == ["0001.json", "9999.json", "10000.json"]


def test_what_counts_as_a_spec_folder(tmp_path: Path) -> None:
    results = tmp_path / "results"
    _write(results / "with-status" / "status.json", {})
    (results / "with-records" / "experiments").mkdir(parents=True)
    (results / "empty").mkdir()
    (results / ".s.seed" / "experiments").mkdir(parents=True)
    os.symlink(results / "with-records", results / "linked")
    assert [p.name for p in spec_dirs(results)] == ["with-records", "with-status"]
    assert not is_spec_dir(results / "linked")  # a pushed symlink is not a spec's results


def test_every_reader_sees_the_same_records(tmp_path: Path) -> None:
    results = tmp_path / "results"
    folder = results / "s" / "experiments"
    for n in (1, 2, 10000):
        _write(folder / record_name(n), _record(f"{n:04d}"))
    _write(folder / "notes.json", _record("0003"))  # not a record file name: not a record
    _write(folder / "0005.json", _record("0001"))  # a second file claiming id 0001
    (folder / "0006.json").write_text("{not json")
    expected = ["0001", "0002", "10000"]
    assert [p.name for p in record_files(results / "s")] == [
        "0001.json",
        "0002.json",
        "0005.json",
        "0006.json",
        "10000.json",
    ]
    read = read_spec_folder(results / "s")
    assert [r.id for r in read.experiments] == expected
    assert [rel for rel, _ in read.unreadable] == ["experiments/0005.json", "experiments/0006.json"]
    assert "duplicate experiment id" in read.unreadable[0][1]
    assert "not a valid record" in read.unreadable[1][1]
    assert [r.id for r in ResultsStore(results, "s").experiments()] == expected
    assert [r.id for r in load_spec(results / "s").experiments] == expected
    assert [r.id for r in load_all(results)["s"][1]] == expected
    assert ResultsStore(results, "s").next_id() == "10001"


def test_a_symlinked_record_or_status_is_unreadable_not_followed(tmp_path: Path) -> None:
    results = tmp_path / "results"
    secret = tmp_path / "secret.json"
    _write(secret, _record("0001"))
    (results / "s" / "experiments").mkdir(parents=True)
    os.symlink(secret, results / "s" / "experiments" / "0001.json")
    os.symlink(secret, results / "s" / "status.json")
    read = read_spec_folder(results / "s")
    assert read.experiments == [] and read.status is None
    assert {rel for rel, _ in read.unreadable} == {"status.json", "experiments/0001.json"}
    assert all("not a regular file" in why for _, why in read.unreadable)
