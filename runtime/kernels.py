"""The body of each step's kernel, by op kind: elementwise maps, reductions over any axes
(register accumulators for trailing reduced axes, in-memory ones otherwise so the inner loop
stays unit-stride), matmul, and the layout ops that must write data (pad, concat, take,
scatter_add), plus dim and one_hot."""
from __future__ import annotations

import itertools
from typing import Callable, Sequence

import llvmlite.ir as ll

from graphc.ir.ops import registry
from graphc.ir.ops.rules import reduce_identity
from graphc.ir.types import DimLike, DType, dim_add, dim_mul, dim_prod
from graphc.runtime import gemm, random_kernels
from graphc.runtime.emit import I32, I64, PTR, is_float, reg_type
from graphc.runtime.errcodes import ERR_ALLOC
from graphc.runtime.kernel import (
    Kernel,
    emit_map,
    epilogue,
    shares_output,
    splat,
    vstore,
)
from graphc.runtime.plan import (
    ERR_INDEX,
    Acc,
    Lazy,
    Operand,
    Step,
    View,
    broadcast_view,
    buffers_read,
    contiguous,
)

RFLAGS = ("reassoc", "contract")   # lets the vectoriser reorder float sums


def shape_of(op: Operand) -> tuple[DimLike, ...]:
    return op.shape if isinstance(op, View) else op.value.shape


def _fill(k: Kernel, out: View, value: ll.Value) -> None:
    with k.em.loop(k.dim(dim_prod(out.shape)), "fill") as i:
        k.store_at(value, out.buf, i, out.dtype)


def _combine(k: Kernel, how: str, acc: ll.Value, x: ll.Value) -> ll.Value:
    """One step of a fold (argmax/argmin fold in ``emit_argreduce``)."""
    em = k.em
    if how == "add":
        return k.b.fadd(acc, x, flags=RFLAGS) if is_float(x.type) else k.b.add(acc, x)
    if how == "mul":
        return k.b.fmul(acc, x, flags=RFLAGS) if is_float(x.type) else k.b.mul(acc, x)
    if how not in ("max", "min"):
        raise ValueError(f"no lowering for the fold {how!r}")   # registry.COMBINES grew
    if not is_float(x.type):
        return em.maximum(acc, x) if how == "max" else em.minimum(acc, x)
    # IEEE maximum/minimum propagate NaN, as NumPy's max/min do, and vectorise as reductions
    return em.intrinsic("maximum" if how == "max" else "minimum", [acc, x])


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
            k.b.store(_combine(k, how, k.b.load(acc_slot, typ=v.type), v), acc_slot)
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


def emit_matmul(k: Kernel, s: Step, epi: Operand | None = None) -> None:
    """C = A @ B with NumPy's rules, then ``epi`` (a tree over C's shape whose ``Acc`` leaf is
    the product) on each element before it is stored. Full MR x NV-vector tiles accumulate in
    registers; the rest runs row by row over column blocks accumulated on the stack, or as dot
    products when B is unit-stride along k (a transposed view). C is written once, after the
    epilogue read its other inputs at that element, so C may overwrite one of them in place."""
    a, bv = (_as_matrix(x, first) for x, first in zip(s.args, (True, False)))
    m, n = a.shape[-2], bv.shape[-1]
    batch = _batch_shape(a, bv)
    folded = _fold_rows(a, bv, epi)
    if folded is not None:              # one GEMM of all the batch's rows, not one per batch
        a, epi = folded
        m, batch = a.shape[0], ()
    a, bv = _lift_batch(a, batch), _lift_batch(bv, batch)
    c = contiguous(s.out.buf, s.out.dtype, batch + (m, n))
    dot = bv.strides[-1] != 1 and (bv.strides[-2] == 1 or n == 1)
    tiled = bv.strides[-1] == 1 and s.value.dtype.is_float
    if s.value.dtype.is_float and not k.cg.debug:
        if not (dot and bv.strides[-2] == 1) or (isinstance(m, int) and m > DOT_ROWS):
            _matmul_packed(k, s, a, bv, c, batch, epi)
            return
        # B unit-stride along k (a transposed weight, as backward multiplies by Wᵀ): a few
        # rows are dot products over B's contiguous rows, cheaper than packing all of B
        b = k.b
        with b.if_else(b.icmp_signed("<=", k.dim(m), ll.Constant(I64, DOT_ROWS))) as (
                few, many):
            with few:
                _matmul_loops(k, s, a, bv, c, batch, epi, True, False)
                few_end = b.block
            with many:
                _matmul_packed(k, s, a, bv, c, batch, epi)
                code, many_end = k.code, b.block
        k.code = b.phi(I32, name="mm.code")
        k.code.add_incoming(ll.Constant(I32, 0), few_end)
        k.code.add_incoming(code, many_end)
        return
    _matmul_loops(k, s, a, bv, c, batch, epi, dot, tiled)



def _fold_rows(a: View, bv: View, epi: Operand | None) -> tuple[View, Operand | None] | None:
    """A batch of A against one matrix B (im2col patches [N,OH,OW,K] against a convolution's
    [K,Cout] kernel) as one [rows, K] @ B: (A, the epilogue) with the batch axes and A's rows
    seen as one axis, when A's and every epilogue view's strides run on through them."""
    lead = len(a.shape) - 1
    if len(bv.shape) != 2 or lead < 2:
        return None
    rows = _merged(a, lead)
    if rows is None:
        return None
    if epi is None:
        return rows, None
    tree = _merged_tree(epi, lead)
    return None if tree is None else (rows, tree)


def _merged(v: View, lead: int) -> View | None:
    """``v`` with its first ``lead`` axes seen as one, or None when their strides do not chain
    (unit axes have no stride that matters; a broadcast axis chains with stride 0)."""
    axes = [i for i in range(lead) if v.shape[i] != 1]
    for i, j in itertools.pairwise(axes):
        if v.strides[i] != dim_mul(v.strides[j], v.shape[j]):
            return None
    stride = v.strides[axes[-1]] if axes else 0
    return View(v.buf, v.dtype, (dim_prod(v.shape[:lead]),) + tuple(v.shape[lead:]),
                (stride,) + tuple(v.strides[lead:]), v.offset)


def _merged_tree(op: Operand, lead: int) -> Operand | None:
    if isinstance(op, View):
        return _merged(op, lead)
    if isinstance(op, Lazy):
        args = [_merged_tree(x, lead) for x in op.args]
        return None if any(x is None for x in args) else Lazy(op.value, tuple(args))
    return op

DOT_ROWS = 4       # rows of A up to which A @ Bᵀ runs as dot products (no packing)


def _matmul_loops(k: Kernel, s: Step, a: View, bv: View, c: View, batch: tuple[DimLike, ...],
                  epi: Operand | None, dot: bool, tiled: bool) -> None:
    """The unpacked loops: dot products, vector tiles, or row-at-a-time axpys (integer
    matmul, the debug build, and few rows against a transposed B)."""
    em = k.em
    m, kk, n = a.shape[-2], a.shape[-1], bv.shape[-1]
    zero = ll.Constant(I64, 0)
    # an empty C needs no work, whatever the other dims (M = 2**60 rows of N = 0 columns)
    with k.unless_empty(c.shape), em.loop_nest([k.dim(d) for d in batch], "mb") as bi:
        M, K, Nn = k.dim(m), k.dim(kk), k.dim(n)
        if dot:
            _matmul_dot(k, a, bv, c, bi, M, K, Nn, epi)
        elif not tiled:
            _matmul_rows(k, a, bv, c, bi, (zero, M), (zero, Nn), K, epi)
        else:
            lanes = 64 // s.value.dtype.itemsize
            mfull = k.b.mul(k.b.sdiv(M, ll.Constant(I64, MR)), ll.Constant(I64, MR))
            nfull = k.b.mul(k.b.sdiv(Nn, ll.Constant(I64, NV * lanes)),
                            ll.Constant(I64, NV * lanes))
            _matmul_tiles(k, a, bv, c, bi, mfull, nfull, K, lanes, epi)
            _matmul_rows(k, a, bv, c, bi, (zero, mfull), (nfull, Nn), K, epi)
            _matmul_rows(k, a, bv, c, bi, (mfull, M), (zero, Nn), K, epi)


def _matmul_packed(k: Kernel, s: Step, a: View, bv: View, c: View, batch: tuple[DimLike, ...],
                   epi: Operand | None) -> None:
    """Float C = A @ B through the packed GEMM (runtime/gemm.py), the epilogue applied to
    each finished block of C. The product goes to a scratch C first when C cannot hold it:
    the epilogue changes the dtype, or C overwrites one of the epilogue's inputs in place
    (the product would clobber that input before the epilogue reads it)."""
    em, b = k.em, k.b
    dt = s.value.dtype
    et = reg_type(dt)
    module = k.cg.module
    separate = False
    accumulate = epi is not None and _adds_to_output(k, epi, c, dt)
    if accumulate:
        epi = None                       # C holds the addend: C += A @ B
    elif epi is not None:
        reads = set(buffers_read(epi))
        shared = shares_output(k.cg.plan, k.bufs)
        separate = c.dtype != dt or c.buf in reads or bool(reads & shared)
    m, kk, n = a.shape[-2], a.shape[-1], bv.shape[-1]
    M, K, N = k.dim(m), k.dim(kk), k.dim(n)
    blk = gemm.blocking(dt)
    alloc, free = gemm.libc(module, "aligned_alloc"), gemm.libc(module, "free")
    align = ll.Constant(I64, 64)
    packed = b.call(alloc, [align, ll.Constant(I64, gemm.packed_bytes(dt, blk))])
    null = ll.Constant(PTR, None)
    ok = b.icmp_unsigned("!=", packed, null)
    scratch = null
    if separate:
        size = b.mul(gemm.scratch_elements(b, dt, M, K, N), ll.Constant(I64, dt.itemsize))
        size = b.and_(b.add(size, ll.Constant(I64, 127)), ll.Constant(I64, -64))
        scratch = b.call(alloc, [align, size])
        ok = b.and_(ok, b.icmp_unsigned("!=", scratch, null))
    zero = ll.Constant(I64, 0)
    lanes = blk.lanes
    vt = ll.VectorType(et, lanes)
    with b.if_then(ok, likely=True):
        with k.unless_empty(c.shape), em.loop_nest([k.dim(d) for d in batch], "mb") as bi:
            def base(v: View) -> ll.Value:
                return b.gep(k.ptr(v.buf), [k.index(v, bi + [zero, zero])], source_etype=et)
            ops = gemm.Operands(a=base(a), rsa=k.dim(a.strides[-2]), csa=k.dim(a.strides[-1]),
                                b=base(bv), rsb=k.dim(bv.strides[-2]),
                                csb=k.dim(bv.strides[-1]), c=base(c), ldc=N, m=M, k=K, n=N,
                                scratch=scratch if separate else None,
                                accumulate=accumulate)

            def on_block(i0: ll.Value, mc: ll.Value, j0: ll.Value, nc: ll.Value,
                         at: ll.Value, ld: ll.Value) -> None:
                """The epilogue over C[i0:i0+mc, j0:j0+nc], the product read from ``at``."""
                if epi is None and not separate:
                    return
                with em.loop(mc, "ei") as r:
                    i = b.add(i0, r)
                    row = b.gep(at, [b.mul(r, ld)], source_etype=et)
                    nvec = b.sdiv(nc, ll.Constant(I64, lanes))
                    with em.loop(nvec, "ev") as vj:
                        dj = b.mul(vj, ll.Constant(I64, lanes))
                        j = b.add(j0, dj)
                        acc = b.load(b.gep(row, [dj], source_etype=et), typ=vt,
                                     align=dt.itemsize)
                        vstore(k, epilogue(k, epi, acc, bi + [i, j], lanes),
                                        c, bi + [i, j])
                    with em.loop(nc, "es", start=b.mul(nvec, ll.Constant(I64, lanes))) as dj:
                        j = b.add(j0, dj)
                        acc = b.load(b.gep(row, [dj], source_etype=et), typ=et)
                        k.store(epilogue(k, epi, acc, bi + [i, j]), c, bi + [i, j])

            gemm.emit_blocked(em, dt, ops, packed, on_block, k.cg.threads)
    with b.if_then(b.icmp_unsigned("!=", packed, null)):
        b.call(free, [packed])
    if separate:
        with b.if_then(b.icmp_unsigned("!=", scratch, null)):
            b.call(free, [scratch])
    k.code = b.select(ok, ll.Constant(I32, 0), ll.Constant(I32, (ERR_ALLOC << 24) | k.tag))


def _adds_to_output(k: Kernel, epi: Operand, c: View, dt: DType) -> bool:
    """Whether the epilogue is ``product + x`` with x the very elements C is (a running sum
    overwritten in place, as gradient accumulation does): then C += A @ B needs no scratch."""
    if not isinstance(epi, Lazy) or c.dtype != dt or not (
            epi.value.op == "add" or registry.has(epi.value.op, registry.ACCUMULATES)):
        return False
    if len(epi.args) != 2 or not any(isinstance(a, Acc) for a in epi.args):
        return False
    x = next(a for a in epi.args if not isinstance(a, Acc))
    if not isinstance(x, View) or x.dtype != dt:
        return False
    # the same pointer: the version of an in-place kernel for equal pointers (emit_versions)
    same = x.buf == c.buf or k.ptrs.get(x.buf) is k.ptrs.get(c.buf) is not None
    return same and (x.shape, x.strides, x.offset) == (c.shape, c.strides, c.offset)


MR, NV = 4, 2      # micro-tile: MR rows x NV vectors of C held in registers over the k loop
BLOCK = 64         # columns of one row accumulated on the stack outside full tiles


def _matmul_tiles(k: Kernel, a: View, bv: View, c: View, bi: list, mfull: ll.Value,
                  nfull: ll.Value, K: ll.Value, lanes: int, epi: Operand | None) -> None:
    """Full MR x (NV*lanes) tiles: vector loads of B rows, A broadcast, FMAs into registers."""
    em, b = k.em, k.b
    et = reg_type(a.dtype)              # the product's dtype; C's may differ after an epilogue
    vt = ll.VectorType(et, lanes)
    zeros = ll.Constant(vt, [ll.Constant(et, 0.0)] * lanes)
    with em.loop(b.sdiv(mfull, ll.Constant(I64, MR)), "ti") as ti:
        i0 = b.mul(ti, ll.Constant(I64, MR))
        with em.loop(b.sdiv(nfull, ll.Constant(I64, NV * lanes)), "tj") as tj:
            j0 = b.mul(tj, ll.Constant(I64, NV * lanes))
            accs = [[em.alloca_entry(vt, f"acc{r}.{v}") for v in range(NV)] for r in range(MR)]
            for row in accs:
                for slot in row:
                    b.store(zeros, slot)
            with em.loop(K, "tk") as kx:
                bvecs = []
                for v in range(NV):
                    j = b.add(j0, ll.Constant(I64, v * lanes))
                    p = k.address(bv.buf, k.index(bv, bi + [kx, j]), vt)
                    bvecs.append(b.load(p, typ=vt, align=a.dtype.itemsize))
                for r in range(MR):
                    x = k.load(a, bi + [b.add(i0, ll.Constant(I64, r)), kx])
                    xs = splat(k, x, lanes)
                    for v in range(NV):
                        slot = accs[r][v]
                        b.store(em.intrinsic("fma", [xs, bvecs[v], b.load(slot, typ=vt)]), slot)
            for r in range(MR):
                for v in range(NV):
                    j = b.add(j0, ll.Constant(I64, v * lanes))
                    at = bi + [b.add(i0, ll.Constant(I64, r)), j]
                    out = epilogue(k, epi, b.load(accs[r][v], typ=vt), at, lanes)
                    vstore(k, out, c, at)


def _matmul_rows(k: Kernel, a: View, bv: View, c: View, bi: list, rows: tuple, cols: tuple,
                 K: ll.Value, epi: Operand | None) -> None:
    """C[rows, cols] = A[rows] @ B[:, cols], a row at a time in blocks of BLOCK columns: the
    block accumulates as axpys (inner loop over columns) in a stack array, then is stored."""
    em, b = k.em, k.b
    fl = a.dtype.is_float
    et = reg_type(a.dtype)
    zero = em.const(0, et)
    acc = em.alloca_entry(ll.ArrayType(et, BLOCK), "rowacc")
    width = b.sub(cols[1], cols[0])
    blocks = b.sdiv(b.add(width, ll.Constant(I64, BLOCK - 1)), ll.Constant(I64, BLOCK))

    def cell(j: ll.Value) -> ll.Value:
        return b.gep(acc, [ll.Constant(I64, 0), j], inbounds=True)
    with em.loop(rows[1], "mi", start=rows[0]) as i:
        with em.loop(blocks, "mb") as blk:
            j0 = b.add(cols[0], b.mul(blk, ll.Constant(I64, BLOCK)))
            left = b.sub(cols[1], j0)
            w = b.select(b.icmp_signed("<", left, ll.Constant(I64, BLOCK)), left,
                         ll.Constant(I64, BLOCK))
            with em.loop(w, "mz") as j:
                b.store(zero, cell(j))
            with em.loop(K, "mk") as kx:
                aik = k.load(a, bi + [i, kx])
                with em.loop(w, "mj") as j:
                    bkj = k.load(bv, bi + [kx, b.add(j0, j)])
                    p = b.fmul(aik, bkj, flags=("contract",)) if fl else b.mul(aik, bkj)
                    cur = b.load(cell(j), typ=et)
                    b.store(b.fadd(cur, p, flags=("contract",)) if fl else b.add(cur, p), cell(j))
            with em.loop(w, "ms") as j:
                at = bi + [i, b.add(j0, j)]
                k.store(epilogue(k, epi, b.load(cell(j), typ=et), at), c, at)


def _matmul_dot(k: Kernel, a: View, bv: View, c: View, bi: list, M: ll.Value, K: ll.Value,
                Nn: ll.Value, epi: Operand | None) -> None:
    """C[i, j] = dot(A[i, :], B[:, j]) for B unit-stride along k (a transposed view)."""
    em, b = k.em, k.b
    fl = a.dtype.is_float
    zero = em.const(0, reg_type(a.dtype))
    with em.loop(M, "mi") as i:
        with em.loop(Nn, "mj") as j:
            acc = em.alloca_entry(zero.type, "dot")
            b.store(zero, acc)
            with em.loop(K, "mk") as kx:
                p = em.mul(k.load(a, bi + [i, kx]), k.load(bv, bi + [kx, j]))
                cur = b.load(acc, typ=zero.type)
                b.store(b.fadd(cur, p, flags=RFLAGS) if fl else b.add(cur, p), acc)
            k.store(epilogue(k, epi, b.load(acc, typ=zero.type), bi + [i, j]), c,
                    bi + [i, j])


def _as_matrix(x: Operand, first: bool) -> View:
    """A 1-D operand as NumPy's matmul sees it: a row (first operand) or a column."""
    assert isinstance(x, View)
    if len(x.shape) > 1:
        return x
    if first:
        return View(x.buf, x.dtype, (1,) + x.shape, (0,) + x.strides, x.offset)
    return View(x.buf, x.dtype, x.shape + (1,), x.strides + (0,), x.offset)


def _lift_batch(x: View, batch: tuple[DimLike, ...]) -> View:
    lead = broadcast_view(View(x.buf, x.dtype, x.shape[:-2], x.strides[:-2], x.offset), batch)
    return View(x.buf, x.dtype, batch + x.shape[-2:], lead.strides + x.strides[-2:], x.offset)


def _batch_shape(a: View, bv: View) -> tuple[DimLike, ...]:
    sa, sb = a.shape[:-2], bv.shape[:-2]
    r = max(len(sa), len(sb))
    sa, sb = (1,) * (r - len(sa)) + sa, (1,) * (r - len(sb)) + sb
    return tuple(y if x == 1 else x for x, y in zip(sa, sb))


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


def _tap_at(k: Kernel, o: ll.Value, t: ll.Value, stride: int, dil: int, lo: int,
            n: ll.Value) -> tuple[ll.Value, ll.Value]:
    """(input row, whether it is inside [0, n)) that window tap ``t`` of output row ``o``
    reads: o*stride + t*dil - lo."""
    b = k.b
    at = b.sub(b.add(b.mul(o, ll.Constant(I64, stride)), b.mul(t, ll.Constant(I64, dil))),
               ll.Constant(I64, lo))
    return at, b.icmp_unsigned("<", at, n)          # unsigned: a negative row is outside too


def _window_attrs(s: Step) -> tuple[tuple[int, int], ...]:
    a = s.value.attrs
    return tuple(zip(a["window"], a["stride"], a["dilation"], a["lo"]))


def emit_im2col(k: Kernel, s: Step) -> None:
    """Per output pixel and tap, a run of C channels copied from the tap's input pixel, or
    zeros where it falls in the padding: no padded copy of the input, one pass over the
    patches, each run unit-stride on both sides. Without dilation along W, a window row that
    lies inside the input is one run of KW*C (its taps are neighbours on both sides)."""
    x = s.args[0]
    em, b = k.em, k.b
    n, h, w, c = (k.dim(d) for d in shape_of(x))
    (kh, sh, dh, lh), (kw, sw, dw, lw) = _window_attrs(s)
    oh, ow = k.dim(s.out.shape[1]), k.dim(s.out.shape[2])
    cc = s.value.inputs[0].shape[3]
    zero = em.const(0, reg_type(s.out.dtype))
    rows = dw == 1 and isinstance(x, View) and x.strides[3] == 1 and x.strides[2] == cc

    def taps(ni: ll.Value, oi: ll.Value, oj: ll.Value, ti: ll.Value, hi_: ll.Value,
             in_h: ll.Value) -> None:
        with em.loop(ll.Constant(I64, kw), "tj") as tj:
            wi, in_w = _tap_at(k, oj, tj, sw, dw, lw, w)
            base = b.mul(b.add(b.mul(ti, ll.Constant(I64, kw)), tj), ll.Constant(I64, cc))
            with b.if_else(b.and_(in_h, in_w)) as (inside, outside):
                with inside, em.loop(c, "cc") as ci:
                    k.store(k.load(x, [ni, hi_, wi, ci]), s.out, [ni, oi, oj, b.add(base, ci)])
                with outside, em.loop(c, "cz") as ci:
                    k.store(zero, s.out, [ni, oi, oj, b.add(base, ci)])

    with k.unless_empty(s.out.shape), em.loop_nest([n, oh, ow], "col") as (ni, oi, oj), \
            em.loop(ll.Constant(I64, kh), "ti") as ti:
        hi_, in_h = _tap_at(k, oi, ti, sh, dh, lh, h)
        if rows:
            w0, _ = _tap_at(k, oj, ll.Constant(I64, 0), sw, dw, lw, w)
            fits = b.and_(b.icmp_signed(">=", w0, ll.Constant(I64, 0)),
                          b.icmp_signed("<=", b.add(w0, ll.Constant(I64, kw)), w))
            with b.if_else(b.and_(in_h, fits)) as (whole, edge):
                with whole, em.loop(ll.Constant(I64, kw * cc), "cr") as e:
                    base = b.mul(ti, ll.Constant(I64, kw * cc))
                    k.store(k.load(x, [ni, hi_, w0, e]), s.out, [ni, oi, oj, b.add(base, e)])
                with edge:
                    taps(ni, oi, oj, ti, hi_, in_h)
        else:
            taps(ni, oi, oj, ti, hi_, in_h)


def emit_col2im(k: Kernel, s: Step) -> None:
    """im2col's transpose as a gather, not a scatter: each input pixel sums, over the taps in
    row-major order (as the reference does, so the sums are the same), the channel runs of the
    output pixels whose window covers it. Each element is written by one iteration alone: no
    races between threads and no dependence on their order."""
    p = s.args[0]
    em, b = k.em, k.b
    n, h, w, c = (k.dim(d) for d in s.out.shape)
    (kh, sh, dh, lh), (kw, sw, dw, lw) = _window_attrs(s)
    oh, ow = (k.dim(d) for d in shape_of(p)[1:3])
    cc = s.out.shape[3]
    zero = em.const(0, reg_type(s.out.dtype))
    with k.unless_empty(s.out.shape), em.loop_nest([n, h, w], "im") as (ni, hi_, wi):
        with em.loop(c, "iz") as ci:
            k.store(zero, s.out, [ni, hi_, wi, ci])
        with em.loop(ll.Constant(I64, kh), "ti") as ti:
            oi, in_h = _source(k, hi_, ti, sh, dh, lh, oh)
            with em.loop(ll.Constant(I64, kw), "tj") as tj:
                oj, in_w = _source(k, wi, tj, sw, dw, lw, ow)
                base = b.mul(b.add(b.mul(ti, ll.Constant(I64, kw)), tj), ll.Constant(I64, cc))
                with b.if_then(b.and_(in_h, in_w)), em.loop(c, "ia") as ci:
                    at = [ni, hi_, wi, ci]
                    k.store(em.add(k.load(s.out, at), k.load(p, [ni, oi, oj, b.add(base, ci)])),
                            s.out, at)


def _source(k: Kernel, i: ll.Value, t: ll.Value, stride: int, dil: int, lo: int,
            n: ll.Value) -> tuple[ll.Value, ll.Value]:
    """(output row, whether there is one in [0, n)) whose tap ``t`` reads input row ``i``:
    o = (i + lo - t*dil) / stride, when that divides exactly."""
    b = k.b
    num = b.sub(b.add(i, ll.Constant(I64, lo)), b.mul(t, ll.Constant(I64, dil)))
    if stride == 1:
        return num, b.icmp_unsigned("<", num, n)
    st = ll.Constant(I64, stride)
    o = b.sdiv(num, st)
    exact = b.and_(b.icmp_signed(">=", num, ll.Constant(I64, 0)),
                   b.icmp_signed("==", b.srem(num, st), ll.Constant(I64, 0)))
    return o, b.and_(exact, b.icmp_unsigned("<", o, n))


def _window_taps(k: Kernel, window: tuple[int, int], oi: ll.Value, oj: ll.Value,
                 body: Callable[[ll.Value, ll.Value], None]) -> None:
    """body(h, w) for every pixel of the window of output pixel (oi, oj) (windows tile x)."""
    b = k.b
    with k.em.loop(ll.Constant(I64, window[0]), "wa") as a, \
            k.em.loop(ll.Constant(I64, window[1]), "wb") as c:
        body(b.add(b.mul(oi, ll.Constant(I64, window[0])), a),
             b.add(b.mul(oj, ll.Constant(I64, window[1])), c))


def emit_window_max(k: Kernel, s: Step) -> None:
    """Each output pixel's C channels start at -inf and take the max (NaN wins, as the max
    reduction's) of each of its window's pixels in turn: unit-stride runs of C."""
    x = s.args[0]
    em = k.em
    n, oh, ow, c = (k.dim(d) for d in s.out.shape)
    start = em.const(float("-inf"), reg_type(s.out.dtype))
    with k.unless_empty(s.out.shape), em.loop_nest([n, oh, ow], "wm") as (ni, oi, oj):
        with em.loop(c, "wi") as ci:
            k.store(start, s.out, [ni, oi, oj, ci])

        def take(h: ll.Value, w: ll.Value) -> None:
            with em.loop(c, "wc") as ci:
                at = [ni, oi, oj, ci]
                k.store(_combine(k, "max", k.load(s.out, at), k.load(x, [ni, h, w, ci])),
                        s.out, at)
        _window_taps(k, s.value.attrs["window"], oi, oj, take)


def emit_window_max_grad(k: Kernel, s: Step) -> None:
    """Per window: its pixels equal to the max marked 1 (else 0) and counted per channel, the
    count turned into g / count, then the marks scaled by it. The same numbers as the max
    rule's g * hit / count (hit is 0 or 1), with one division per window, not per pixel."""
    x, out, g = s.args
    em, b = k.em, k.b
    n, oh, ow, c = (k.dim(d) for d in shape_of(out))
    et = reg_type(s.out.dtype)
    one, zero = em.const(1, et), em.const(0, et)
    count = em.alloca_entry(ll.ArrayType(et, int(s.out.shape[3])), "ties")

    def cell(ci: ll.Value) -> ll.Value:
        return b.gep(count, [ll.Constant(I64, 0), ci], inbounds=True)
    window = s.value.attrs["window"]
    with k.unless_empty(shape_of(out)), em.loop_nest([n, oh, ow], "wg") as (ni, oi, oj):
        with em.loop(c, "wz") as ci:
            b.store(zero, cell(ci))

        def mark(h: ll.Value, w: ll.Value) -> None:
            with em.loop(c, "wh") as ci:
                hit = em.select(em.eq(k.load(x, [ni, h, w, ci]), k.load(out, [ni, oi, oj, ci])),
                                one, zero)
                k.store(hit, s.out, [ni, h, w, ci])
                b.store(em.add(b.load(cell(ci), typ=et), hit), cell(ci))
        _window_taps(k, window, oi, oj, mark)
        with em.loop(c, "wq") as ci:
            b.store(em.div(k.load(g, [ni, oi, oj, ci]), b.load(cell(ci), typ=et)), cell(ci))

        def scale(h: ll.Value, w: ll.Value) -> None:
            with em.loop(c, "ws") as ci:
                at = [ni, h, w, ci]
                k.store(em.mul(k.load(s.out, at), b.load(cell(ci), typ=et)), s.out, at)
        _window_taps(k, window, oi, oj, scale)


EMITTERS = {"pad": emit_pad, "concat": emit_concat, "take": emit_take,
            "scatter_add": emit_scatter_add, "dim": emit_dim, "one_hot": emit_one_hot,
            "random_uniform": random_kernels.emit_random,
            "random_normal": random_kernels.emit_random, "flip": random_kernels.emit_flip,
            "im2col": emit_im2col, "col2im": emit_col2im, "window_max": emit_window_max,
            "window_max_grad": emit_window_max_grad}
