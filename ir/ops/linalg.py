"""``matmul`` with NumPy's rules: a 1-D operand gains (and then loses) a unit axis, and batch
axes broadcast with the static-1 rule."""
from __future__ import annotations

import numpy as np

from graphc.ir.core import Value, make
from graphc.ir.ops.registry import MATMUL, defop
from graphc.ir.ops.rules import NUMERIC, broadcast_shapes, fail, require, sample
from graphc.ir.types import TensorType, dim_prod, dim_str


def _matmul_type(a: TensorType, b: TensorType) -> TensorType:
    dt = require("matmul", NUMERIC, a, b, sep=" @ ")
    if a.rank == 0 or b.rank == 0:
        raise fail("matmul", (a, b), "operands must have rank >= 1", " @ ")
    k_a = a.shape[-1]
    k_b = b.shape[-2] if b.rank > 1 else b.shape[0]
    if k_a != k_b:
        raise fail("matmul", (a, b), f"inner dims {dim_str(k_a)} and {dim_str(k_b)} differ",
                   " @ ")
    batch = broadcast_shapes("matmul", a.with_shape(a.shape[:-2]), b.with_shape(b.shape[:-2]))
    rows = a.shape[-2:-1]
    cols = b.shape[-1:] if b.rank > 1 else ()
    return TensorType(dt, batch + rows + cols)


def swap_last(x: Value) -> Value:
    perm = tuple(range(x.type.rank - 2)) + (x.type.rank - 1, x.type.rank - 2)
    return make("transpose", x, perm=perm)


def _as_matrix(x: Value, axis: int) -> Value:
    """A 1-D operand as NumPy's matmul treats it: a row (axis 0) or a column (axis 1)."""
    if x.type.rank > 1:
        return x
    return make("reshape", x, shape=(1,) + x.shape if axis == 0 else x.shape + (1,))


def _drop_axis(x: Value, axis: int) -> Value:
    return make("reshape", x, shape=x.shape[:axis] + x.shape[axis + 1:])


def _matmul_vjp(g: Value, out: Value, a: Value, b: Value) -> list[Value]:
    a2, b2 = _as_matrix(a, 0), _as_matrix(b, 1)
    g2 = g
    if a2 is not a or b2 is not b:
        g2 = make("reshape", g, shape=_matmul_type(a2.type, b2.type).shape)
    ga = make("matmul", g2, swap_last(b2))          # batch axes: summed back by autodiff
    if b2.type.rank == 2 and a2.type.rank > 2:
        # a batch against one matrix (a sequence through a dense layer, im2col convolution):
        # one [K, rows] @ [rows, N] product, not a batched one summed afterwards
        rows = dim_prod(a2.shape[:-1])
        gb = make("matmul", swap_last(make("reshape", a2, shape=(rows, a2.shape[-1]))),
                  make("reshape", g2, shape=(rows, g2.shape[-1])))
    else:
        gb = make("matmul", swap_last(a2), g2)
    if a2 is not a:
        ga = _drop_axis(ga, ga.type.rank - 2)
    if b2 is not b:
        gb = _drop_axis(gb, gb.type.rank - 1)
    return [ga, gb]


defop("matmul", MATMUL, ("x", "y"), infer=_matmul_type, ref=np.matmul, vjp=_matmul_vjp,
      domain=((-2.0, 2.0), (-2.0, 2.0)),
      samples=(sample("f32[N,4]", "f32[4,3]"), sample("f64[4]", "f64[4,N]"),
               sample("f32[N,4]", "f32[4]"), sample("f64[N]", "f64[N]"),
               sample("f32[2,N,4]", "f32[4,3]"), sample("f32[N,4]", "f32[2,4,3]"),
               sample("f64[2,1,3,N]", "f64[5,N,2]", sizes=(0, 2)),
               sample("f32[3]", "f32[2,3,4]"), sample("f32[2,N,3]", "f32[3]"),
               sample("i32[N,3]", "i32[3,2]"), sample("f32[N,0]", "f32[0,2]")))
