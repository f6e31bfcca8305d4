"""Load a spec from YAML with every error located as ``file:line: field.path: message``.

Why a custom loader: PyYAML's ``safe_load`` loses line numbers, silently keeps the last of two
duplicate keys, and will happily walk a "billion laughs" alias bomb once the result is traversed.
So the file is size-checked before it is read, decoded strictly, *composed* into a node graph
(which is linear even for alias bombs), and then converted to plain data by our own walk that
records each node's line, refuses duplicate keys, and stops after a fixed node budget and depth.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from specs.constraints import ConstraintError, parse_constraint
from specs.errors import SpecError, SpecProblem
from specs.model import PARALLEL_BOOL_FIELDS, PARALLEL_FIELDS, QUANT_FIELDS, TuningSpec
from specs.schema_problems import Path_, dotted, kind_of, line_of, validation_problems

MAX_BYTES = 1024 * 1024
MAX_NODES = 50_000
MAX_DEPTH = 64


@dataclass
class LoadedSpec:
    """A valid spec plus where each of its fields came from."""

    spec: TuningSpec
    file: str
    lines: dict[Path_, int] = field(default_factory=dict)
    sha256: str = ""

    @property
    def name(self) -> str:
        return self.spec.metadata.name

    def line_of(self, path: Iterable[str | int]) -> int | None:
        return line_of(self.lines, tuple(path))

    def problem(self, path: Iterable[str | int], message: str) -> SpecProblem:
        p = tuple(path)
        return SpecProblem(self.file, self.line_of(p), dotted(p), message)


class _Refused(Exception):
    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


class _Converter:
    """Node graph → plain data, recording lines, with a node budget and a depth limit."""

    def __init__(self, loader: yaml.SafeLoader) -> None:
        self.loader = loader
        self.lines: dict[Path_, int] = {}
        self.budget = MAX_NODES

    def convert(self, node: yaml.Node, path: Path_, depth: int = 0) -> Any:
        self.budget -= 1
        line = node.start_mark.line + 1
        if self.budget < 0:
            raise _Refused(line, f"refused: more than {MAX_NODES} YAML nodes (an alias bomb?)")
        if depth > MAX_DEPTH:
            raise _Refused(line, f"refused: nesting deeper than {MAX_DEPTH} levels (a recursive alias?)")
        self.lines.setdefault(path, line)
        if isinstance(node, yaml.MappingNode):
            # keys merged in with `<<: *anchor` may be overridden; keys written twice may not
            explicit = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
            self.loader.flatten_mapping(node)
            out: dict[str, Any] = {}
            written: set[str] = set()
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise _Refused(key_node.start_mark.line + 1, "mapping keys must be plain strings")
                key = self.loader.construct_object(key_node)
                if not isinstance(key, str):
                    key = str(key).lower() if isinstance(key, bool) else str(key)
                if key in written and id(key_node) in explicit:
                    raise _Refused(
                        key_node.start_mark.line + 1,
                        f"duplicate key {key!r} ({dotted(path) or 'top level'})",
                    )
                if id(key_node) in explicit:
                    written.add(key)
                self.lines[(*path, key)] = key_node.start_mark.line + 1
                out[key] = self.convert(value_node, (*path, key), depth + 1)
                # a value on its own line is reported at the value, a scalar at its key
                if isinstance(value_node, yaml.ScalarNode):
                    self.lines[(*path, key)] = key_node.start_mark.line + 1
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(child, (*path, i), depth + 1) for i, child in enumerate(node.value)]
        value = self.loader.construct_object(node)
        if isinstance(value, bytes):
            raise _Refused(line, "binary values are not allowed in a spec")
        return value


def parse_yaml(text: str, file: str) -> tuple[Any, dict[Path_, int]]:
    """Parse one YAML document into plain data and a path → line map; raise :class:`SpecError`."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        at = text[: exc.position].count("\n") + 1
        raise SpecError(
            [SpecProblem(file, at, "", f"invalid YAML: {exc.reason} (character {exc.character:#x})")]
        ) from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.composer.ComposerError as exc:
            if "expected a single document" in str(exc):
                second = exc.problem_mark.line + 1 if exc.problem_mark else None
                raise SpecError(
                    [SpecProblem(file, second, "", "one spec per file: found a second YAML document")]
                ) from None
            raise
        if node is None:
            raise SpecError([SpecProblem(file, None, "", "the file is empty: expected a TuningSpec")])
        conv = _Converter(loader)
        data = conv.convert(node, ())
        return data, conv.lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        what = exc.problem or exc.context or "invalid YAML"
        raise SpecError([SpecProblem(file, line, "", f"invalid YAML: {what}")]) from None
    except yaml.YAMLError as exc:
        raise SpecError([SpecProblem(file, None, "", f"invalid YAML: {exc}")]) from None
    except _Refused as exc:
        raise SpecError([SpecProblem(file, exc.line, "", exc.message)]) from None
    except RecursionError:
        raise SpecError([SpecProblem(file, None, "", "refused: nesting too deep")]) from None
    finally:
        loader.dispose()


def load_spec_text(text: str | bytes, file: str = "<string>") -> LoadedSpec:
    """Validate spec text; raise :class:`SpecError` listing every located problem."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if len(raw) > MAX_BYTES:
        raise SpecError(
            [SpecProblem(file, None, "", f"refused: file is larger than {MAX_BYTES // 1024} KiB")]
        )
    if b"\x00" in raw:
        raise SpecError([SpecProblem(file, None, "", "not a text file (it contains NUL bytes)")])
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError([SpecProblem(file, line, "", "not UTF-8 text")]) from None
    data, lines = parse_yaml(decoded, file)
    if not isinstance(data, dict):
        raise SpecError(
            [
                SpecProblem(
                    file,
                    1,
                    "",
                    f"expected a mapping with apiVersion, kind, metadata, spec; got {kind_of(data)}",
                )
            ]
        )
    try:
        spec = TuningSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(validation_problems(exc, data, lines, file)) from None
    loaded = LoadedSpec(spec=spec, file=file, lines=lines, sha256=hashlib.sha256(raw).hexdigest())
    problems = check_semantics(loaded)
    if problems:
        raise SpecError(problems)
    return loaded


def check_semantics(loaded: LoadedSpec) -> list[SpecProblem]:
    """Rules across fields, located at the exact field (a pydantic model validator could only
    point at the enclosing mapping)."""
    body = loaded.spec.spec
    search = body.search
    problems = []
    for name in sorted(set(search.parameters) & set(body.engine.args)):
        problems.append(
            loaded.problem(
                ("spec", "search", "parameters", name),
                f"{name!r} is both fixed in engine.args and searched in search.parameters: keep one",
            )
        )
    if search.strategy == "grid":
        for name, p in search.parameters.items():
            if p.grid() is None:
                problems.append(
                    loaded.problem(
                        ("spec", "search", "parameters", name),
                        f"strategy 'grid' needs a finite space, but {name!r} is a continuous range: "
                        "add 'step' or use 'values'",
                    )
                )
    names = set(search.parameters) | set(PARALLEL_FIELDS) | set(PARALLEL_BOOL_FIELDS) | set(QUANT_FIELDS)
    for i, expr in enumerate(search.constraints):
        try:
            parse_constraint(expr, names)
        except ConstraintError as exc:
            problems.append(loaded.problem(("spec", "search", "constraints", i), str(exc)))
    return problems


def load_spec(path: str | os.PathLike[str]) -> LoadedSpec:
    """Read and validate one spec file."""
    p = Path(path)
    file = str(path)
    try:
        with p.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_BYTES:
                raise SpecError(
                    [SpecProblem(file, None, "", f"refused: file is {size} bytes, the limit is {MAX_BYTES}")]
                )
            raw = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise SpecError([SpecProblem(file, None, "", "no such file")]) from None
    except IsADirectoryError:
        raise SpecError(
            [SpecProblem(file, None, "", "is a directory; pass a file, or a folder to validate")]
        ) from None
    except OSError as exc:
        raise SpecError([SpecProblem(file, None, "", f"cannot read: {exc.strerror}")]) from None
    return load_spec_text(raw, file)


def spec_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Files named directly, and ``*.yaml``/``*.yml`` inside folders (sorted, recursive)."""
    for path in paths:
        p = Path(path)
        if p.is_dir():
            yield from sorted(q for q in p.rglob("*") if q.suffix in (".yaml", ".yml") and q.is_file())
        else:
            yield p


def load_specs_from_paths(
    paths: Iterable[str | os.PathLike[str]],
) -> list[tuple[Path, LoadedSpec | SpecError]]:
    """Load every spec; one bad file never stops the others. Two files with the same
    ``metadata.name`` are both reported, since they would write the same results folder."""
    out: list[tuple[Path, LoadedSpec | SpecError]] = []
    for p in spec_files(paths):
        try:
            out.append((p, load_spec(p)))
        except SpecError as exc:
            out.append((p, exc))
    seen: dict[str, Path] = {}
    for i, (p, res) in enumerate(out):
        if isinstance(res, LoadedSpec):
            if res.name in seen:
                msg = f"name {res.name!r} is also used by {seen[res.name]}; names must be unique"
                out[i] = (p, SpecError([res.problem(("metadata", "name"), msg)]))
            else:
                seen[res.name] = p
    return out
