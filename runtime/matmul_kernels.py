"""The matmul kernel: the packed GEMM (runtime/gemm.py, its inner kernels the GEMM library's)
with its fused epilogue, a batch against one matrix folded into one GEMM, dot products for
A @ B.T with few rows, and the register-tiled loops a debug build runs."""
from __future__ import annotations

import itertools
from collections.abc import Callable

import llvmlite.ir as ll

from graphc.ir.ops import registry
from graphc.ir.types import DimLike, DType, dim_mul, dim_prod
from graphc.runtime import gemm, gemmdriver
from graphc.runtime.emit import I32, I64, PTR, reg_type
from graphc.runtime.errcodes import ERR_ALLOC
from graphc.runtime.kernel import Kernel, shares_output
from graphc.runtime.lowering import RFLAGS, epilogue, splat, vstore
from graphc.runtime.plan import (
    Acc,
    Lazy,
    Operand,
    Step,
    View,
    broadcast_view,
    buffers_read,
    contiguous,
)


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
            _matmul_packed_or_thin(k, s, a, bv, c, batch, epi)
            return
        # B unit-stride along k (a transposed weight, as backward multiplies by Wᵀ): a few
        # rows are dot products over B's contiguous rows, cheaper than packing all of B
        _small_or_packed(k, s, a, bv, c, batch, epi, m, DOT_ROWS,
                         lambda: _matmul_loops(k, s, a, bv, c, batch, epi, True, False))
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


SMALL_K = 8        # a K up to which C = A @ B runs as unpacked rank-K updates
THIN_VECTORS = 4   # vectors of a row of C that such an update computes side by side


def _matmul_packed_or_thin(k: Kernel, s: Step, a: View, bv: View, c: View,
                           batch: tuple[DimLike, ...], epi: Operand | None) -> None:
    """The packed GEMM, or for a K of at most SMALL_K (a weight gradient at batch 1..8, whose
    K is the batch) the thin loops: such a product costs about one pass over C, where packing
    B plus a scratch C for an in-place epilogue passes over C three times (measured faster
    than the packed path up to K = 12 at 784 x 256, one thread). Without an epilogue too: the
    batch-1 weight gradient x.T @ g of the MLP's value_and_grad ran 2x slower packed (the
    macro-kernel's set-up per 8x32 tile for a sum of one product)."""
    kk = a.shape[-1]
    if bv.strides[-1] != 1 or (isinstance(kk, int) and kk > SMALL_K):
        _matmul_packed(k, s, a, bv, c, batch, epi)
        return
    if isinstance(kk, int):
        _matmul_thin(k, s, a, bv, c, batch, epi)
        return
    _small_or_packed(k, s, a, bv, c, batch, epi, kk, SMALL_K,
                     lambda: _matmul_thin(k, s, a, bv, c, batch, epi))


def _small_or_packed(k: Kernel, s: Step, a: View, bv: View, c: View,
                     batch: tuple[DimLike, ...], epi: Operand | None, dim: DimLike, limit: int,
                     small: Callable[[], None]) -> None:
    """``small()`` (loops that cannot fail) when ``dim`` <= ``limit`` at run time, else the
    packed GEMM; the kernel's code is the packed path's (an allocation failure) or 0."""
    b = k.b
    with b.if_else(b.icmp_signed("<=", k.dim(dim), ll.Constant(I64, limit))) as (few, many):
        with few:
            small()
            few_end = b.block
        with many:
            _matmul_packed(k, s, a, bv, c, batch, epi)
            code, many_end = k.code, b.block
    k.code = b.phi(I32, name="mm.code")
    k.code.add_incoming(ll.Constant(I32, 0), few_end)
    k.code.add_incoming(code, many_end)


def _matmul_thin(k: Kernel, s: Step, a: View, bv: View, c: View, batch: tuple[DimLike, ...],
                 epi: Operand | None) -> None:
    """C[i, j] = epilogue(sum_k A[i, k] * B[k, j]) for a small K, B unit-stride along j: per
    vector of a row of C, FMAs over k (A broadcast), the epilogue, one store. C is written after
    the epilogue read its inputs at that element, so it may be one of them (an in-place update,
    or C += A @ B). THIN_VECTORS vectors at a time (their FMA chains side by side, each
    element's FMAs in k order: the same bits as one vector at a time), then the rest one by
    one: a single chain of K dependent FMAs per vector left the overlap to the out-of-order
    core across loop iterations, and its speed to where the loop happened to be placed (the
    same code ran 1.5x slower in another build of the model at K = 8)."""
    em, b = k.em, k.b
    et = reg_type(s.value.dtype)
    lanes = 64 // s.value.dtype.itemsize
    vt = ll.VectorType(et, lanes)
    zeros = ll.Constant(vt, [ll.Constant(et, 0.0)] * lanes)
    m, kk, n = a.shape[-2], a.shape[-1], bv.shape[-1]
    with k.unless_empty(c.shape), em.loop_nest([k.dim(d) for d in batch], "tb") as bi:
        M, K, N = k.dim(m), k.dim(kk), k.dim(n)
        full = b.sdiv(N, ll.Constant(I64, lanes))
        groups = b.sdiv(full, ll.Constant(I64, THIN_VECTORS))
        accs = [em.alloca_entry(vt, f"thin{u}") for u in range(THIN_VECTORS)]
        acc = accs[0]
        one = em.alloca_entry(et, "thin.s")
        with em.loop(M, "ti") as i:
            with em.loop(groups, "tg") as g:
                j0 = b.mul(g, ll.Constant(I64, THIN_VECTORS * lanes))
                js = [b.add(j0, ll.Constant(I64, u * lanes)) for u in range(THIN_VECTORS)]
                for slot in accs:
                    b.store(zeros, slot)
                with em.loop(K, "tgk") as kx:
                    xs = splat(k, k.load(a, bi + [i, kx]), lanes)
                    for j, slot in zip(js, accs):
                        p = k.address(bv.buf, k.index(bv, bi + [kx, j]), vt)
                        bj = b.load(p, typ=vt, align=bv.dtype.itemsize)
                        b.store(em.intrinsic("fma", [xs, bj, b.load(slot, typ=vt)]), slot)
                for j, slot in zip(js, accs):
                    at = bi + [i, j]
                    vstore(k, epilogue(k, epi, b.load(slot, typ=vt), at, lanes), c, at)
            rest = b.mul(groups, ll.Constant(I64, THIN_VECTORS))
            with em.loop(full, "tj", start=rest) as vj:
                j = b.mul(vj, ll.Constant(I64, lanes))
                b.store(ll.Constant(vt, [ll.Constant(et, 0.0)] * lanes), acc)
                with em.loop(K, "tk") as kx:
                    xs = splat(k, k.load(a, bi + [i, kx]), lanes)
                    p = k.address(bv.buf, k.index(bv, bi + [kx, j]), vt)
                    bj = b.load(p, typ=vt, align=bv.dtype.itemsize)
                    b.store(em.intrinsic("fma", [xs, bj, b.load(acc, typ=vt)]), acc)
                at = bi + [i, j]
                vstore(k, epilogue(k, epi, b.load(acc, typ=vt), at, lanes), c, at)
            with em.loop(N, "tr", start=b.mul(full, ll.Constant(I64, lanes))) as j:
                b.store(ll.Constant(et, 0.0), one)
                with em.loop(K, "tq") as kx:      # FMAs in k order, as the vector lanes do
                    b.store(em.intrinsic("fma", [k.load(a, bi + [i, kx]),
                                                 k.load(bv, bi + [kx, j]),
                                                 b.load(one, typ=et)]), one)
                at = bi + [i, j]
                k.store(epilogue(k, epi, b.load(one, typ=et), at), c, at)


def _matmul_packed(k: Kernel, s: Step, a: View, bv: View, c: View, batch: tuple[DimLike, ...],
                   epi: Operand | None) -> None:
    """Float C = A @ B through the GEMM library's blocking driver (runtime/gemm.py ``driver``),
    which calls the epilogue back on each finished block of C (on several threads: after all
    of the product, over parts of its rows as tasks of the pool). The product goes to a
    scratch C first when C cannot hold it: the epilogue changes the dtype, or C overwrites one
    of the epilogue's inputs in place (the product would clobber that input before the
    epilogue reads it). The kernel keeps only the buffers, the driver's call and the epilogue,
    a function of its own (one copy of its code, whatever the thread count)."""
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
        size = b.mul(gemmdriver.scratch_elements(b, dt, M, K, N, k.cg.threads),
                     ll.Constant(I64, dt.itemsize))
        size = b.and_(b.add(size, ll.Constant(I64, 127)), ll.Constant(I64, -64))
        scratch = b.call(alloc, [align, size])
        ok = b.and_(ok, b.icmp_unsigned("!=", scratch, null))
    zero = ll.Constant(I64, 0)
    lanes = blk.lanes
    vt = ll.VectorType(et, lanes)
    extents = [k.dim(d) for d in batch]

    def rows(kr: Kernel, i0: ll.Value, mc: ll.Value, j0: ll.Value, nc: ll.Value,
             at: ll.Value, ld: ll.Value, bj: list) -> None:
        """The epilogue over C[i0:i0+mc, j0:j0+nc] (kernel ``kr``, batch index ``bj``), the
        product read from ``at`` (its element [i0, j0])."""
        kb, ke = kr.b, kr.em
        with ke.loop(mc, "ei") as r:
            i = kb.add(i0, r)
            row = kb.gep(at, [kb.mul(r, ld)], source_etype=et)
            nvec = kb.sdiv(nc, ll.Constant(I64, lanes))
            with ke.loop(nvec, "ev") as vj:
                dj = kb.mul(vj, ll.Constant(I64, lanes))
                j = kb.add(j0, dj)
                acc = kb.load(kb.gep(row, [dj], source_etype=et), typ=vt, align=dt.itemsize)
                vstore(kr, epilogue(kr, epi, acc, bj + [i, j], lanes), c, bj + [i, j])
            with ke.loop(nc, "es", start=kb.mul(nvec, ll.Constant(I64, lanes))) as dj:
                j = kb.add(j0, dj)
                acc = kb.load(kb.gep(row, [dj], source_etype=et), typ=et)
                kr.store(epilogue(kr, epi, acc, bj + [i, j]), c, bj + [i, j])

    epi_fn: ll.Value = null
    ctx: ll.Value = null
    ctx_args: list[ll.Value] = []
    if epi is not None or separate:
        # the epilogue of a block (on several threads, of a part of all rows), outlined:
        # ``(kernel args.., batch index.., i0, mc, j0, nc, at, ld, lo, hi)``, which the driver
        # calls through ``on_block(ctx, i0, ..)``, the rest of its arguments read from ctx
        block_args = [I64] * 4 + [PTR, I64]
        sub, ctx_args = k.outline("epilogue", [I64] * len(batch) + block_args)
        nb = len(batch)
        xs = list(sub.fn.args[-2 - nb - 6:-2])
        i0, mc, j0, nc, at, ld = xs[nb:]
        if isinstance(n, int) and n <= blk.nc:
            # one column block, whatever the thread count: constant bounds for LLVM
            j0, nc = zero, ll.Constant(I64, n)
        rows(sub, i0, mc, j0, nc, at, ld, xs[:nb])
        assert sub.code is None, "an epilogue has no error of its own to return"
        sub.finish()
        epi_fn, ctx = _on_block(module, sub.fn, ctx_args, nb, k)
    with b.if_then(ok, likely=True), k.unless_empty(c.shape), em.loop_nest(extents, "mb") as bi:
        def base(v: View) -> ll.Value:
            return b.gep(k.ptr(v.buf), [k.index(v, bi + [zero, zero])], source_etype=et)
        if ctx_args:
            for i, x in enumerate(bi):
                b.store(x, b.gep(ctx, [ll.Constant(I32, 0),
                                       ll.Constant(I32, len(ctx_args) + i)]))
        flags = gemmdriver.ACCUMULATE if accumulate else 0
        cp = base(c)
        b.call(gemmdriver.driver(module, dt),
               [M, K, N, base(a), k.dim(a.strides[-2]), k.dim(a.strides[-1]), base(bv),
                k.dim(bv.strides[-2]), k.dim(bv.strides[-1]), cp, N, packed, scratch,
                ll.Constant(I64, k.cg.threads), ll.Constant(I64, flags), epi_fn, ctx])
    with b.if_then(b.icmp_unsigned("!=", packed, null)):
        b.call(free, [packed])
    if separate:
        with b.if_then(b.icmp_unsigned("!=", scratch, null)):
            b.call(free, [scratch])
    k.code = b.select(ok, ll.Constant(I32, 0), ll.Constant(I32, (ERR_ALLOC << 24) | k.tag))


def _on_block(module: ll.Module, fn: ll.Function, args: list[ll.Value], nb: int, k: Kernel
              ) -> tuple[ll.Function, ll.Value]:
    """``void on_block(ctx, i0, mc, j0, nc, at, ld)`` (gemmdriver.EPILOGUE) calling the outlined
    epilogue ``fn`` with the rest of its arguments from ``ctx``, and that ctx: a stack struct
    of ``args`` (stored here, at the kernel's position) and ``nb`` batch indices (stored by
    the caller, in its batch loop)."""
    fields = [PTR if isinstance(x.type, ll.PointerType) else x.type for x in args] + [I64] * nb
    st = ll.LiteralStructType(fields)
    ctx = k.em.alloca_entry(st, "epi.ctx")
    for i, x in enumerate(args):
        k.b.store(x, k.b.gep(ctx, [ll.Constant(I32, 0), ll.Constant(I32, i)]))
    tramp = ll.Function(module, gemmdriver.EPILOGUE, module.get_unique_name(f"{fn.name}.call"))
    tramp.linkage = "internal"
    c, i0, mc, j0, nc, at, ld = tramp.args
    tb = ll.IRBuilder(tramp.append_basic_block("entry"))
    vals = [tb.load(tb.gep(c, [ll.Constant(I32, 0), ll.Constant(I32, i)], source_etype=st),
                    typ=ty) for i, ty in enumerate(fields)]
    tb.call(fn, vals + [i0, mc, j0, nc, at, ld, ll.Constant(I64, 0), ll.Constant(I64, 0)])
    tb.ret_void()
    return tramp, ctx


def _adds_to_output(k: Kernel, epi: Operand, c: View, dt: DType) -> bool:
    """Whether the epilogue is ``product + x`` with x the very elements C is (a running sum
    overwritten in place, as gradient accumulation does): then C += A @ B needs no scratch."""
    if not isinstance(epi, Lazy) or c.dtype != dt or not (
            epi.value.op == "add" or registry.has(epi.value.op, registry.ACCUMULATES)):
        return False
    if len(epi.args) != 2 or not any(isinstance(a, Acc) for a in epi.args):
        return False
    x = next((a for a in epi.args if not isinstance(a, Acc)), None)   # None: product + product
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
    with em.loop(rows[1], "mi", start=rows[0]) as i, em.loop(blocks, "mb") as blk:
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
    with em.loop(M, "mi") as i, em.loop(Nn, "mj") as j:
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
