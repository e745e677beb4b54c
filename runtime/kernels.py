"""The body of each step's kernel, by op kind: elementwise maps, reductions over any axes
(register accumulators for trailing reduced axes, in-memory ones otherwise so the inner loop
stays unit-stride), matmul, and the layout ops that must write data (pad, concat, take,
scatter_add), plus dim and one_hot; the matmul (runtime/matmul_kernels.py) and the window
kernels of convolutions (runtime/window_kernels.py) have modules of their own."""
from __future__ import annotations

from typing import Sequence

import llvmlite.ir as ll

from graphc.ir.ops import registry
from graphc.ir.ops.rules import reduce_identity
from graphc.ir.types import DimLike, DType, dim_add, dim_mul, dim_prod
from graphc.runtime import random_kernels, window_kernels
from graphc.runtime.emit import I64, reg_type
from graphc.runtime.kernel import (
    Kernel,
    combine,
    emit_map,
    shape_of,
)
from graphc.runtime.plan import (
    ERR_INDEX,
    Operand,
    Step,
    View,
    broadcast_view,
    contiguous,
)


def _fill(k: Kernel, out: View, value: ll.Value) -> None:
    with k.em.loop(k.dim(dim_prod(out.shape)), "fill") as i:
        k.store_at(value, out.buf, i, out.dtype)


def _keep_shape(v: Step) -> tuple[DimLike, ...]:
    x = v.value.inputs[0]
    axes = v.value.attrs["axis"]
    return tuple(1 if i in axes else d for i, d in enumerate(x.shape))


def emit_reduce(k: Kernel, s: Step, how: str, identity: float) -> None:
    """Loop over the input in its own order; the output (seen with the reduced axes at stride 0)
    accumulates, in a register over the trailing run of reduced axes."""
    x = s.args[0]
    xshape = s.value.inputs[0].shape
    axes = s.value.attrs["axis"]
    start = k.em.const(reduce_identity(identity, s.value.dtype), reg_type(s.value.dtype))
    _fill(k, s.out, start)
    out = broadcast_view(contiguous(s.out.buf, s.out.dtype, _keep_shape(s)), xshape)
    out = View(out.buf, out.dtype, xshape, tuple(0 if i in axes else st
                                                 for i, st in enumerate(out.strides)))
    r = len(xshape)
    split = r
    while split > 0 and (split - 1) in axes:
        split -= 1
    em = k.em
    # an empty input leaves the identity: the outer loop alone may be huge ([2**60, 3, 0])
    with k.unless_empty(xshape), em.loop_nest([k.dim(d) for d in xshape[:split]], "r") as outer:
        acc_slot = em.alloca_entry(reg_type(s.value.dtype), "acc")
        pad = [ll.Constant(I64, 0)] * (r - split)
        k.b.store(k.load(out, list(outer) + pad), acc_slot)
        with em.loop_nest([k.dim(d) for d in xshape[split:]], "q") as inner:
            v = k.load(x, list(outer) + list(inner))
            k.b.store(combine(k, how, k.b.load(acc_slot, typ=v.type), v), acc_slot)
        k.store(k.b.load(acc_slot, typ=start.type), out, list(outer) + pad)


def emit_argreduce(k: Kernel, s: Step, how: str) -> None:
    """First index of the extreme over the reduced axes (row-major); the first NaN wins."""
    x = s.args[0]
    xshape = s.value.inputs[0].shape
    axes = s.value.attrs["axis"]
    kept = [i for i in range(len(xshape)) if i not in axes]
    em, b = k.em, k.b
    dt = s.value.inputs[0].dtype
    out = contiguous(s.out.buf, s.out.dtype, tuple(xshape[i] for i in kept))
    with em.loop_nest([k.dim(xshape[i]) for i in kept], "a") as oi:
        best = em.alloca_entry(reg_type(dt), "best")
        where = em.alloca_entry(I64, "where")
        count = em.alloca_entry(I64, "count")
        ident = registry.get(s.value.op).identity
        b.store(em.const(reduce_identity(ident, dt), reg_type(dt)), best)
        b.store(ll.Constant(I64, 0), where)
        b.store(ll.Constant(I64, 0), count)
        with em.loop_nest([k.dim(xshape[i]) for i in axes], "b") as ri:
            full: list[ll.Value] = [ll.Constant(I64, 0)] * len(xshape)
            for i, v in zip(kept, oi):
                full[i] = v
            for i, v in zip(axes, ri):
                full[i] = v
            v = k.load(x, full)
            cur = b.load(best, typ=v.type)
            better = em.gt(v, cur) if how == "argmax" else em.lt(v, cur)
            better = em.or_(better, em.and_(em.isnan(v), em.not_(em.isnan(cur))))
            n = b.load(count, typ=I64)
            b.store(em.select(better, v, cur), best)
            b.store(em.select(better, n, b.load(where, typ=I64)), where)
            b.store(b.add(n, ll.Constant(I64, 1)), count)
        k.store(b.load(where, typ=I64), out, oi)


def emit_pad(k: Kernel, s: Step) -> None:
    x = s.args[0]
    lo, interior = s.value.attrs["lo"], s.value.attrs["interior"]
    _fill(k, s.out, k.em.const(0, reg_type(s.out.dtype)))
    strides = tuple(dim_mul(st, dim_add(i, 1)) for st, i in zip(s.out.strides, interior))
    offset: DimLike = 0
    for a, st in zip(lo, s.out.strides):
        offset = dim_add(offset, dim_mul(a, st))
    dst = View(s.out.buf, s.out.dtype, shape_of(x), strides, offset)
    emit_map(k, dst, x)


def emit_concat(k: Kernel, s: Step) -> None:
    axis = s.value.attrs["axis"]
    offset: DimLike = 0
    for x in s.args:
        shape = shape_of(x)
        dst = View(s.out.buf, s.out.dtype, shape, s.out.strides,
                   dim_mul(offset, s.out.strides[axis]))
        emit_map(k, dst, _aligned(x, shape))
        offset = dim_add(offset, shape[axis])


def _aligned(x: Operand, shape: Sequence[DimLike]) -> Operand:
    return broadcast_view(x, tuple(shape)) if isinstance(x, View) else x


def _gather_loop(k: Kernel, s: Step, x: View, idx: View, axis: int, body) -> ll.Value:
    """Loop over x.shape[:axis] + idx.shape + x.shape[axis+1:], calling body(out_idx, src_idx)
    with NumPy's indexing (one wrap of negative indices). Returns the kernel's error code: a bad
    index is ERR_INDEX, described as (its value, its position in ``idx``, the axis size)."""
    em, b = k.em, k.b
    bad = em.alloca_entry(ll.IntType(1), "badidx")
    b.store(ll.Constant(ll.IntType(1), 0), bad)
    n = k.dim(x.shape[axis])
    # the indices are checked in a loop of their own, so that a bad one is found even when
    # nothing is gathered (another axis of x is 0), as the interpreter finds it
    with em.loop_nest([k.dim(d) for d in idx.shape], "gc") as at:
        raw, _, oob = _wrap(k, idx, at, n)
        k.flag(bad, oob, raw, k.flat(idx.shape, at), n)
    ir_ = len(idx.shape)
    shape = x.shape[:axis] + idx.shape + x.shape[axis + 1:]
    with em.loop_nest([k.dim(d) for d in shape], "g") as oi:
        _, i, oob = _wrap(k, idx, oi[axis:axis + ir_], n)
        src = list(oi[:axis]) + [b.select(oob, ll.Constant(I64, 0), i)] + list(oi[axis + ir_:])
        body(oi, src)
    return b.select(b.load(bad, typ=ll.IntType(1)),
                    ll.Constant(ll.IntType(32), (ERR_INDEX << 24) | s.index),
                    ll.Constant(ll.IntType(32), 0))


def _wrap(k: Kernel, idx: View, at: Sequence[ll.Value], n: ll.Value
          ) -> tuple[ll.Value, ll.Value, ll.Value]:
    """(the index at ``at`` as i64, it wrapped once if negative, whether that is outside [0, n))."""
    b, zero = k.b, ll.Constant(I64, 0)
    raw = k.em.cast(k.load(idx, at), DType.i64)
    i = b.select(b.icmp_signed("<", raw, zero), b.add(raw, n), raw)
    return raw, i, b.or_(b.icmp_signed("<", i, zero), b.icmp_signed(">=", i, n))


def emit_take(k: Kernel, s: Step) -> None:
    x, idx = s.args
    axis = s.value.attrs["axis"]
    k.code = _gather_loop(k, s, x, idx, axis,
                          lambda oi, src: k.store(k.load(x, src), s.out, oi))


def emit_scatter_add(k: Kernel, s: Step) -> None:
    x, idx, upd = s.args
    axis = s.value.attrs["axis"]
    emit_map(k, s.out, _aligned(x, s.out.shape))

    def body(oi: list, dst: list) -> None:
        cur = k.load(s.out, dst)
        k.store(k.em.add(cur, k.load(upd, oi)), s.out, dst)
    k.code = _gather_loop(k, s, x, idx, axis, body)


def emit_dim(k: Kernel, s: Step) -> None:
    v = k.dim(s.value.attrs["value"])
    k.store_at(k.em.cast(v, s.value.dtype), s.out.buf, ll.Constant(I64, 0), s.out.dtype)


def emit_one_hot(k: Kernel, s: Step) -> None:
    labels = s.args[0]
    em = k.em
    with em.loop_nest([k.dim(d) for d in s.out.shape], "h") as oi:
        lab = em.cast(k.load(labels, oi[:-1]), DType.i64)
        k.store(em.cast(em.eq(lab, oi[-1]), s.out.dtype), s.out, oi)
    if s.value.attrs["strict"]:
        # a label loop of its own, so that a bad label is found even when depth is 0
        bad = em.alloca_entry(ll.IntType(1), "badlabel")
        k.b.store(ll.Constant(ll.IntType(1), 0), bad)
        depth = k.dim(s.out.shape[-1])
        with em.loop_nest([k.dim(d) for d in s.out.shape[:-1]], "hc") as li:
            lab = em.cast(k.load(labels, li), DType.i64)
            oob = k.b.or_(k.b.icmp_signed("<", lab, ll.Constant(I64, 0)),
                          k.b.icmp_signed(">=", lab, depth))
            # described as (the label, its position in labels, depth)
            k.flag(bad, oob, lab, k.flat(s.out.shape[:-1], li), depth)
        k.code = k.b.select(k.b.load(bad, typ=ll.IntType(1)),
                            ll.Constant(ll.IntType(32), (ERR_INDEX << 24) | s.index),
                            ll.Constant(ll.IntType(32), 0))


EMITTERS = {"pad": emit_pad, "concat": emit_concat, "take": emit_take,
            "scatter_add": emit_scatter_add, "dim": emit_dim, "one_hot": emit_one_hot,
            "random_uniform": random_kernels.emit_random,
            "random_normal": random_kernels.emit_random, "flip": random_kernels.emit_flip,
            "im2col": window_kernels.emit_im2col, "col2im": window_kernels.emit_col2im,
            "window_max": window_kernels.emit_window_max,
            "window_max_grad": window_kernels.emit_window_max_grad}
