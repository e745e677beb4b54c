"""The body of each step's kernel, by op kind: elementwise maps, reductions over any axes
(register accumulators for trailing reduced axes, in-memory ones otherwise so the inner loop
stays unit-stride), matmul, and the layout ops that must write data (pad, concat, take,
scatter_add), plus dim and one_hot; the matmul (runtime/matmul_kernels.py) and the window
kernels of convolutions (runtime/window_kernels.py) have modules of their own."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import llvmlite.ir as ll

from graphc.ir.ops import registry
from graphc.ir.ops.rules import reduce_identity
from graphc.ir.types import DimLike, DType, dim_add, dim_mul, dim_prod
from graphc.runtime import pool, random_kernels, window_kernels
from graphc.runtime.emit import I64, mem_type, reg_type
from graphc.runtime.kernel import Kernel
from graphc.runtime.lowering import combine, emit_map, outlinable, shape_of
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


MAX_PARTS = 64      # parts of a reduction split along a reduced axis (partials on the stack)
MAX_KEPT = 16       # results of such a reduction at most (each part keeps one of each)


def emit_reduce(k: Kernel, s: Step, how: str, identity: float) -> None:
    """Loop over the input in its own order; the output (seen with the reduced axes at stride 0)
    accumulates, in a register over the trailing run of reduced axes.

    Threads: the work splits along the first kept axis (each part owns its results, so the
    numbers are those of one loop), or, when the results are few (at most MAX_KEPT, as in a
    full reduction) and the input big (pool.PARALLEL_WORK elements), along axis 0 in fixed
    parts whose partial results are combined in part order after. The parts depend on the
    shapes only and every build runs the same outlined code over them, so every thread count
    gives bitwise the same numbers."""
    x = s.args[0]
    xshape = s.value.inputs[0].shape
    axes = s.value.attrs["axis"]
    dt = s.value.dtype
    start = k.em.const(reduce_identity(identity, dt), reg_type(dt))
    dst = contiguous(s.out.buf, s.out.dtype, _keep_shape(s))
    if not outlinable(x):
        _accumulate(k, x, xshape, axes, dst, start, how, None)
        return
    b = k.b
    kept = [i for i in range(len(xshape)) if i not in axes]
    if not kept:                            # a full reduction: one result
        whole = fold(k, x, xshape, how, start, dt)
        if whole is not None:
            k.store_at(whole, s.out.buf, ll.Constant(I64, 0), dt)
            return
    nkeep = dim_prod(tuple(xshape[i] for i in kept))
    total = k.dim(dim_prod(xshape))

    def whole() -> None:
        a = kept[0] if kept else None
        n = k.dim(xshape[a]) if a is not None else ll.Constant(I64, 1)

        def body(kk: Kernel, lo: ll.Value, hi: ll.Value, _: list) -> None:
            _accumulate(kk, x, xshape, axes, dst, start, how,
                        (a, lo, hi) if a is not None else None)
        if a == len(xshape) - 1:
            # kept axes only last (a leading reduction): parts of columns, each row's part
            # read and added to its results in memory, measured slower on 2 threads than
            # the one loop (2048 x 256: 72 against 46 us), so it runs whole, in place: its
            # sums run along the reduced axes in memory, one element at a time (no register
            # sum to reassociate), the same numbers however LLVM compiles the loop, so it
            # needs no function of its own (``always``)
            body(k, ll.Constant(I64, 0), n, [])
            return
        per = k.dim(dim_prod(tuple(d for i, d in enumerate(xshape) if i != a)))
        pool.split_loop(k, n, per, body, always=True, name="reduce")
    if 0 not in axes or (isinstance(nkeep, int) and nkeep > MAX_KEPT):
        whole()
        return
    if isinstance(nkeep, int):
        # few results, as many as the shape says: the parts alone, one below PARALLEL_WORK
        # elements (the numbers of ``whole``: one part adds its rows in order, and the
        # identity combined with a single partial is that partial), so no second function
        _partials(k, x, xshape, axes, start, how, dt,
                  lambda j, v: k.store_at(v, s.out.buf, j, dt), small=True)
        return
    few = b.and_(b.icmp_signed(">=", total, ll.Constant(I64, pool.PARALLEL_WORK)),
                 b.icmp_signed("<=", k.dim(nkeep), ll.Constant(I64, MAX_KEPT)))
    with b.if_else(few) as (parts, one):
        with parts:
            _partials(k, x, xshape, axes, start, how, dt,
                      lambda j, v: k.store_at(v, s.out.buf, j, dt))
        with one:
            whole()


def _partials(k: Kernel, x: Operand, xshape: tuple, axes: tuple, start: ll.Value, how: str,
              dt: DType, put: Callable[[ll.Value, ll.Value], None], small: bool = False
              ) -> None:
    """The reduction in parts along axis 0 (reduced), each into a partial result of its own,
    then the partials combined in part order, in exact (not reassociated) arithmetic: result
    j (row-major over the kept axes, at most MAX_KEPT) goes to ``put(j, value)``. ``small``:
    an input under pool.PARALLEL_WORK elements is one part."""
    b, em = k.b, k.em
    n0 = k.dim(xshape[0])
    row = k.dim(dim_prod(xshape[1:]))
    one = ll.Constant(I64, 1)

    def ceil(x_: ll.Value, d: ll.Value) -> ll.Value:
        return b.sdiv(b.add(x_, b.sub(d, one)), d)
    chunk = _imax(b, ceil(ll.Constant(I64, pool.TASK_WORK), _imax(b, row, one)),
                  ceil(n0, ll.Constant(I64, MAX_PARTS)))
    if len(xshape) == 1:                  # a part of a vectorised run: whole vectors
        chunk = b.mul(ceil(chunk, ll.Constant(I64, 64)), ll.Constant(I64, 64))
    if small:
        big = b.icmp_signed(">=", k.dim(dim_prod(xshape)), ll.Constant(I64, pool.PARALLEL_WORK))
        chunk = b.select(big, chunk, _imax(b, n0, one))
    keep_shape = tuple(1 if i in axes else d for i, d in enumerate(xshape))
    nkeep = k.dim(dim_prod(keep_shape))
    partials = em.alloca_entry(ll.ArrayType(mem_type(dt), MAX_PARTS * MAX_KEPT), "partials")
    partials.align = 64

    def body(kk: Kernel, lo: ll.Value, hi: ll.Value, xs: list) -> None:
        base, size = xs
        base.add_attribute("noalias")
        kb = kk.b
        keep = kk.dim(dim_prod(keep_shape))
        kk.ptrs[-1] = kb.gep(base, [kb.mul(kb.sdiv(lo, size), keep)], source_etype=mem_type(dt))
        kk.scratch[-1] = kb.mul(keep, ll.Constant(I64, dt.itemsize))
        mine = contiguous(-1, dt, keep_shape)
        _accumulate(kk, x, xshape, axes, mine, start, how, (0, lo, hi))
    pool.split_loop(k, n0, row, body, chunk=chunk, extra=[partials, chunk], name="partial")
    nparts = ceil(n0, chunk)
    acc = em.alloca_entry(start.type, "total")
    with em.loop(nkeep, "comb") as j:
        b.store(start, acc)
        with em.loop(nparts, "combp") as t:
            p = b.gep(partials, [ll.Constant(I64, 0), b.add(b.mul(t, nkeep), j)])
            v = em.load_at(p, dt)
            cur = b.load(acc, typ=start.type)
            if how in ("add", "mul") and dt.is_float:   # in order: no reassociation
                v = b.fadd(cur, v) if how == "add" else b.fmul(cur, v)
            else:
                v = combine(k, how, cur, v)
            b.store(v, acc)
        put(j, b.load(acc, typ=start.type))


def fold(k: Kernel, x: Operand, shape: tuple, how: str, start: ll.Value, dt: DType
         ) -> ll.Value | None:
    """The fold of ``x`` over all of ``shape`` (a full reduction: what a row kernel without
    kept axes computes), as a value at the builder's position: outlined, in parts on the
    worker pool from pool.PARALLEL_WORK elements (the same parts, combined in the same order,
    at every thread count; one part below). None when ``x`` cannot be outlined (it reads a
    value of the kernel's own stack): then the caller folds it in place."""
    if not shape or not outlinable(x):
        return None
    slot = k.em.alloca_entry(start.type, "fold")
    _partials(k, x, tuple(shape), tuple(range(len(shape))), start, how, dt,
              lambda j, v: k.b.store(v, slot), small=True)
    return k.b.load(slot, typ=start.type)


def _imax(b: ll.IRBuilder, x: ll.Value, y: ll.Value) -> ll.Value:
    return b.select(b.icmp_signed(">", x, y), x, y)


def _accumulate(k: Kernel, x: Operand, xshape: tuple, axes: tuple, dst: View, start: ll.Value,
                how: str, part: tuple[int, ll.Value, ll.Value] | None) -> None:
    """dst (contiguous, the input's shape with reduced axes 1) = the reduction of x, or of the
    part of it where axis ``part[0]`` runs from ``part[1]`` to ``part[2]``; dst is filled
    with the identity first where that part writes it."""
    em = k.em
    keep = tuple(1 if i in axes else d for i, d in enumerate(xshape))
    fill = part if part is not None and part[0] not in axes else None
    with em.loop_nest([k.dim(d) for d in keep], "fill", fill) as idx:
        k.store(start, dst, idx)
    out = broadcast_view(dst, xshape)
    out = View(out.buf, out.dtype, xshape, tuple(0 if i in axes else st
                                                 for i, st in enumerate(out.strides)))
    r = len(xshape)
    split = r
    while split > 0 and (split - 1) in axes:
        split -= 1
    outer_part = inner_part = None
    if part is not None:
        if part[0] < split:
            outer_part = part
        else:
            inner_part = (part[0] - split, part[1], part[2])
    # an empty input leaves the identity: the outer loop alone may be huge ([2**60, 3, 0])
    with k.unless_empty(xshape), em.loop_nest([k.dim(d) for d in xshape[:split]], "r",
                                              outer_part) as outer:
        acc_slot = em.alloca_entry(start.type, "acc")
        pad = [ll.Constant(I64, 0)] * (r - split)
        k.b.store(k.load(out, list(outer) + pad), acc_slot)
        with em.loop_nest([k.dim(d) for d in xshape[split:]], "q", inner_part) as inner:
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
