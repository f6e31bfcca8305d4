"""A spec's problems located at its YAML lines: key paths, their lines, and pydantic's validation
errors turned into :class:`~specs.errors.SpecProblem` with messages for the spec's author.

Apart from the loader because it is a second concern: the loader reads YAML safely and keeps the
lines; this module walks the schema's types (models, unions, containers) to say, at any path,
which field names would have been valid.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ValidationError

from specs.errors import SpecProblem
from specs.model import TuningSpec
from specs.suggest import did_you_mean

#: a key path into a spec document: ``("spec", "search", "constraints", 0)``
Path_ = tuple[str | int, ...]


def line_of(lines: dict[Path_, int], path: Path_) -> int | None:
    """The line of ``path``, else of the nearest enclosing key that has one."""
    for n in range(len(path), -1, -1):
        if path[:n] in lines:
            return lines[path[:n]]
    return None


def dotted(path: Iterable[str | int]) -> str:
    """``("spec", "search", "constraints", 0)`` -> ``spec.search.constraints[0]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def kind_of(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _yaml_path(loc: tuple[str | int, ...], data: Any) -> Path_:
    """Keep the parts of a pydantic ``loc`` that are real keys of the data (drops union tags
    such as ``synthetic`` or ``function-after[...]``); the last part is kept either way."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            out.append(part)
            node = node[part]
        elif last and isinstance(part, str) and not part.startswith(("function-", "union[", "[key]")):
            out.append(part)
    return tuple(out)


def _models_in(tp: Any) -> list[type[BaseModel]]:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(tp)[0])
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return [m for a in typing.get_args(tp) for m in _models_in(a)]
    return []


def _containers_in(tp: Any) -> list[Any]:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _containers_in(typing.get_args(tp)[0])
    if origin in (dict, list):
        return [tp]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return [c for a in typing.get_args(tp) for c in _containers_in(a)]
    return []


def _field_names(loc: tuple[str | int, ...]) -> list[str]:
    """Field names (aliases) valid at the mapping that ``loc`` points into."""
    current: list[Any] = [TuningSpec]
    for part in loc:
        nxt: list[Any] = []
        for tp in current:
            for model in _models_in(tp):
                for name, info in model.model_fields.items():
                    if part in (info.alias, name):
                        nxt.append(info.annotation)
                kind = model.model_fields.get("kind")
                if kind is not None and part in typing.get_args(kind.annotation):
                    nxt.append(model)
            for cont in _containers_in(tp):
                args = typing.get_args(cont)
                if typing.get_origin(cont) is dict and isinstance(part, str):
                    nxt.append(args[1])
                elif typing.get_origin(cont) is list and isinstance(part, int):
                    nxt.append(args[0])
        current = nxt or current
    names: list[str] = []
    for tp in current:
        for model in _models_in(tp):
            names += [info.alias or name for name, info in model.model_fields.items()]
    return names


def validation_problems(
    exc: ValidationError, data: Any, lines: dict[Path_, int], file: str
) -> list[SpecProblem]:
    """pydantic's errors as located problems, reworded for a spec's author (an unknown field
    gets a "did you mean" among the fields valid *there*)."""
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = _yaml_path(loc, data)
        kind = err["type"]
        msg = err["msg"]
        given = err.get("input")
        if kind == "extra_forbidden":
            key = str(loc[-1])
            msg = f"unknown field {key!r}{did_you_mean(key, _field_names(loc[:-1]))}"
        elif kind == "missing":
            msg = f"missing required field {str(loc[-1])!r}"
        elif kind in ("value_error", "assertion_error"):
            msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        elif kind == "literal_error" and isinstance(given, str):
            expected = err.get("ctx", {}).get("expected", "")
            options = [o.strip(" '") for o in expected.replace(" or ", ",").split(",") if o.strip(" '")]
            msg = f"{given!r} is not one of {expected}{did_you_mean(given, options)}"
        elif kind == "union_tag_invalid":
            ctx = err.get("ctx", {})
            tag = str(ctx.get("tag", ""))
            expected = str(ctx.get("expected_tags", ""))
            options = [o.strip(" '") for o in expected.split(",")]
            field = ctx.get("discriminator", "kind")
            msg = f"unknown {field} {tag!r}: expected one of {expected}{did_you_mean(tag, options)}"
        elif kind == "union_tag_not_found":
            msg = f"missing 'kind': one of {err.get('ctx', {}).get('discriminator', '')}"
        elif given is not None and not isinstance(given, dict | list):
            shown = repr(given)
            msg = f"{msg} (got {shown[:60]}{'...' if len(shown) > 60 else ''})"
        problems.append(SpecProblem(file, line_of(lines, path), dotted(path), msg))
    return problems
