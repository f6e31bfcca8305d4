"""Checking a flag's value against the flag table, and writing it on the command line.

One place decides how a value looks on an engine's command line, so that the five engines cannot
drift apart: booleans follow the table's ``bool_style`` exactly (``--x``/``--no-x``, a bare flag,
or ``--x true``), numbers are written the way Python's ``argparse``/``click``/llama.cpp read them
back, and nothing is ever joined into a shell string.

The checks are strict on purpose: YAML turns ``on`` into ``True`` and ``1e3`` into a string, and
an engine that receives ``--max-num-seqs sixteen`` only fails minutes later, after the model has
loaded. A bad value is a located spec error instead.
"""

from __future__ import annotations

import math

from backends.engines.base import FlagInfo, FlagTable
from specs.model import Scalar
from specs.suggest import did_you_mean

_KIND = {
    "int": "a whole number (int)",
    "float": "a number (float)",
    "str": "a string",
    "path": "a path (string)",
    "json": "a JSON string",
    "bool": "true or false",
}


def describe(value: Scalar) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _in_choices(value: Scalar, choices: tuple[Scalar, ...]) -> bool:
    for choice in choices:
        if isinstance(choice, bool) or isinstance(value, bool):
            if choice is value:
                return True
        elif isinstance(choice, int):
            if isinstance(value, int) and value == choice:
                return True
        elif isinstance(choice, float):
            if isinstance(value, int | float) and value == choice:
                return True
        elif str(value) == choice:
            return True
    return False


def check_value(info: FlagInfo, value: Scalar, *, flag: str | None = None) -> str | None:
    """``None`` when the engine accepts ``value`` for this flag, else a message saying why not."""
    shown = flag or "--" + info.name
    kind = info.type
    if kind == "bool":
        if not isinstance(value, bool):
            return f"{shown} is a boolean flag: write true or false, not {describe(value)}"
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{shown} takes {_KIND['int']}, got {describe(value)}"
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{shown} takes {_KIND['float']}, got {describe(value)}"
        if not math.isfinite(value):
            return f"{shown} takes a finite number, got {describe(value)}"
    else:
        if isinstance(value, bool):
            return f"{shown} takes {_KIND[kind]}, not a boolean: quote it, '{str(value).lower()}'"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{shown} takes {_KIND[kind]}, got {describe(value)}"
        if isinstance(value, str) and ("\x00" in value or "\n" in value):
            return f"{shown} cannot take a value with a line break or NUL character"
    if info.choices is not None and not _in_choices(value, info.choices):
        options = ", ".join(str(c) for c in info.choices)
        hint = did_you_mean(str(value), [str(c) for c in info.choices]) if isinstance(value, str) else ""
        return f"{describe(value)} is not a choice of {shown}: one of {options}{hint}"
    return None


def format_scalar(value: Scalar) -> str:
    """A value as the engines parse it back: ``true``/``false``, ``8192``, ``0.9``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        # 2.0 stays "2.0" so a float flag never looks like an int to a strict parser
        return repr(value)
    return str(value)


def render_flag(table: FlagTable, info: FlagInfo, value: Scalar) -> list[str]:
    """The argument-list items for one flag (empty when a boolean's style means "leave it out")."""
    flag = "--" + info.name
    if info.type != "bool":
        return [flag, format_scalar(value)]
    on = bool(value)
    style = info.bool_style or "store_true"
    if style == "optional":
        return [flag] if on else ["--no" + table.separator + info.name]
    if style == "store_true":
        return [flag] if on else []
    if style == "store_false":
        return [] if on else [flag]
    return [flag, "true" if on else "false"]
