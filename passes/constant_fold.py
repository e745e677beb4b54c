"""Evaluate ops whose inputs are all constants with the ops' NumPy references; splats stay splats.
Keeps: types, locs; results over 1024 elements and ops without a reference stay unfolded.

A splat (one value over a shape, possibly symbolic) through an elementwise op or a reshape,
transpose, broadcast or slice is a splat again, so it folds whatever the shape. Anything else
folds only when every shape is static, the result has at most ``MAX_ELEMENTS`` elements and no
input has more than ``MAX_INPUT_ELEMENTS`` (so huge constants are never materialised).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from graphc.ir.core import Func, Value, const
from graphc.ir.interp import eval_value
from graphc.ir.ops import registry
from graphc.ir.types import Dim, TensorType
from graphc.passes.rewrite import NoOptions, PassContext, has_grad, rewrite

MAX_ELEMENTS = 1024
MAX_INPUT_ELEMENTS = 1 << 16
NEVER = ("arg", "const", "grad")


def run(func: Func, ctx: PassContext | None = None, options: NoOptions | None = None) -> Func:
    return func if has_grad(func) else rewrite(func, fold, ctx and ctx.counter)


def fold(v: Value) -> Value:
    opdef = registry.lookup(v.op)
    if v.op in NEVER or opdef is None or opdef.ref is None:
        return v
    if not all(i.op == "const" for i in v.inputs):
        return v
    if v.inputs and all(is_splat(i) for i in v.inputs):
        if registry.has(v.op, registry.VIEW):
            return const(v.inputs[0].attrs["value"], v.dtype, v.shape)
        if opdef.kind == registry.ELEMENTWISE:
            return splat_elementwise(v)
    if not fits(v, MAX_ELEMENTS) or not all(fits(i, MAX_INPUT_ELEMENTS) for i in v.inputs):
        return v
    try:
        out = eval_value(v, [eval_value(i, [], {}) for i in v.inputs], {})
    except (ArithmeticError, IndexError, ValueError):
        return v        # fails at run time too, where the runtime reports it properly
    return array_const(out, v)


def splat_elementwise(v: Value) -> Value:
    """Evaluate an elementwise op once, on scalars, and splat the result over ``v``'s shape."""
    scalars = tuple(const(i.attrs["value"], i.dtype) for i in v.inputs)
    probe = Value(v.op, scalars, TensorType(v.dtype, ()), v.attrs)
    out = eval_value(probe, [eval_value(s, [], {}) for s in scalars], {})
    return const(out.item(), v.dtype, v.shape)


def array_const(out: np.ndarray, like: Value) -> Value:
    """A splat if every element has the same bits (so -0.0 and 0.0 differ), else a flat tuple."""
    flat = np.ascontiguousarray(out).reshape(-1)
    if flat.size == 0:
        return const(0, like.dtype, like.shape)
    rows = flat.view(np.uint8).reshape(flat.size, -1)
    if (rows == rows[0]).all():
        return const(flat[0].item(), like.dtype, like.shape)
    return const(tuple(flat.tolist()), like.dtype, like.shape)


def is_splat(v: Value) -> bool:
    return v.op == "const" and not isinstance(v.attrs["value"], tuple)


def fits(v: Value, cap: int) -> bool:
    """Static shape and attributes, and at most ``cap`` elements."""
    size = v.type.size
    return isinstance(size, int) and size <= cap and not any(has_dim(a) for _, a in v.attrs.items)


def has_dim(a: Any) -> bool:
    if isinstance(a, Dim):
        return True
    return isinstance(a, tuple) and any(has_dim(x) for x in a)
