"""Drop every value no result needs, and the concat pieces and padding that a slice never reads.
Keeps: types, locs, the signature (unused params stay).

A ``Func`` holds exactly the values reachable from its results, so gradients nobody asked for,
and forward values only they needed, vanish as soon as nothing refers to them (and after
simplify, what its folds cut off). This pass rebuilds the function from its results and removes
the references that read no element: ``slice(concat(a, b))`` that lies inside ``a`` reads only
``a``, and ``slice(pad(x))`` that takes back exactly ``x`` is ``x``.
"""
from __future__ import annotations

from graphc.ir.core import Func, Value, make
from graphc.ir.types import DimLike
from graphc.passes.rewrite import NoOptions, PassContext, has_grad, rewrite


def run(func: Func, ctx: PassContext | None = None, options: NoOptions | None = None) -> Func:
    return func if has_grad(func) else rewrite(func, drop_unread, ctx and ctx.counter)


def drop_unread(v: Value) -> Value:
    if v.op == "slice" and v.inputs[0].op == "concat":
        return slice_of_concat(v) or v
    if v.op == "slice" and v.inputs[0].op == "pad":
        return slice_of_pad(v) or v
    return v


def known_le(a: DimLike, b: DimLike) -> bool:
    """a <= b for every binding of the symbolic dims (decided only when b - a is a number)."""
    d = b - a
    return isinstance(d, int) and d >= 0


def slice_of_concat(v: Value) -> Value | None:
    """A slice along the concat axis inside one piece -> the same slice of that piece."""
    cat = v.inputs[0]
    axis = cat.attrs["axis"]
    start, stop = v.attrs["start"], v.attrs["stop"]
    offset: DimLike = 0
    for piece in cat.inputs:
        end = offset + piece.shape[axis]
        if known_le(offset, start[axis]) and known_le(stop[axis], end):
            return make("slice", piece,
                        start=tuple(a - offset if i == axis else a for i, a in enumerate(start)),
                        stop=tuple(b - offset if i == axis else b for i, b in enumerate(stop)),
                        step=v.attrs["step"])
        offset = end
    return None


def slice_of_pad(v: Value) -> Value | None:
    """slice(pad(x, lo, hi, interior), start=lo, step=interior+1) of x's shape -> x."""
    pad = v.inputs[0]
    x = pad.inputs[0]
    lo, interior = pad.attrs["lo"], pad.attrs["interior"]
    start, step = v.attrs["start"], v.attrs["step"]
    exact = all(a - b == 0 for a, b in zip(start, lo)) and all(
        s - i == 1 for s, i in zip(step, interior))
    return x if exact and x.type == v.type else None
