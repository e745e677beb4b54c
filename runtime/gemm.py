"""Fast float matmul, BLIS-style: B is packed into ``KC x NR`` micro-panels (zero-padded, so
every transposed or strided layout of B costs one copy and nothing after), A is read in place
through its two strides (row-major A and the ``Aᵀ`` that backward needs are both walked along
contiguous memory), and an ``MR x NR`` register tile of C accumulates with broadcast FMAs.

The inner loops (``macro``, ``pack_b``, one per dtype and tile) and the blocking loops around
them (``driver``) are functions of the GEMM library (runtime/gemmlib.py); a matmul kernel
only calls the driver and passes its fused epilogue as a function pointer, which the driver
calls on each finished ``MC x NC`` block of C while the block is still in cache. Few rows (up
to SMALL_M, or DIRECT_M when A is unit-stride along k) skip packing and read unit-stride B
rows directly: there, packing would cost more than the product. On several threads
(``pool``), a product with more rows than a row block runs all row blocks of a k block as one
region's tasks and its epilogue after all of it, as tasks too (``driver``); a smaller one
splits each block's column panels. The task split depends on the shapes only, so every thread count
gives bitwise the same result."""
from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import llvmlite.ir as ll

from graphc.ir.types import DType
from graphc.runtime.emit import I1, I64, PTR, Emitter, reg_type
from graphc.runtime.pool import PARALLEL_WORK, TASK_WORK, parallel_for


@functools.cache
def vector_bytes() -> int:
    """The widest vector register the host has: 64 bytes with AVX-512, 32 with AVX2 (read
    from the host id, which a process that finds everything in the cache gets without LLVM)."""
    from graphc.runtime import jit
    features = set(jit.host_id().split("|")[2].split(","))
    if "+avx512f" in features:
        return 64
    if features & {"+avx2", "+avx"}:
        return 32
    return 16


@dataclass(frozen=True)
class Blocking:
    """Register tile (``mr`` rows x ``nv`` vectors of ``lanes``) and cache blocks: a
    ``kc x nr`` panel of packed B stays in L1 across a column of tiles, an ``mc x kc`` block
    of A and the ``kc x nc`` packed B in L2."""
    lanes: int
    mr: int
    nv: int
    kc: int
    mc: int
    nc: int

    @property
    def nr(self) -> int:
        return self.nv * self.lanes


def blocking(dtype: DType, rows: str = "big") -> Blocking:
    """The tile for ``rows``: "big" (many rows, packed B), "small" (2 to SMALL_M rows) or
    "one" (a single row: a wide strip of C in registers, B streamed row by row)."""
    lanes = vector_bytes() // dtype.itemsize
    regs = 32 if vector_bytes() == 64 else 16
    mr, nv = {"big": (8 if regs == 32 else 6, 2), "small": (4, 2), "one": (1, 8)}[rows]
    # KC: 320 where L1 holds 48 KiB (the packed B panel 40 KiB; measured faster than 256 on
    # 2 threads at 784 and 1024 deep, where one k block fewer is one pass over C fewer)
    kc = 320 if l1d_bytes() >= 48 << 10 else 256
    return Blocking(lanes=lanes, mr=mr, nv=nv, kc=kc, mc=128, nc=16 * lanes * 2)


@functools.cache
def l1d_bytes() -> int:
    """The host's L1 data cache (Linux sysfs; 32 KiB where it cannot be read)."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for index in sorted(os.listdir(base)):
            at = os.path.join(base, index)
            with open(os.path.join(at, "level")) as f1, open(os.path.join(at, "type")) as f2:
                if f1.read().strip() != "1" or f2.read().strip() not in ("Data", "Unified"):
                    continue
            with open(os.path.join(at, "size")) as f:
                text = f.read().strip().upper()
            scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
            return int(text.rstrip("KM")) * scale
    except (OSError, ValueError):
        pass
    return 32 << 10


SMALL_M = 16        # up to this many rows, B is read in place instead of packed (< MC)
DIRECT_M = 40       # ... and up to this many for an A unit-stride along k (<= MC)


def _c(v: int) -> ll.Constant:
    return ll.Constant(I64, v)


def _min(b: ll.IRBuilder, x: ll.Value, y: ll.Value) -> ll.Value:
    return b.select(b.icmp_signed("<", x, y), x, y)


def _ceil_div(b: ll.IRBuilder, x: ll.Value, d: int) -> ll.Value:
    return b.sdiv(b.add(x, _c(d - 1)), _c(d))


def _at(b: ll.IRBuilder, p: ll.Value, i: ll.Value, et: ll.Type) -> ll.Value:
    return b.gep(p, [i], source_etype=et)


def _splat(b: ll.IRBuilder, x: ll.Value, lanes: int) -> ll.Value:
    vt = ll.VectorType(x.type, lanes)
    one = b.insert_element(ll.Constant(vt, ll.Undefined), x, ll.Constant(ll.IntType(32), 0))
    return b.shuffle_vector(one, ll.Constant(vt, ll.Undefined),
                            ll.Constant(ll.VectorType(ll.IntType(32), lanes), [0] * lanes))


# A model's module only declares the shared functions below (the driver, macro-kernels,
# packing, their pool tasks): they are model-independent, so runtime/gemmlib.py compiles them
# once per host into a library (kept in the disk cache) that every model links against. LLVM
# optimising them again for every model was a fifth of an MLP's compile time.
LIBRARY = "graphc_gemm_library"      # attribute set on the library's own module


def is_library(module: ll.Module) -> bool:
    return bool(getattr(module, LIBRARY, False))


def _shared(module: ll.Module, name: str, args: Sequence[ll.Type]
            ) -> tuple[ll.Function, bool]:
    """The module's function ``name``, and whether it still needs a body (only in the
    library's module: elsewhere it is a declaration, linked to the library)."""
    fn = module.globals.get(name)
    if fn is not None:
        return fn, False
    fn = ll.Function(module, ll.FunctionType(ll.VoidType(), list(args)), name)
    if not is_library(module):
        return fn, False
    # never inlined into its callers, which would optimise it again in each
    fn.attributes.add("noinline")
    return fn, True


def pack_b(module: ll.Module, dtype: DType, lanes: int) -> ll.Function:
    """``pack_b(kc, nc, B, rsb, csb, dst, nr)``: B[:kc, :nc] into ceil(nc/nr) panels of
    ``kc x nr`` (row k of a panel = nr consecutive columns), columns past nc zero; nr is a
    multiple of ``lanes``. Unit-stride rows copy as vectors, unit-stride columns (the ``Bᵀ``
    that backward needs) as transposed blocks; any other layout goes column by column."""
    fn, new = _shared(module, f"graphc.gemm.pack_b.{dtype.name}", [I64, I64, PTR, I64, I64, PTR,
                                                                   I64])
    if not new:
        return fn
    kc, nc, src, rsb, csb, dst, nr = fn.args
    for a in (src, dst):
        a.add_attribute("noalias")
    et = reg_type(dtype)
    vt = ll.VectorType(et, lanes)
    b = ll.IRBuilder(fn.append_basic_block("entry"))
    em = Emitter(b)
    with em.loop(b.sdiv(b.add(nc, b.sub(nr, _c(1))), nr), "jp") as jp:
        j0 = b.mul(jp, nr)
        width = _min(b, nr, b.sub(nc, j0))
        panel = _at(b, dst, b.mul(jp, b.mul(kc, nr)), et)
        fast = b.and_(b.icmp_signed("==", csb, _c(1)), b.icmp_signed("==", width, nr))
        with b.if_else(fast) as (then, otherwise):
            with then, em.loop(kc, "pk") as kx:
                row = _at(b, src, b.add(b.mul(kx, rsb), j0), et)
                out = _at(b, panel, b.mul(kx, nr), et)
                with em.loop(b.sdiv(nr, _c(lanes)), "pv") as v:
                    at = b.mul(v, _c(lanes))
                    x = b.load(_at(b, row, at, et), typ=vt, align=dtype.itemsize)
                    b.store(x, _at(b, out, at, et), align=lanes * dtype.itemsize)
            with otherwise:
                with b.if_then(b.icmp_signed("<", width, nr)):      # an edge panel: zeros
                    nbytes = b.mul(b.mul(kc, nr), _c(dtype.itemsize))
                    em.intrinsic("memset", [panel, ll.Constant(ll.IntType(8), 0), nbytes,
                                            ll.Constant(I1, 0)],
                                 ret=ll.VoidType(), over=[PTR, I64])
                # Bᵀ (unit stride down the columns), full panels: ``lanes`` x ``lanes``
                # blocks, each loaded as ``lanes`` column vectors and transposed in registers
                # (element by element, the stores ``nr`` apart cost 2-3x as much)
                tr = b.and_(b.icmp_signed("==", rsb, _c(1)), b.icmp_signed("==", width, nr))
                kfull = b.select(tr, b.mul(b.sdiv(kc, _c(lanes)), _c(lanes)), _c(0))
                with em.loop(b.sdiv(kfull, _c(lanes)), "tk") as kb:
                    k0 = b.mul(kb, _c(lanes))
                    with em.loop(b.sdiv(nr, _c(lanes)), "tg") as g:
                        c0 = b.mul(g, _c(lanes))
                        cols = _at(b, src, b.add(b.mul(b.add(j0, c0), csb), k0), et)
                        vs = [b.load(_at(b, cols, b.mul(_c(j), csb), et), typ=vt,
                                     align=dtype.itemsize) for j in range(lanes)]
                        out = _at(b, panel, b.add(b.mul(k0, nr), c0), et)
                        for r, v in enumerate(_transpose(b, vs)):
                            b.store(v, _at(b, out, b.mul(_c(r), nr), et),
                                    align=lanes * dtype.itemsize)
                with em.loop(width, "pj") as j:      # the rest, element by element
                    col = _at(b, src, b.mul(b.add(j0, j), csb), et)
                    with em.loop(kc, "pk", start=kfull) as kx:
                        x = b.load(_at(b, col, b.mul(kx, rsb), et), typ=et)
                        b.store(x, _at(b, panel, b.add(b.mul(kx, nr), j), et))
    b.ret_void()
    return fn


def pack_a(module: ll.Module, dtype: DType) -> ll.Function:
    """``pack_a(mc, kc, A, rsa, csa, dst)``: A[:mc, :kc] row-major into ``dst`` (rows kc
    apart), for an A strided along k (the Aᵀ of a weight gradient ``xᵀ @ d``): the macro-kernel
    then walks it as it walks a plain A. Read in place, such an A ran at 55-75% of the speed
    of a row-major one (every k step of a tile touched a new cache line of each row)."""
    fn, new = _shared(module, f"graphc.gemm.pack_a.{dtype.name}", PACK_A_ARGS)
    if not new:
        return fn
    mc, kc, src, rsa, csa, dst = fn.args
    for a in (src, dst):
        a.add_attribute("noalias")
    et = reg_type(dtype)
    lanes = vector_bytes() // dtype.itemsize
    vt = ll.VectorType(et, lanes)
    b = ll.IRBuilder(fn.append_basic_block("entry"))
    em = Emitter(b)
    # Aᵀ (unit stride down the rows): ``lanes`` x ``lanes`` blocks, each loaded as ``lanes``
    # vectors (one k each), transposed in registers, stored as ``lanes`` contiguous runs of k
    full = b.select(b.icmp_signed("==", rsa, _c(1)), b.sdiv(mc, _c(lanes)), _c(0))
    kfull = b.mul(b.sdiv(kc, _c(lanes)), _c(lanes))
    with em.loop(full, "ab") as ib:
        i0 = b.mul(ib, _c(lanes))
        with em.loop(b.sdiv(kc, _c(lanes)), "kb") as kb:
            k0 = b.mul(kb, _c(lanes))
            vs = [b.load(_at(b, src, b.add(i0, b.mul(b.add(k0, _c(r)), csa)), et), typ=vt,
                         align=dtype.itemsize) for r in range(lanes)]
            for i, v in enumerate(_transpose(b, vs)):
                b.store(v, _at(b, dst, b.add(b.mul(b.add(i0, _c(i)), kc), k0), et),
                        align=dtype.itemsize)
    # the last columns of those rows (kc not a multiple of lanes), as a loop of its own: a
    # constant-length loop here is fully unrolled by O3 into seconds of compile time
    with em.loop(b.mul(full, _c(lanes)), "ar") as i, em.loop(kc, "ak", start=kfull) as kx:
        x = b.load(_at(b, src, b.add(i, b.mul(kx, csa)), et), typ=et)
        b.store(x, _at(b, dst, b.add(b.mul(i, kc), kx), et))
    with em.loop(mc, "ai", start=b.mul(full, _c(lanes))) as i:
        row = _at(b, src, b.mul(i, rsa), et)
        out = _at(b, dst, b.mul(i, kc), et)
        with em.loop(kc, "ak") as kx:
            b.store(b.load(_at(b, row, b.mul(kx, csa), et), typ=et), _at(b, out, kx, et))
    b.ret_void()
    return fn


def _transpose(b: ll.IRBuilder, rows: list[ll.Value]) -> list[ll.Value]:
    """The transpose of a square block held as vectors (row r = rows[r]), by log2(n) stages of
    swapping off-diagonal blocks of halving size (two-vector shuffles)."""
    n = len(rows)
    v = list(rows)
    s = n // 2
    while s >= 1:
        lo = [c if c & s == 0 else n + c - s for c in range(n)]
        hi = [c + s if c & s == 0 else n + c for c in range(n)]
        for j in range(n):
            if j & s == 0:
                a, c = v[j], v[j + s]
                v[j] = b.shuffle_vector(a, c, ll.Constant(ll.VectorType(ll.IntType(32), n), lo))
                v[j + s] = b.shuffle_vector(a, c,
                                            ll.Constant(ll.VectorType(ll.IntType(32), n), hi))
        s //= 2
    return v


PACK_A_ARGS = [I64, I64, PTR, I64, I64, PTR]
PACK_A_ROWS = 8192     # rows of A packed at once for one parallel region (8 MiB of f32)


def pack_a_task(module: ll.Module, dtype: DType, mc_: int) -> ll.Function:
    """``pack_a_task(ctx, t)``: row block t (``mc_`` rows) of the ``pack_a`` call whose
    arguments ``ctx`` holds (PACK_A_ARGS, mc = all the rows)."""
    fn, new = _task(module, f"graphc.gemm.pack_a_task.{dtype.name}.{mc_}", PACK_A_ARGS)
    if new is None:
        return fn
    b, (m, kc, src, rsa, csa, dst), t = new
    et = reg_type(dtype)
    i0 = b.mul(t, _c(mc_))
    b.call(pack_a(module, dtype), [_min(b, _c(mc_), b.sub(m, i0)), kc,
                                   _at(b, src, b.mul(i0, rsa), et), rsa, csa,
                                   _at(b, dst, b.mul(i0, kc), et)])
    b.ret_void()
    return fn


MACRO_ARGS = [I64, I64, I64, PTR, I64, I64, PTR, I64, I64, PTR, I64, I1, I64, I64]


def macro(module: ll.Module, dtype: DType, blk: Blocking) -> ll.Function:
    """``macro(mc, nc, kc, A, rsa, csa, Bp, ldbp, panel, C, ldc, first, jr0, jr1)``:
    C[:mc, jr0*NR : jr1*NR] (clipped to nc) = (or += unless ``first``) A[:mc, :kc] @ B, where
    B's column panel jr starts at ``Bp + jr*panel`` with rows ``ldbp`` apart (packed: ldbp =
    NR, panel = kc*NR; in place: ldbp = B's row stride, panel = NR). Rows past mc in the last
    tile repeat row mc-1 (never outside A); they and columns past nc are not stored."""
    fn, new = _shared(module, f"graphc.gemm.macro.{dtype.name}.{blk.mr}x{blk.nr}", MACRO_ARGS)
    if not new:
        return fn
    mc, nc, kc, A, rsa, csa, Bp, ldbp, panel, C, ldc, first, jr0, jr1 = fn.args
    for a in (A, Bp, C):
        a.add_attribute("noalias")
    et = reg_type(dtype)
    lanes, mr_, nv, nr = blk.lanes, blk.mr, blk.nv, blk.nr
    vt = ll.VectorType(et, lanes)
    b = ll.IRBuilder(fn.append_basic_block("entry"))
    em = Emitter(b)
    zeros = ll.Constant(vt, [ll.Constant(et, 0.0)] * lanes)
    accs = [[em.alloca_entry(vt, f"acc{r}.{v}") for v in range(nv)] for r in range(mr_)]
    tile = em.alloca_entry(ll.ArrayType(vt, mr_ * nv), "edge")    # an edge tile, staged
    tile.align = 64
    tile_s = b.bitcast(tile, ll.ArrayType(et, mr_ * nr).as_pointer())
    with em.loop(jr1, "jr", start=jr0) as jr:
        j0 = b.mul(jr, _c(nr))
        ncols = _min(b, _c(nr), b.sub(nc, j0))
        bp = _at(b, Bp, b.mul(jr, panel), et)
        with em.loop(_ceil_div(b, mc, mr_), "ir") as ir:
            i0 = b.mul(ir, _c(mr_))
            nrows = _min(b, _c(mr_), b.sub(mc, i0))
            last = b.sub(mc, _c(1))
            rows = [_at(b, A, b.mul(_min(b, b.add(i0, _c(r)), last), rsa), et)
                    for r in range(mr_)]
            for row in accs:
                for slot in row:
                    b.store(zeros, slot)
            # the tile of C on its way to L1 while the k loop runs: C is written (and after
            # the first k block read) only after it, and a big C has left the caches by then
            ctile = _at(b, C, b.add(b.mul(i0, ldc), j0), et)
            i32 = ll.IntType(32)
            for r in range(mr_):
                crow = _at(b, ctile, b.mul(_c(r), ldc), et)
                for off in sorted({0, nr - 1}):
                    em.intrinsic("prefetch", [_at(b, crow, _c(off), et), ll.Constant(i32, 1),
                                              ll.Constant(i32, 3), ll.Constant(i32, 1)],
                                 ret=ll.VoidType(), over=[PTR])
            with em.loop(kc, "k") as kx:
                bk = _at(b, bp, b.mul(kx, ldbp), et)
                bvecs = [b.load(_at(b, bk, _c(v * lanes), et), typ=vt, align=dtype.itemsize)
                         for v in range(nv)]
                koff = b.mul(kx, csa)
                for r in range(mr_):
                    x = _splat(b, b.load(_at(b, rows[r], koff, et), typ=et), lanes)
                    for v in range(nv):
                        acc = b.load(accs[r][v], typ=vt)
                        b.store(em.intrinsic("fma", [x, bvecs[v], acc]), accs[r][v])
            full = b.and_(b.icmp_signed("==", nrows, _c(mr_)), b.icmp_signed("==", ncols, _c(nr)))
            with b.if_else(full) as (whole, edge):
                # (a branch, not a select: the first k block never reads C)
                with whole, b.if_else(first) as (set_, add):
                    for branch, adds in ((set_, False), (add, True)):
                        with branch:
                            for r in range(mr_):
                                crow = _at(b, ctile, b.mul(_c(r), ldc), et)
                                for v in range(nv):
                                    p = _at(b, crow, _c(v * lanes), et)
                                    acc = b.load(accs[r][v], typ=vt)
                                    if adds:
                                        old = b.load(p, typ=vt, align=dtype.itemsize)
                                        acc = b.fadd(old, acc)
                                    b.store(acc, p, align=dtype.itemsize)
                with edge:
                    for r in range(mr_):
                        for v in range(nv):
                            b.store(b.load(accs[r][v], typ=vt),
                                    b.gep(tile, [_c(0), _c(r * nv + v)]), align=64)
                    with em.loop(nrows, "er") as r:
                        crow = _at(b, ctile, b.mul(r, ldc), et)
                        trow = b.mul(r, _c(nr))
                        with em.loop(ncols, "ec") as j:
                            p = _at(b, crow, j, et)
                            acc = b.load(b.gep(tile_s, [_c(0), b.add(trow, j)]), typ=et)
                            with b.if_else(first) as (set_, add):
                                with set_:
                                    b.store(acc, p)
                                with add:
                                    b.store(b.fadd(b.load(p, typ=et), acc), p)
    b.ret_void()
    return fn


def libc(module: ll.Module, name: str) -> ll.Function:
    """``aligned_alloc`` / ``free`` from the C library the process already has loaded."""
    fn = module.globals.get(name)
    if fn is None:
        ty = (ll.FunctionType(PTR, [I64, I64]) if name == "aligned_alloc"
              else ll.FunctionType(ll.VoidType(), [PTR]))
        fn = ll.Function(module, ty, name)
    return fn


def round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def packed_bytes(dtype: DType, blk: Blocking) -> int:
    return blk.kc * round_up(blk.nc, blk.nr) * dtype.itemsize


TASKS_PER_THREAD = 4       # a region's tasks per thread, at least, for an even split
PARALLEL_MACS = 1 << 19     # a macro-kernel call worth splitting over threads (~10 us of work)


def _field(b: ll.IRBuilder, ctx: ll.Value, fields: Sequence[ll.Type], i: int) -> ll.Value:
    """The address of field ``i`` of ``ctx``, a struct of ``fields``."""
    i32 = ll.IntType(32)
    return b.gep(ctx, [ll.Constant(i32, 0), ll.Constant(i32, i)],
                 source_etype=ll.LiteralStructType(fields))


def _task(module: ll.Module, name: str, fields: Sequence[ll.Type]
          ) -> tuple[ll.Function, tuple[ll.IRBuilder, list[ll.Value], ll.Value] | None]:
    """The module's task ``void name(ptr ctx, i64 t)`` for graphc_parallel_for, and, when it
    still needs a body, a builder in it with ``ctx``'s fields (a struct of ``fields``) loaded
    and ``t``."""
    fn = module.globals.get(name)
    if fn is not None:
        return fn, None
    fn = ll.Function(module, ll.FunctionType(ll.VoidType(), [PTR, I64]), name)
    if not is_library(module):
        return fn, None
    ctx, t = fn.args
    b = ll.IRBuilder(fn.append_basic_block("entry"))
    return fn, (b, [b.load(_field(b, ctx, fields, i), typ=ty) for i, ty in enumerate(fields)], t)


def _spawn(em: Emitter, task_fn: ll.Function, fields: Sequence[ll.Type],
           args: Sequence[ll.Value], ntasks: ll.Value, threads: ll.Value) -> None:
    """graphc_parallel_for(task_fn, ctx, ntasks) with ``args`` stored in a stack ``ctx``."""
    b = em.b
    ctx = em.alloca_entry(ll.LiteralStructType(fields), "task.ctx")
    i32 = ll.IntType(32)
    for i, a in enumerate(args):         # (the alloca is typed: its own type steps the gep)
        b.store(a, b.gep(ctx, [ll.Constant(i32, 0), ll.Constant(i32, i)]))
    b.call(parallel_for(em.module), [task_fn, ctx, ntasks, threads])


def task(module: ll.Module, dtype: DType, blk: Blocking) -> ll.Function:
    """``task(ctx, t)``: column panel ``jr0 + t`` of the macro-kernel call whose arguments
    ``ctx`` holds (a struct of MACRO_ARGS)."""
    fn, new = _task(module, f"graphc.gemm.task.{dtype.name}.{blk.mr}x{blk.nr}", MACRO_ARGS)
    if new is None:
        return fn
    b, args, t = new
    jr = b.add(args[12], t)
    b.call(macro(module, dtype, blk), args[:12] + [jr, b.add(jr, _c(1))])
    b.ret_void()
    return fn


# the macro-kernel's arguments for every row block at once: (m, nc, kc, A, rsa, csa, Bp, ldbp,
# panel, C, ldc, first, panels, group), A and C at row 0
ROWS_ARGS = MACRO_ARGS[:12] + [I64, I64]


def rows_task(module: ll.Module, dtype: DType, blk: Blocking) -> ll.Function:
    """``rows_task(ctx, t)``: ``group`` column panels (the t % ceil(panels / group)-th run of
    them) of row block t / ceil(panels / group) (MC rows) of the product whose arguments
    ``ctx`` holds (ROWS_ARGS): all of one k block's row blocks in one parallel region, so the
    threads meet once per k block, not once per row block."""
    fn, new = _task(module, f"graphc.gemm.rows_task.{dtype.name}.{blk.mr}x{blk.nr}",
                    ROWS_ARGS)
    if new is None:
        return fn
    b, args, t = new
    m, panels, group = args[0], args[12], args[13]
    runs = b.udiv(b.add(panels, b.sub(group, _c(1))), group)
    ic, jr = b.udiv(t, runs), b.mul(b.urem(t, runs), group)
    i0 = b.mul(ic, _c(blk.mc))
    et = _et(dtype)
    a = _at(b, args[3], b.mul(i0, args[4]), et)
    c = _at(b, args[9], b.mul(i0, args[10]), et)
    b.call(macro(module, dtype, blk), [_min(b, _c(blk.mc), b.sub(m, i0))] + args[1:3] + [a]
           + args[4:9] + [c] + args[10:12] + [jr, _min(b, b.add(jr, group), panels)])
    b.ret_void()
    return fn


PACK_ARGS = [I64, I64, PTR, I64, I64, PTR, I64]
PARALLEL_PACK = 1 << 15    # elements of B worth packing on several threads


def pack_task(module: ll.Module, dtype: DType, lanes: int) -> ll.Function:
    """``pack_task(ctx, t)``: panel t of the ``pack_b`` call whose arguments ``ctx`` holds."""
    fn, new = _task(module, f"graphc.gemm.pack_task.{dtype.name}", PACK_ARGS)
    if new is None:
        return fn
    b, (kc, nc, src, rsb, csb, dst, nr), t = new
    et = reg_type(dtype)
    j0 = b.mul(t, nr)
    b.call(pack_b(module, dtype, lanes), [kc, _min(b, nr, b.sub(nc, j0)),
                                          _at(b, src, b.mul(j0, csb), et), rsb, csb,
                                          _at(b, dst, b.mul(t, b.mul(kc, nr)), et), nr])
    b.ret_void()
    return fn


def scratch_elements(b: ll.IRBuilder, dtype: DType, m: ll.Value, k: ll.Value,
                     n: ll.Value, threads: int = 1) -> ll.Value:
    """Elements of the product's scratch: a block when k fits one k block (each block of C is
    then finished by one macro-kernel call and its epilogue runs right after, on the block
    while it is in cache), else all of C (blocks finish only at the last k block). On several
    threads always all of C: the row blocks of one k block run in one parallel region
    (``wide``), each writing its own rows of the scratch."""
    big = blocking(dtype)
    if threads > 1:
        return b.mul(m, n)
    return b.select(b.icmp_signed("<=", k, _c(big.kc)), _c(big.mc * big.nc), b.mul(m, n))


# the driver's arguments: (m, k, n, A, rsa, csa, B, rsb, csb, C, ldc, packed, scratch, threads,
# flags, epilogue, ctx); see ``driver``
DRIVER_ARGS = [I64, I64, I64, PTR, I64, I64, PTR, I64, I64, PTR, I64, PTR, PTR, I64, I64, PTR,
               PTR]
ACCUMULATE = 1              # flags: C holds an addend, the product is added to it
# the per-block epilogue a kernel passes: ``void epilogue(ctx, i0, mc, j0, nc, at, ld)``
EPILOGUE = ll.FunctionType(ll.VoidType(), [PTR, I64, I64, I64, I64, PTR, I64])


def driver(module: ll.Module, dtype: DType) -> ll.Function:
    """``driver(m, k, n, A, rsa, csa, B, rsb, csb, C, ldc, packed, scratch, threads, flags,
    epilogue, ctx)``: the blocking loops of one matmul C = A @ B (element strides; C's rows
    ``ldc`` apart), a library function that every matmul kernel calls (its ~450 instructions
    once per host, not once per kernel: they were most of an MLP's IR and machine-code time).
    ``packed`` is a ``packed_bytes`` buffer; ``scratch`` (or null) where the raw product goes
    when the epilogue cannot run in C (``scratch_elements``); ``flags`` & ACCUMULATE: C += A @
    B. ``epilogue`` (or null) runs on each finished block of C, its raw product at ``at``
    (element [i0, j0]) with rows ``ld`` apart; null: the caller runs its epilogue after all of
    the product (in the scratch, all of C on several threads, else in C). With ``threads`` > 1,
    a product with many rows runs all row blocks of a k block as tasks of the worker pool, a
    smaller one splits each block's column panels, and B (and a strided A) are packed on the
    pool too. Every choice is a branch on the arguments: which tile suits m, whether A is
    packed, the thread count."""
    fn, new = _shared(module, f"graphc.gemm.driver.{dtype.name}", DRIVER_ARGS)
    if not new:
        return fn
    (m, k, n, A, rsa, csa, B, rsb, csb, C, ldc_, packed, scratch, threads, flags, epi,
     ctx) = fn.args
    b = ll.IRBuilder(fn.append_basic_block("entry"))
    em = Emitter(b)
    big = blocking(dtype)
    kc_, mc_, nc_ = big.kc, big.mc, big.nc
    tiles = {name: blocking(dtype, name) for name in ("big", "small", "one")}
    assert all(big.nc % t.nr == 0 for t in tiles.values())
    fns = {name: macro(module, dtype, t) for name, t in tiles.items()}
    null = ll.Constant(PTR, None)
    multi = b.icmp_signed(">", threads, _c(1))
    pack = pack_b(module, dtype, big.lanes)

    def call(name: str, args: list[ll.Value]) -> None:
        work = b.mul(b.mul(args[0], args[1]), args[2])
        split_ = b.and_(multi, b.icmp_signed(">=", work, _c(PARALLEL_MACS)))
        with b.if_else(split_) as (split, alone):
            with split:
                _spawn(em, task(module, dtype, tiles[name]), MACRO_ARGS, args,
                       b.sub(args[13], args[12]), threads)
            with alone:
                b.call(fns[name], args)

    def pack_all(args: list[ll.Value]) -> None:
        """pack_b, its panels split over the threads when B is big enough."""
        size = b.mul(args[0], args[1])
        split_ = b.and_(multi, b.icmp_signed(">=", size, _c(PARALLEL_PACK)))
        with b.if_else(split_) as (split, alone):
            with split:
                panels = b.sdiv(b.add(args[1], b.sub(args[6], _c(1))), args[6])
                _spawn(em, pack_task(module, dtype, big.lanes), PACK_ARGS, args, panels,
                       threads)
            with alone:
                b.call(pack, args)

    def run(args: list[ll.Value]) -> None:
        """Call the macro-kernel whose tile suits ``m`` rows."""
        with b.if_else(b.icmp_signed(">", m, _c(SMALL_M))) as (large, few_):
            with large:
                call("big", args)
            with few_, b.if_else(b.icmp_signed("==", m, _c(1))) as (one, some_):
                with one:
                    call("one", args)
                with some_:
                    call("small", args)

    nr = b.select(b.icmp_signed("==", m, _c(1)), _c(tiles["one"].nr), _c(big.nr))
    blocks_k = b.select(b.icmp_signed(">", k, _c(0)), _ceil_div(b, k, kc_), _c(1))
    # k blocks of equal depth (784 = 4 x 196, not 3 x 256 + 16): a shallow last block pays a
    # whole pass over C (and a region's tasks) for little work
    kstep = b.sdiv(b.add(k, b.sub(blocks_k, _c(1))), blocks_k)
    et = _et(dtype)
    separate = b.icmp_unsigned("!=", scratch, null)
    blockwise = b.and_(b.icmp_signed("==", blocks_k, _c(1)), b.not_(multi))
    ld = b.select(blockwise, _c(nc_), n)
    accumulate = b.icmp_signed("!=", b.and_(flags, _c(ACCUMULATE)), _c(0))
    # an A strided along k, for the big tile, is packed row-major per row block (pack_a): one
    # row block's worth, or on several threads all of a k block's rows (up to PACK_A_ROWS).
    # On several threads an Aᵀ (unit stride down its rows) is read in place: its packing is
    # memory-bound (on 2 threads it took twice the CPU time it takes on one), while the
    # macro-kernel's own reads overlap its FMAs (784 x 2048 x 256: 226 GFLOP/s in place, 208
    # packed on 2 threads; on 1, 107 and 144)
    trans = b.and_(b.icmp_signed("!=", csa, _c(1)), b.icmp_signed(">", m, _c(SMALL_M)))
    trans = b.and_(trans, b.or_(b.not_(multi), b.icmp_signed("!=", rsa, _c(1))))
    all_rows = b.and_(multi, b.icmp_signed("<=", m, _c(PACK_A_ROWS)))
    rows_cap = b.select(all_rows, b.mul(_ceil_div(b, m, mc_), _c(mc_)), _c(mc_))
    slot = em.alloca_entry(PTR, "apacked")
    b.store(null, slot)
    with b.if_then(trans):
        b.store(b.call(libc(module, "aligned_alloc"),
                       [_c(64), b.mul(rows_cap, _c(kc_ * dtype.itemsize))]), slot)
    apacked = b.load(slot, typ=PTR)
    # without the memory, A is read where it is (slower, still right)
    trans = b.and_(trans, b.icmp_unsigned("!=", apacked, null))

    # B read in place (no packing) for few rows: up to SMALL_M always, up to DIRECT_M when A
    # is unit-stride along k (packing B costs K x N copies for M x K x N products)
    few = b.icmp_signed("<=", m, _c(SMALL_M))
    if DIRECT_M > SMALL_M:
        some = b.and_(b.icmp_signed("<=", m, _c(DIRECT_M)), b.icmp_signed("==", csa, _c(1)))
        few = b.or_(few, some)
    direct = b.and_(few, b.icmp_signed("==", csb, _c(1)))

    def product_at(i0: ll.Value, j0: ll.Value) -> tuple[ll.Value, ll.Value]:
        """Where the raw product of C[i0, j0] goes, and its row stride."""
        inc = _at(b, C, b.add(b.mul(i0, ldc_), j0), et)
        whole = _at(b, scratch, b.add(b.mul(i0, n), j0), et)
        return (b.select(separate, b.select(blockwise, scratch, whole), inc),
                b.select(separate, ld, ldc_))
    # decided once for the product (its first block's work)
    work = b.mul(b.mul(m, _min(b, n, _c(nc_))), kstep)
    wide = b.and_(multi, b.and_(b.icmp_signed(">", m, _c(max(SMALL_M, mc_))),
                                b.icmp_signed(">=", work, _c(PARALLEL_MACS))))
    wide = b.and_(wide, b.or_(b.not_(trans), all_rows))
    has_epi = b.icmp_unsigned("!=", epi, null)
    with em.loop(_ceil_div(b, n, nc_), "jc") as jc:
        j0 = b.mul(jc, _c(nc_))
        nc = _min(b, _c(nc_), b.sub(n, j0))
        with em.loop(blocks_k, "pc") as pc:
            p0 = b.mul(pc, kstep)
            kc = _min(b, kstep, b.sub(k, p0))
            first = b.and_(b.icmp_signed("==", pc, _c(0)), b.not_(accumulate))
            last = b.icmp_signed("==", pc, b.sub(blocks_k, _c(1)))
            a0 = _at(b, A, b.mul(p0, csa), et)
            b0 = _at(b, B, b.add(b.mul(p0, rsb), b.mul(j0, csb)), et)
            c0, ldc = product_at(_c(0), j0)
            with b.if_else(direct) as (in_place, packing):
                with in_place:          # few rows: B's full panels read where they are
                    full = b.sdiv(nc, nr)
                    run([m, nc, kc, a0, rsa, csa, b0, rsb, nr, c0, ldc, first, _c(0), full])
                    rest = b.sub(nc, b.mul(full, nr))
                    with b.if_then(b.icmp_signed(">", rest, _c(0))):
                        # the last columns, packed in the narrow panels of the small tile
                        off = b.mul(full, nr)
                        narrow = _c(tiles["small"].nr)
                        b.call(pack, [kc, rest, _at(b, b0, off, et), rsb, csb, packed, narrow])
                        b.call(fns["small"],
                               [m, rest, kc, a0, rsa, csa, packed, narrow,
                                b.mul(kc, narrow), _at(b, c0, off, et), ldc, first, _c(0),
                                b.sdiv(b.add(rest, b.sub(narrow, _c(1))), narrow)])
                with packing:
                    pack_all([kc, nc, b0, rsb, csb, packed, nr])
            # many row blocks of a big product on several threads: one parallel region for
            # all of them (a scratch is all of C then)
            with b.if_then(wide):
                blocks_i = _ceil_div(b, m, mc_)
                with b.if_then(trans):
                    _spawn(em, pack_a_task(module, dtype, mc_), PACK_A_ARGS,
                           [m, kc, a0, rsa, csa, apacked], blocks_i, threads)
                a_at = b.select(trans, apacked, a0)
                rsa_at = b.select(trans, kc, rsa)
                csa_at = b.select(trans, _c(1), csa)
                panels = b.sdiv(b.add(nc, b.sub(nr, _c(1))), nr)
                # a task is a run of ``group`` panels of one row block: all of them when
                # there are row blocks enough for TASKS_PER_THREAD each (one A block per
                # task, on one core), fewer when there are not
                want = b.mul(_c(TASKS_PER_THREAD), threads)
                runs = _min(b, panels, b.sdiv(b.add(want, b.sub(blocks_i, _c(1))), blocks_i))
                group = b.sdiv(b.add(panels, b.sub(runs, _c(1))), runs)
                runs = b.sdiv(b.add(panels, b.sub(group, _c(1))), group)
                _spawn(em, rows_task(module, dtype, big), ROWS_ARGS,
                       [m, nc, kc, a_at, rsa_at, csa_at, packed, nr, b.mul(kc, nr), c0,
                        ldc, first, panels, group], b.mul(blocks_i, runs), threads)
            # row blocks (one when direct: m <= DIRECT_M <= MC)
            with em.loop(_ceil_div(b, m, mc_), "ic") as ic:
                i0 = b.mul(ic, _c(mc_))
                mc = _min(b, _c(mc_), b.sub(m, i0))
                at, ldc = product_at(i0, j0)
                with b.if_then(b.not_(b.or_(direct, wide))):
                    panels = b.sdiv(b.add(nc, b.sub(nr, _c(1))), nr)
                    a_blk = _at(b, a0, b.mul(i0, rsa), et)
                    with b.if_then(trans):
                        b.call(pack_a(module, dtype), [mc, kc, a_blk, rsa, csa, apacked])
                    a_blk = b.select(trans, apacked, a_blk)
                    rsa_blk = b.select(trans, kc, rsa)
                    csa_blk = b.select(trans, _c(1), csa)
                    run([mc, nc, kc, a_blk, rsa_blk, csa_blk, packed, nr, b.mul(kc, nr), at,
                         ldc, first, _c(0), panels])
                with b.if_then(b.and_(b.and_(has_epi, last), b.not_(multi))):
                    b.call(_Indirect(epi, EPILOGUE), [ctx, i0, mc, j0, nc, at, ldc])
    with b.if_then(b.icmp_unsigned("!=", apacked, null)):
        b.call(libc(module, "free"), [apacked])
    with b.if_then(b.and_(has_epi, multi)):
        # on several threads, the epilogue runs after all of the product (in C, or in a
        # scratch of all of C), parts of its rows as tasks of the pool: no block's epilogue
        # waits on the calling thread alone
        whole = b.select(separate, scratch, C)
        ldw = b.select(separate, n, ldc_)
        width = b.select(b.icmp_signed(">", n, _c(1)), n, _c(1))
        chunk = b.sdiv(b.add(_c(TASK_WORK), b.sub(width, _c(1))), width)   # rows per task
        ntasks = b.sdiv(b.add(m, b.sub(chunk, _c(1))), chunk)
        split_ = b.and_(b.icmp_signed(">=", b.mul(m, n), _c(PARALLEL_WORK)),
                        b.icmp_signed(">", ntasks, _c(1)))
        with b.if_else(split_) as (split, alone):
            with split:
                _spawn(em, epilogue_task(module, dtype), EPI_TASK_ARGS,
                       [epi, ctx, whole, ldw, m, n, chunk], ntasks, threads)
            with alone:
                b.call(_Indirect(epi, EPILOGUE), [ctx, _c(0), m, _c(0), n, whole, ldw])
    b.ret_void()
    return fn


# the epilogue's rows as tasks: (epilogue, ctx, product, its row stride, m, n, rows per task)
EPI_TASK_ARGS = [PTR, PTR, PTR, I64, I64, I64, I64]


def epilogue_task(module: ll.Module, dtype: DType) -> ll.Function:
    """``epilogue_task(ctx, t)``: the epilogue (gemm.EPILOGUE) over rows t*chunk.. of all of
    the product, whose arguments ``ctx`` holds (EPI_TASK_ARGS)."""
    fn, new = _task(module, f"graphc.gemm.epilogue_task.{dtype.name}", EPI_TASK_ARGS)
    if new is None:
        return fn
    b, (epi, ctx, whole, ld, m, n, chunk), t = new
    lo = b.mul(t, chunk)
    hi = _min(b, b.add(lo, chunk), m)
    b.call(_Indirect(epi, EPILOGUE), [ctx, lo, b.sub(hi, lo), _c(0), n,
                                      _at(b, whole, b.mul(lo, ld), _et(dtype)), ld])
    b.ret_void()
    return fn


class _Indirect:
    """A function pointer as llvmlite's ``call`` takes it (an opaque ``ptr`` has no type of
    the function it points to)."""

    def __init__(self, value: ll.Value, fnty: ll.FunctionType) -> None:
        self.value, self.function_type, self.type = value, fnty, value.type

    def get_reference(self) -> str:
        return self.value.get_reference()


def _et(dtype: DType) -> ll.Type:
    return reg_type(dtype)
