"""Search-space constraints such as ``max-num-batched-tokens >= max-num-seqs``.

Parameter names contain dashes, which Python would read as minus, so known names are first
replaced by placeholders (longest first), then the expression is parsed with :mod:`ast` and only a
small whitelist of node types is accepted: comparisons, ``and``/``or``/``not``, arithmetic, names
and literals. Nothing is ever passed to ``eval``.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from specs.errors import ConstraintError
from specs.suggest import did_you_mean

_BIN: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_CMP: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_STRING = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\d+(?:\.\d*)?(?:[eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:[-.][A-Za-z0-9_]+)*")
_KEYWORDS = ("and", "or", "not", "True", "False")


@dataclass(frozen=True)
class Constraint:
    text: str
    tree: ast.Expression
    names: dict[str, str]  # placeholder -> parameter name

    def evaluate(self, values: Mapping[str, Any]) -> bool:
        """True when the configuration satisfies the constraint. A name missing from ``values``
        (a flag left at the engine default) makes the constraint not apply."""
        try:
            return bool(_eval(self.tree.body, {p: values[n] for p, n in self.names.items() if n in values}))
        except _Missing:
            return True
        except (ZeroDivisionError, TypeError):
            return False


class _Missing(Exception):
    pass


def parse_constraint(text: str, known: Iterable[str]) -> Constraint:
    if not isinstance(text, str) or not text.strip():
        raise ConstraintError("empty constraint")
    if len(text) > 500:
        raise ConstraintError("constraint longer than 500 characters")
    names = sorted(set(known), key=len, reverse=True)
    placeholders: dict[str, str] = {}
    by_name = {n: f"__p{i}" for i, n in enumerate(names)}
    rewritten = _rewrite(text, names, by_name, placeholders)
    try:
        tree = ast.parse(rewritten, mode="eval")
    except SyntaxError:
        raise ConstraintError(
            f"cannot parse {text!r}: use comparisons like 'a >= b', 'a * b <= 8192'"
        ) from None
    for node in ast.walk(tree):
        if not isinstance(
            node,
            ast.Expression
            | ast.Compare
            | ast.BoolOp
            | ast.BinOp
            | ast.UnaryOp
            | ast.Name
            | ast.Constant
            | ast.Load
            | ast.And
            | ast.Or
            | ast.Not
            | ast.USub
            | ast.UAdd
            | ast.cmpop
            | ast.operator,
        ):
            raise ConstraintError(f"{text!r}: only comparisons, arithmetic, and/or/not are allowed")
        if isinstance(node, ast.operator) and type(node) not in _BIN:
            raise ConstraintError(f"{text!r}: operator not allowed")
        if isinstance(node, ast.Constant) and not isinstance(node.value, int | float | str | bool):
            raise ConstraintError(f"{text!r}: only numbers, strings and booleans are allowed")
    if not isinstance(tree.body, ast.Compare | ast.BoolOp) and not (
        isinstance(tree.body, ast.UnaryOp) and isinstance(tree.body.op, ast.Not)
    ):
        raise ConstraintError(f"{text!r} is not a condition: compare something, e.g. 'a >= b'")
    return Constraint(text=text, tree=tree, names=placeholders)


def _rewrite(text: str, names: list[str], by_name: dict[str, str], used: dict[str, str]) -> str:
    """Replace known names (longest first, so ``max-num-seqs`` wins over ``max``) by
    placeholders, leaving string literals and numbers alone."""
    out: list[str] = []
    i = 0
    while i < len(text):
        for pattern in (_STRING, _NUMBER):
            m = pattern.match(text, i)
            if m:
                out.append(m.group(0))
                i = m.end()
                break
        else:
            if text[i].isalpha() or text[i] == "_":
                name = next(
                    (n for n in names if text.startswith(n, i) and not _continues(text, i + len(n))), None
                )
                if name is not None:
                    used[by_name[name]] = name
                    out.append(by_name[name])
                    i += len(name)
                    continue
                m = _IDENT.match(text, i)
                assert m is not None
                word = m.group(0)
                plain = re.match(r"[A-Za-z_][A-Za-z0-9_]*", word)
                if plain and plain.group(0) in _KEYWORDS:
                    out.append(plain.group(0))
                    i += len(plain.group(0))
                    continue
                raise ConstraintError(f"unknown name {word!r} in {text!r}{did_you_mean(word, names)}")
            out.append(text[i])
            i += 1
    return "".join(out)


def _continues(text: str, end: int) -> bool:
    """True when a name match is only the start of a longer identifier."""
    return end < len(text) and (text[end].isalnum() or text[end] == "_")


def _eval(node: ast.AST, env: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in env:
            raise _Missing
        return env[node.id]
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, env)
        if isinstance(node.op, ast.Not):
            return not value
        return -value if isinstance(node.op, ast.USub) else +value
    if isinstance(node, ast.BinOp):
        return _BIN[type(node.op)](_eval(node.left, env), _eval(node.right, env))
    if isinstance(node, ast.BoolOp):
        results = (_eval(v, env) for v in node.values)
        return all(results) if isinstance(node.op, ast.And) else any(results)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _eval(comp, env)
            if not _CMP[type(op)](left, right):
                return False
            left = right
        return True
    raise ConstraintError("unsupported expression")
