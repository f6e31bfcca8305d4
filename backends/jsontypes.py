"""How a JSON value's type is named in error messages ("got an array"), shared by the readers
of other people's files (datasets, other tools' benchmark results)."""

from __future__ import annotations

from typing import Any


def json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
