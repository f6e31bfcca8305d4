"""File datasets (JSONL, CSV, ShareGPT): rows become requests, and every bad input is a located
DatasetError raised while building, i.e. before any engine starts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from backends.workloads import DatasetError, Workload, build_workload
from specs.errors import UserError
from specs.model import FileDataset


def _dataset(**fields: Any) -> FileDataset:
    body: dict[str, Any] = {"kind": "jsonl", "path": "data/prompts.jsonl", "output": {"mean": 32}}
    body.update(fields)
    return FileDataset.model_validate(body)


def _build(tmp_path: Path, dataset: FileDataset, seed: int = 1) -> Workload:
    return build_workload(dataset, seed=seed, base_dir=tmp_path, cache_dir=tmp_path / "cache")


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _error(tmp_path: Path, dataset: FileDataset, match: str) -> str:
    with pytest.raises(DatasetError, match=match) as info:
        _build(tmp_path, dataset)
    assert isinstance(info.value, UserError)
    return str(info.value)


# --------------------------------------------------------------------------------------------- JSONL


def test_jsonl_rows_become_requests_in_file_order(tmp_path: Path) -> None:
    _write(
        tmp_path, "data/prompts.jsonl", _jsonl([{"prompt": f"question {i} here"} for i in range(5)]) + "\n\n"
    )
    w = _build(tmp_path, _dataset())
    assert [r.prompt for r in w.requests] == [f"question {i} here" for i in range(5)]
    assert {r.max_tokens for r in w.requests} == {32}
    assert all(r.input_tokens is None for r in w.requests)  # only the server's tokenizer knows
    assert (w.kind, w.name) == ("jsonl", "prompts.jsonl")
    assert w.stats.input.mean == 3.0
    assert w.source == {"path": "data/prompts.jsonl", "sha256": w.source["sha256"]}
    assert w.description == "jsonl data/prompts.jsonl: 5 rows, output fixed(32)"


def test_prompt_and_output_fields(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"text": "a b c", "max_out": 10},
        {"text": "d e", "max_out": None},
        {"text": "f", "max_out": 12.0},
    ]
    _write(tmp_path, "data/prompts.jsonl", _jsonl(rows))
    w = _build(tmp_path, _dataset(promptField="text", outputField="max_out"))
    assert [r.max_tokens for r in w.requests] == [10, 32, 12]  # the null row falls back to 'output'
    assert "output length from field 'max_out', else output fixed(32)" in w.description


def test_rows_without_an_output_length_and_no_output_distribution(tmp_path: Path) -> None:
    _write(tmp_path, "data/prompts.jsonl", _jsonl([{"prompt": "x", "n": 4}, {"prompt": "y"}]))
    message = _error(
        tmp_path, _dataset(outputField="n", output=None), "line 2: the row gives no output length"
    )
    assert "data/prompts.jsonl" in message and "outputField" in message


def test_bad_output_length_is_located(tmp_path: Path) -> None:
    _write(tmp_path, "data/prompts.jsonl", _jsonl([{"prompt": "x", "n": 4}, {"prompt": "y", "n": -3}]))
    _error(tmp_path, _dataset(outputField="n"), "line 2: output field 'n' must be a whole number")


def test_invalid_json_on_line_n(tmp_path: Path) -> None:
    _write(tmp_path, "data/prompts.jsonl", '{"prompt": "ok"}\n{"prompt": "oops\n')
    message = _error(tmp_path, _dataset(), "line 2: invalid JSON")
    assert message.startswith("data/prompts.jsonl: line 2")


def test_a_row_that_is_not_an_object(tmp_path: Path) -> None:
    _write(tmp_path, "data/prompts.jsonl", '{"prompt": "ok"}\n["a", "b"]\n')
    _error(tmp_path, _dataset(), "line 2: expected a JSON object, got an array")


def test_missing_prompt_field_names_the_fields_that_exist(tmp_path: Path) -> None:
    _write(tmp_path, "data/prompts.jsonl", _jsonl([{"prompt": "ok"}, {"promt": "typo", "id": 3}]))
    message = _error(tmp_path, _dataset(), "line 2: no prompt field 'prompt'")
    assert "'promt', 'id'" in message and "did you mean 'promt'" in message and "promptField" in message


def test_prompt_that_is_not_a_string_or_is_empty(tmp_path: Path) -> None:
    _write(tmp_path, "data/prompts.jsonl", _jsonl([{"prompt": 42}]))
    _error(tmp_path, _dataset(), "line 1: prompt field 'prompt' is a number, not a string")
    _write(tmp_path, "data/prompts.jsonl", _jsonl([{"prompt": "fine"}, {"prompt": "   "}]))
    _error(tmp_path, _dataset(), "line 2: prompt field 'prompt' is empty")


# ---------------------------------------------------------------------------------- bytes and files


def test_missing_file_names_the_path_and_where_it_looked(tmp_path: Path) -> None:
    message = _error(tmp_path, _dataset(path="data/none.jsonl"), "dataset file not found: data/none.jsonl")
    assert str(tmp_path / "data" / "none.jsonl") in message


def test_absolute_path(tmp_path: Path) -> None:
    path = _write(tmp_path, "elsewhere/p.jsonl", _jsonl([{"prompt": "hello there"}]))
    w = build_workload(_dataset(path=str(path)), seed=0, base_dir=tmp_path / "repo", cache_dir=tmp_path)
    assert w.requests[0].prompt == "hello there"


def test_a_folder_is_not_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "data" / "prompts.jsonl").mkdir(parents=True)
    _error(tmp_path, _dataset(), "is a folder")


def test_not_utf8_gives_the_byte_offset_and_line(tmp_path: Path) -> None:
    content = b'{"prompt": "fine"}\n{"prompt": "caf\xe9"}\n'
    _write(tmp_path, "data/prompts.jsonl", content)
    message = _error(
        tmp_path, _dataset(), "not UTF-8 text: byte 0xe9 at byte offset 34 \\(line 2, column 16\\)"
    )
    assert "iconv" in message


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    _write(tmp_path, "data/prompts.jsonl", b"\xef\xbb\xbf" + _jsonl([{"prompt": "héllo"}]).encode())
    assert _build(tmp_path, _dataset()).requests[0].prompt == "héllo"


def test_empty_file(tmp_path: Path) -> None:
    _write(tmp_path, "data/prompts.jsonl", "\n  \n")
    _error(tmp_path, _dataset(), "data/prompts.jsonl: the file is empty")


def test_sha256_pin_of_a_local_file(tmp_path: Path) -> None:
    content = _jsonl([{"prompt": "pinned"}])
    _write(tmp_path, "data/prompts.jsonl", content)
    good = hashlib.sha256(content.encode()).hexdigest()
    assert _build(tmp_path, _dataset(sha256=good)).source["sha256"] == good
    _error(tmp_path, _dataset(sha256="0" * 64), "sha256 mismatch: the spec pins 0000")


# --------------------------------------------------------------------------------------------- CSV


def test_csv_with_quoted_commas_and_newlines(tmp_path: Path) -> None:
    _write(tmp_path, "p.csv", 'id,question,out\n1,"Hello, world",5\n2,"two\nlines",\n\n3,plain,7\n')
    w = _build(tmp_path, _dataset(kind="csv", path="p.csv", promptField="question", outputField="out"))
    assert [(r.prompt, r.max_tokens) for r in w.requests] == [
        ("Hello, world", 5),
        ("two\nlines", 32),
        ("plain", 7),
    ]


def test_csv_without_the_column(tmp_path: Path) -> None:
    _write(tmp_path, "p.csv", "id,questoin\n1,hi\n")
    message = _error(tmp_path, _dataset(kind="csv", path="p.csv", promptField="question"), "p.csv: line 1")
    assert "no column 'question' (promptField)" in message and "did you mean 'questoin'" in message
    _write(tmp_path, "p.csv", "id,question\n1,hi\n")
    _error(
        tmp_path, _dataset(kind="csv", path="p.csv", promptField="question", outputField="n"), "no column 'n'"
    )


def test_csv_row_with_the_wrong_number_of_fields(tmp_path: Path) -> None:
    _write(tmp_path, "p.csv", "prompt,n\nfine,3\nmore,3,extra\n")
    _error(tmp_path, _dataset(kind="csv", path="p.csv"), "line 3: the row has 3 fields but the header has 2")


def test_csv_output_value_that_is_not_a_number(tmp_path: Path) -> None:
    _write(tmp_path, "p.csv", "prompt,n\nfine,3\nbad,lots\n")
    _error(
        tmp_path,
        _dataset(kind="csv", path="p.csv", outputField="n"),
        "line 3: output field 'n' .* got 'lots'",
    )


def test_csv_long_prompt_fields_are_fine(tmp_path: Path) -> None:
    long_prompt = "word " * 60_000  # 300 KB, above csv's default 128 KiB field limit
    _write(tmp_path, "p.csv", f'prompt\n"{long_prompt}"\n')
    w = _build(tmp_path, _dataset(kind="csv", path="p.csv"))
    assert w.stats.input.max == 60_000


# --------------------------------------------------------------------------------------------- ShareGPT


def _conv(*turns: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {"id": "x", "conversations": [{"from": f, "value": v} for f, v in turns], **extra}


def test_sharegpt_first_human_turn_and_reply_length(tmp_path: Path) -> None:
    data = [
        _conv(("human", "what is two plus two"), ("gpt", "it is four, of course")),
        _conv(("system", "be nice"), ("human", "hi"), ("human", "again"), ("gpt", "hello")),
        _conv(("gpt", "I start"), ("human", "then me")),  # no reply after the human turn
        _conv(("gpt", "only me")),
        {"id": "empty", "conversations": []},
    ]
    _write(tmp_path, "sg.json", json.dumps(data))
    w = _build(tmp_path, _dataset(kind="sharegpt", path="sg.json"))
    assert [(r.prompt, r.max_tokens) for r in w.requests] == [
        ("what is two plus two", 5),
        ("hi", 1),
        ("then me", 32),  # no reply: falls back to 'output'
    ]
    assert "2 skipped (no human turn: 2)" in w.description


def test_sharegpt_jsonl_and_openai_style_messages(tmp_path: Path) -> None:
    rows = [
        {"messages": [{"role": "user", "content": "hello model"}, {"role": "assistant", "content": "hi"}]}
    ]
    _write(tmp_path, "sg.jsonl", _jsonl(rows))
    w = _build(tmp_path, _dataset(kind="sharegpt", path="sg.jsonl", promptField="messages", output=None))
    assert [(r.prompt, r.max_tokens) for r in w.requests] == [("hello model", 1)]


def test_sharegpt_output_field_wins_over_the_reply(tmp_path: Path) -> None:
    _write(tmp_path, "sg.json", json.dumps([_conv(("human", "q"), ("gpt", "a b c"), max_tokens=9)]))
    w = _build(tmp_path, _dataset(kind="sharegpt", path="sg.json", outputField="max_tokens"))
    assert w.requests[0].max_tokens == 9


def test_sharegpt_with_no_usable_conversation(tmp_path: Path) -> None:
    _write(tmp_path, "sg.json", json.dumps([_conv(("gpt", "x")), _conv(("human", "  "), ("gpt", "y"))]))
    message = _error(tmp_path, _dataset(kind="sharegpt", path="sg.json"), "sg.json: no usable prompts")
    assert "empty human turn: 1" in message and "no human turn: 1" in message


def test_sharegpt_structural_errors(tmp_path: Path) -> None:
    _write(tmp_path, "sg.json", '[\n  {"conversations": []},\n  {"conversations": [}\n]')
    _error(tmp_path, _dataset(kind="sharegpt", path="sg.json"), "invalid JSON at line 3, column 22")
    _write(tmp_path, "sg.json", json.dumps([_conv(("human", "q")), "text"]))
    _error(
        tmp_path, _dataset(kind="sharegpt", path="sg.json"), "entry 1: expected a JSON object, got a string"
    )
    _write(tmp_path, "sg.json", json.dumps([{"id": 1, "conversation": []}]))
    message = _error(tmp_path, _dataset(kind="sharegpt", path="sg.json"), "entry 0: no 'conversations' list")
    assert "did you mean 'conversation'" in message
    _write(tmp_path, "sg.json", json.dumps([{"conversations": ["hi"]}]))
    _error(tmp_path, _dataset(kind="sharegpt", path="sg.json"), "entry 0: turn 0 must be an object")


# ---------------------------------------------------------------------------------- dedup, sampling


def _numbered(tmp_path: Path, n: int, duplicates: int = 0) -> None:
    rows = [{"prompt": f"prompt number {i}"} for i in range(n)]
    rows += [{"prompt": f"prompt number {i}"} for i in range(duplicates)]
    _write(tmp_path, "data/prompts.jsonl", _jsonl(rows))


def test_dedup_keeps_the_first_of_identical_prompts(tmp_path: Path) -> None:
    _numbered(tmp_path, 10, duplicates=4)
    w = _build(tmp_path, _dataset())
    assert [r.prompt for r in w.requests] == [f"prompt number {i}" for i in range(10)]
    assert "14 rows, 4 duplicate prompts removed" in w.description
    kept = _build(tmp_path, _dataset(dedup=False))
    assert len(kept.requests) == 14
    assert kept.fingerprint != w.fingerprint


def test_sampling_is_by_seed_and_without_repeats(tmp_path: Path) -> None:
    _numbered(tmp_path, 100, duplicates=50)
    a = _build(tmp_path, _dataset(sample=20), seed=5)
    assert len(a.requests) == 20 == len({r.prompt for r in a.requests})
    assert a.requests == _build(tmp_path, _dataset(sample=20), seed=5).requests
    b = _build(tmp_path, _dataset(sample=20), seed=6)
    assert {r.prompt for r in a.requests} != {r.prompt for r in b.requests}
    assert a.fingerprint != b.fingerprint
    assert "sampled 20 (seed 5)" in a.description


def test_sample_larger_than_the_dataset_uses_everything(tmp_path: Path) -> None:
    _numbered(tmp_path, 5)
    w = _build(tmp_path, _dataset(sample=50))
    assert len(w.requests) == 5
    assert "sample 50 >= 5 available: all used" in w.description


# --------------------------------------------------------------------------------------------- fingerprints


def test_fingerprint_same_input_same_value_and_seed_only_counts_through_the_requests(tmp_path: Path) -> None:
    _numbered(tmp_path, 10)
    a = _build(tmp_path, _dataset(), seed=1)
    assert a.fingerprint == _build(tmp_path, _dataset(), seed=1).fingerprint
    # no sampling and fixed output lengths: another seed builds the very same requests
    assert a.fingerprint == _build(tmp_path, _dataset(), seed=2).fingerprint
    # with drawn output lengths the seed changes the requests, so the fingerprint
    varying = _dataset(output={"mean": 32, "stddev": 8})
    assert _build(tmp_path, varying, seed=1).fingerprint != _build(tmp_path, varying, seed=2).fingerprint


def test_fingerprint_does_not_depend_on_where_the_repository_is(tmp_path: Path) -> None:
    for where in ("one", "two"):
        _write(tmp_path / where, "data/prompts.jsonl", _jsonl([{"prompt": "same"}]))
    one = build_workload(_dataset(), seed=0, base_dir=tmp_path / "one", cache_dir=tmp_path)
    two = build_workload(_dataset(), seed=0, base_dir=tmp_path / "two", cache_dir=tmp_path)
    assert one.fingerprint == two.fingerprint


@pytest.mark.parametrize(
    "content, fields",
    [
        (_jsonl([{"prompt": "alpha"}, {"prompt": "beta!"}]), {}),  # one character of content
        (_jsonl([{"prompt": "beta"}, {"prompt": "alpha"}]), {}),  # order
        (_jsonl([{"prompt": "alpha"}, {"prompt": "beta"}]), {"output": {"mean": 33}}),
        (_jsonl([{"prompt": "alpha"}, {"prompt": "beta"}]), {"sample": 5}),  # the definition itself
    ],
)
def test_any_change_changes_the_fingerprint(tmp_path: Path, content: str, fields: dict[str, Any]) -> None:
    _write(tmp_path, "data/prompts.jsonl", _jsonl([{"prompt": "alpha"}, {"prompt": "beta"}]))
    base = _build(tmp_path, _dataset()).fingerprint
    _write(tmp_path, "data/prompts.jsonl", content)
    assert _build(tmp_path, _dataset(**fields)).fingerprint != base


# ------------------------------------------------------------------------------- untrusted paths


def _build_in(repo: Path, dataset: FileDataset) -> Workload:
    return build_workload(dataset, seed=1, base_dir=repo, cache_dir=repo / "cache", roots=[repo])


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.jsonl", "data/link.jsonl", "/proc/self/environ"])
def test_paths_outside_the_roots_are_refused_without_quoting_them(tmp_path: Path, path: str) -> None:
    repo = tmp_path / "repo"
    _write(tmp_path, "outside.jsonl", _jsonl([{"prompt": "SECRET_CONTENT"}]))
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "link.jsonl").symlink_to(tmp_path / "outside.jsonl")
    with pytest.raises(DatasetError, match="resolves outside the folders a spec may read") as info:
        _build_in(repo, _dataset(path=path))
    assert "SECRET_CONTENT" not in str(info.value) and str(tmp_path / "outside") not in str(info.value)


def test_devices_are_not_read_even_inside_a_root(tmp_path: Path) -> None:
    # /dev/zero says size 0 and never ends: refused as not a regular file, before any read
    with pytest.raises(DatasetError, match="not a regular file"):
        build_workload(
            _dataset(path="/dev/zero"), seed=1, base_dir=tmp_path, cache_dir=tmp_path, roots=[Path("/dev")]
        )
    with pytest.raises(DatasetError, match="not a regular file"):
        build_workload(_dataset(path="/dev/zero"), seed=1, base_dir=tmp_path, cache_dir=tmp_path)


def test_error_messages_quote_at_most_a_short_redacted_excerpt(tmp_path: Path) -> None:
    header = "GIT_TOKEN=ghp_abcdefghijklmnop," + ",".join(f"c{i}" for i in range(5000))
    _write(tmp_path, "data/p.csv", header + "\n" + ",".join(["x"] * 5001) + "\n")
    message = _error(tmp_path, _dataset(kind="csv", path="data/p.csv"), "no column 'prompt'")
    assert "ghp_abcdefghijklmnop" not in message and "GIT_TOKEN=***" in message
    assert "and 4989 more" in message and len(message) < 1000
