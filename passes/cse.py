"""Merge values with the same op, inputs, attrs and type, across forward and backward alike.
Keeps: types, the loc of the first; commutative ops match with their operands swapped.

Attributes compare by their exact text (so the constants 0.0 and -0.0 stay apart, and a NaN
constant matches another NaN constant).
"""
from __future__ import annotations

from typing import Any

from graphc.ir.core import Func, Value
from graphc.ir.ops import registry
from graphc.passes.rewrite import NoOptions, PassContext, has_grad, rewrite


def run(func: Func, ctx: PassContext | None = None, options: NoOptions | None = None) -> Func:
    if has_grad(func):
        return func
    seen: dict[tuple[Any, ...], Value] = {}

    def merge(v: Value) -> Value:
        return seen.setdefault(key(v), v)
    return rewrite(func, merge, ctx and ctx.counter)


def key(v: Value) -> tuple[Any, ...]:
    ids = tuple(id(i) for i in v.inputs)
    opdef = registry.lookup(v.op)
    if opdef is not None and registry.COMMUTATIVE in opdef.traits:
        ids = tuple(sorted(ids))
    return (v.op, ids, exact(v.attrs.items), v.type)


def exact(a: Any) -> Any:
    """A hashable key that tells apart what ``==`` conflates: 0.0 / -0.0, 1 / 1.0 / True."""
    if type(a) is tuple:            # most attrs: a tuple of (name, value) pairs, often empty
        return tuple([exact(x) for x in a]) if a else a
    if isinstance(a, float):
        return ("f", a.hex())
    if isinstance(a, tuple):
        return tuple(exact(x) for x in a)
    return (type(a).__name__, a)
