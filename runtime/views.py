"""Layout ops that cost nothing: reshape of contiguous data, transpose, broadcast_to and slice
become new strides over the same buffer; constants become read-only globals (a scalar splat is
one element with all strides 0). Slice bounds on symbolic axes become run-time checks."""
from __future__ import annotations

from graphc.ir.core import Value
from graphc.ir.ops import registry
from graphc.ir.types import Dim, DimLike, dim_add, dim_mul
from graphc.runtime.plantypes import (
    Buffer,
    Check,
    Plan,
    View,
    broadcast_view,
    contiguous,
    is_contiguous,
)


def const_view(plan: Plan, v: Value) -> View:
    value = v.attrs["value"]
    n = len(value) if isinstance(value, tuple) else 1
    plan.buffers.append(Buffer("const", v.dtype, n, 0, v))
    b = len(plan.buffers) - 1
    if isinstance(value, tuple):
        return contiguous(b, v.dtype, v.shape)
    return View(b, v.dtype, v.shape, (0,) * len(v.shape))


def is_view_op(plan: Plan, v: Value) -> bool:
    if not registry.has(v.op, registry.VIEW):
        return False
    src = plan.operands[id(v.inputs[0])]
    return v.op != "reshape" or (isinstance(src, View) and is_contiguous(src))


def view_of(plan: Plan, v: Value) -> View:
    src = plan.operands[id(v.inputs[0])]
    assert isinstance(src, View)
    if v.op == "reshape":
        return contiguous(src.buf, src.dtype, v.shape, src.offset)
    if v.op == "transpose":
        perm = v.attrs["perm"]
        return View(src.buf, src.dtype, v.shape, tuple(src.strides[p] for p in perm),
                    src.offset)
    if v.op == "broadcast_to":
        return broadcast_view(src, v.shape)
    return slice_view(plan, v, src)


def slice_view(plan: Plan, v: Value, src: View) -> View:
    start, stop, step = v.attrs["start"], v.attrs["stop"], v.attrs["step"]
    offset = src.offset
    strides = []
    for a, b, s, d, st in zip(start, stop, step, src.shape, src.strides):
        if any(isinstance(x, Dim) for x in (a, b, d)):
            plan.checks.append(Check(v, a, 0, b))
            plan.checks.append(Check(v, b, a, d))
        offset = dim_add(offset, dim_mul(a, st))
        strides.append(dim_mul(st, s))
    return View(src.buf, src.dtype, v.shape, tuple(strides), offset)


def nonneg_checks(plan: Plan, v: Value, dims: tuple[DimLike, ...]) -> None:
    """Symbolic pad widths must not be negative at run time."""
    for d in dims:
        if isinstance(d, Dim):
            plan.checks.append(Check(v, d, 0, None))

