"""Read prompts from JSONL, CSV and ShareGPT files, with every error located.

Files are read whole and decoded strictly as UTF-8 (a BOM is accepted): a bad byte is reported
with its offset and line instead of turning into replacement characters that would silently change
the prompts, and so the fingerprint. Then each format has a small reader that yields
:class:`Row` objects and says *where* (``line 12``, ``entry 7``) whenever a row is unusable.

What is an error and what is skipped:

* JSONL and CSV rows are the user's own data: a row without the prompt field, a prompt that is not
  a string or is empty, an output length that is not a positive whole number are errors, named by
  line, because guessing would measure something other than what the user asked for.
* ShareGPT dumps are third-party data full of conversations that are empty or start with the
  assistant; like ``vllm bench serve`` we skip those and count them, and only a file with no usable
  conversation at all is an error. Structural damage (an entry that is not an object, turns that are
  not objects) is still an error.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from backends.jsontypes import json_type_name
from backends.workloads.model import count_words
from specs.errors import DatasetError
from specs.paths import excerpt
from specs.suggest import did_you_mean

HUMAN_ROLES = frozenset({"human", "user"})
ASSISTANT_ROLES = frozenset({"gpt", "assistant", "chatgpt", "bard", "model"})
BOM = b"\xef\xbb\xbf"

#: an error message names at most this many of a row's fields, each at most this long: the names
#: are the file's content, and a 5 MB header must not become a 5 MB message in status.json
_SHOWN_FIELDS = 12
_SHOWN_CHARS = 40


def _shown(value: object) -> str:
    """A short, redacted quote of the file's content (``KEY=value`` shapes hidden)."""
    if isinstance(value, str):
        return f"'{excerpt(value, _SHOWN_CHARS)}'"
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _field_list(names: list[str]) -> str:
    shown = ", ".join(_shown(n) for n in names[:_SHOWN_FIELDS]) or "none"
    more = len(names) - _SHOWN_FIELDS
    return shown + (f" and {more} more" if more > 0 else "")


def _suggest(name: str, names: list[str]) -> str:
    # "did you mean" compares against every name; only a short one is worth quoting
    hint = did_you_mean(name, [n for n in names[:1000] if len(n) <= _SHOWN_CHARS])
    return hint


# csv refuses fields above 128 KiB by default; a long prompt is a legitimate field. The limit is
# process-wide, so it is only ever raised, never lowered.
_CSV_FIELD_LIMIT = 1 << 30


@dataclass(frozen=True)
class Row:
    prompt: str
    #: output length given by the row itself (outputField or the ShareGPT reply), else None
    output_tokens: int | None
    #: ``line 12`` / ``entry 7``: for messages about this row
    where: str


@dataclass
class ParsedRows:
    rows: list[Row] = field(default_factory=list)
    #: reason -> count, for rows a format may legitimately skip (ShareGPT)
    skipped: Counter[str] = field(default_factory=Counter)


def decode_utf8(data: bytes, label: str) -> str:
    if data.startswith(BOM):
        data = data[len(BOM) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DatasetError(
            f"{label}: not UTF-8 text: byte 0x{data[exc.start]:02x} at byte offset {exc.start} "
            f"(line {line}, column {column}) {exc.reason}",
            hint="convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8 IN > OUT",
        ) from None
    if not text.strip():
        raise DatasetError(f"{label}: the file is empty")
    return text


def parse(kind: str, text: str, label: str, prompt_field: str, output_field: str | None) -> ParsedRows:
    if kind == "jsonl":
        return _parse_jsonl(text, label, prompt_field, output_field)
    if kind == "csv":
        return _parse_csv(text, label, prompt_field, output_field)
    if kind == "sharegpt":
        return _parse_sharegpt(text, label, prompt_field, output_field)
    raise ValueError(f"unknown dataset kind {kind!r}")  # the spec schema makes this unreachable


# --------------------------------------------------------------------------------------------- JSONL


def _json_lines(text: str, label: str) -> Iterator[tuple[int, Any]]:
    # split on "\n" only: str.splitlines() would also split on U+2028 and friends, which JSON
    # allows raw inside strings
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{label}: line {number}: invalid JSON: {exc.msg} (column {exc.colno})",
                hint="JSONL needs one complete JSON object per line",
            ) from None


def _parse_jsonl(text: str, label: str, prompt_field: str, output_field: str | None) -> ParsedRows:
    out = ParsedRows()
    for number, value in _json_lines(text, label):
        where = f"line {number}"
        if not isinstance(value, dict):
            raise DatasetError(f"{label}: {where}: expected a JSON object, got {json_type_name(value)}")
        prompt = _prompt_of(value, prompt_field, label, where)
        output = _output_of(value, output_field, label, where)
        out.rows.append(Row(prompt, output, where))
    return out


# --------------------------------------------------------------------------------------------- CSV


def _parse_csv(text: str, label: str, prompt_field: str, output_field: str | None) -> ParsedRows:
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text, newline=""))
    out = ParsedRows()
    try:
        header = next(reader)
        columns = [c.strip() for c in header]
        for name, role in ((prompt_field, "promptField"), (output_field, "outputField")):
            if name is not None and name not in columns:
                raise DatasetError(
                    f"{label}: line 1: the CSV header has no column {name!r} ({role}); "
                    f"columns: {_field_list(columns)}{_suggest(name, columns)}",
                )
        for cells in reader:
            where = f"line {reader.line_num}"
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(columns):
                raise DatasetError(
                    f"{label}: {where}: the row has {len(cells)} fields but the header has {len(columns)}",
                    hint="quote fields that contain commas or newlines",
                )
            row = dict(zip(columns, cells, strict=True))
            prompt = _prompt_of(row, prompt_field, label, where)
            output = _output_of(row, output_field, label, where)
            out.rows.append(Row(prompt, output, where))
    except csv.Error as exc:
        raise DatasetError(f"{label}: line {reader.line_num}: malformed CSV: {exc}") from None
    return out


# --------------------------------------------------------------------------------------------- ShareGPT


def _parse_sharegpt(text: str, label: str, prompt_field: str, output_field: str | None) -> ParsedRows:
    # ShareGPT dumps are one JSON array; some re-exports are JSONL with one conversation per line
    entries: list[tuple[str, Any]]
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{label}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        entries = [(f"entry {i}", value) for i, value in enumerate(data)]
    else:
        entries = [(f"line {n}", value) for n, value in _json_lines(text, label)]

    # the conversation list is called "conversations" in ShareGPT; promptField may name another
    # key (e.g. "messages") for look-alike datasets
    key = "conversations" if prompt_field == "prompt" else prompt_field
    out = ParsedRows()
    for where, entry in entries:
        if not isinstance(entry, dict):
            raise DatasetError(f"{label}: {where}: expected a JSON object, got {json_type_name(entry)}")
        turns = entry.get(key)
        if turns is None:
            names = [str(k) for k in entry]
            raise DatasetError(
                f"{label}: {where}: no {key!r} list; the entry has fields: {_field_list(names)}"
                f"{_suggest(key, names)}"
            )
        if not isinstance(turns, list):
            raise DatasetError(
                f"{label}: {where}: {key!r} must be a list of turns, got {json_type_name(turns)}"
            )
        row = _conversation(turns, label, where)
        if isinstance(row, str):
            out.skipped[row] += 1
            continue
        prompt, reply_words = row
        output = _output_of(entry, output_field, label, where)
        out.rows.append(Row(prompt, output if output is not None else reply_words, where))
    return out


def _conversation(turns: list[Any], label: str, where: str) -> tuple[str, int | None] | str:
    """(first human turn, word count of the assistant reply after it), or a reason to skip."""
    parsed: list[tuple[str, str]] = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise DatasetError(f"{label}: {where}: turn {i} must be an object, got {json_type_name(turn)}")
        role = turn.get("from", turn.get("role"))
        value = turn.get("value", turn.get("content"))
        if not isinstance(role, str) or not isinstance(value, str):
            raise DatasetError(
                f"{label}: {where}: turn {i} needs string 'from' and 'value' (or 'role' and 'content')"
            )
        parsed.append((role.lower(), value))
    first = next((i for i, (role, _) in enumerate(parsed) if role in HUMAN_ROLES), None)
    if first is None:
        return "no human turn"
    prompt = parsed[first][1]
    if not prompt.strip():
        return "empty human turn"
    reply = next((value for role, value in parsed[first + 1 :] if role in ASSISTANT_ROLES), None)
    reply_words = count_words(reply) if reply is not None else 0
    return prompt, (reply_words or None)


# --------------------------------------------------------------------------------------------- fields


def _prompt_of(row: dict[str, Any], name: str, label: str, where: str) -> str:
    if name not in row:
        names = [str(k) for k in row]
        raise DatasetError(
            f"{label}: {where}: no prompt field {name!r}; the row has fields: {_field_list(names)}"
            f"{_suggest(name, names)}",
            hint="set 'promptField' in the dataset spec to the field that holds the prompt",
        )
    value = row[name]
    if not isinstance(value, str):
        raise DatasetError(
            f"{label}: {where}: prompt field {name!r} is {json_type_name(value)}, not a string"
        )
    if not value.strip():
        raise DatasetError(f"{label}: {where}: prompt field {name!r} is empty")
    return value


def _output_of(row: dict[str, Any], name: str | None, label: str, where: str) -> int | None:
    """The row's max output tokens, or None when the row gives none (missing, null or empty)."""
    if name is None:
        return None
    value = row.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())
        except ValueError:
            number = None
    if number is None or number < 1:
        raise DatasetError(
            f"{label}: {where}: output field {name!r} must be a whole number of tokens >= 1, "
            f"got {_shown(value)}"
        )
    return number
