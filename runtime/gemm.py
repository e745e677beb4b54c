"""Fast float matmul, BLIS-style: B is packed into ``KC x NR`` micro-panels (zero-padded, so
every transposed or strided layout of B costs one copy and nothing after), A is read in place
through its two strides (row-major A and the ``Aᵀ`` that backward needs are both walked along
contiguous memory), and an ``MR x NR`` register tile of C accumulates with broadcast FMAs.

The inner loops (``macro``, ``pack_b``, one per dtype and tile) and the blocking loops around
them (``driver``, runtime/gemmdriver.py) are functions of the GEMM library (runtime/gemmlib.py);
a matmul kernel only calls the driver and passes its fused epilogue as a function pointer, which
the driver calls on each finished ``MC x NC`` block of C while the block is still in cache. Few
rows (up to SMALL_M, or DIRECT_M when A is unit-stride along k) skip packing and read
unit-stride B rows directly: there, packing would cost more than the product. On several
threads (``pool``), a product with more rows than a row block runs all row blocks of a k block
as one region's tasks and its epilogue after all of it, as tasks too; a smaller one splits
each block's column panels. The task split depends on the shapes only, so every thread count
gives bitwise the same result."""
from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import llvmlite.ir as ll

from graphc.ir.types import DType
from graphc.runtime.emit import I1, I64, PTR, Emitter, reg_type
from graphc.runtime.pool import parallel_for


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
DIRECT_KC = 1024    # ... of which one up to this deep, of more than DEEP_M rows, is one k
DEEP_M = 8          # block (gemmdriver.driver)


def i64c(v: int) -> ll.Constant:
    return ll.Constant(I64, v)


def imin(b: ll.IRBuilder, x: ll.Value, y: ll.Value) -> ll.Value:
    return b.select(b.icmp_signed("<", x, y), x, y)


def ceil_div(b: ll.IRBuilder, x: ll.Value, d: int) -> ll.Value:
    return b.sdiv(b.add(x, i64c(d - 1)), i64c(d))


def elem_at(b: ll.IRBuilder, p: ll.Value, i: ll.Value, et: ll.Type) -> ll.Value:
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


def shared_fn(module: ll.Module, name: str, args: Sequence[ll.Type]
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
    fn, new = shared_fn(module, f"graphc.gemm.pack_b.{dtype.name}", [I64, I64, PTR, I64, I64, PTR,
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
    with em.loop(b.sdiv(b.add(nc, b.sub(nr, i64c(1))), nr), "jp") as jp:
        j0 = b.mul(jp, nr)
        width = imin(b, nr, b.sub(nc, j0))
        panel = elem_at(b, dst, b.mul(jp, b.mul(kc, nr)), et)
        fast = b.and_(b.icmp_signed("==", csb, i64c(1)), b.icmp_signed("==", width, nr))
        with b.if_else(fast) as (then, otherwise):
            with then, em.loop(kc, "pk") as kx:
                row = elem_at(b, src, b.add(b.mul(kx, rsb), j0), et)
                out = elem_at(b, panel, b.mul(kx, nr), et)
                with em.loop(b.sdiv(nr, i64c(lanes)), "pv") as v:
                    at = b.mul(v, i64c(lanes))
                    x = b.load(elem_at(b, row, at, et), typ=vt, align=dtype.itemsize)
                    b.store(x, elem_at(b, out, at, et), align=lanes * dtype.itemsize)
            with otherwise:
                with b.if_then(b.icmp_signed("<", width, nr)):      # an edge panel: zeros
                    nbytes = b.mul(b.mul(kc, nr), i64c(dtype.itemsize))
                    em.intrinsic("memset", [panel, ll.Constant(ll.IntType(8), 0), nbytes,
                                            ll.Constant(I1, 0)],
                                 ret=ll.VoidType(), over=[PTR, I64])
                # Bᵀ (unit stride down the columns), full panels: ``lanes`` x ``lanes``
                # blocks, each loaded as ``lanes`` column vectors and transposed in registers
                # (element by element, the stores ``nr`` apart cost 2-3x as much)
                tr = b.and_(b.icmp_signed("==", rsb, i64c(1)), b.icmp_signed("==", width, nr))
                kfull = b.select(tr, b.mul(b.sdiv(kc, i64c(lanes)), i64c(lanes)), i64c(0))
                with em.loop(b.sdiv(kfull, i64c(lanes)), "tk") as kb:
                    k0 = b.mul(kb, i64c(lanes))
                    with em.loop(b.sdiv(nr, i64c(lanes)), "tg") as g:
                        c0 = b.mul(g, i64c(lanes))
                        cols = elem_at(b, src, b.add(b.mul(b.add(j0, c0), csb), k0), et)
                        vs = [b.load(elem_at(b, cols, b.mul(i64c(j), csb), et), typ=vt,
                                     align=dtype.itemsize) for j in range(lanes)]
                        out = elem_at(b, panel, b.add(b.mul(k0, nr), c0), et)
                        for r, v in enumerate(_transpose(b, vs)):
                            b.store(v, elem_at(b, out, b.mul(i64c(r), nr), et),
                                    align=lanes * dtype.itemsize)
                with em.loop(width, "pj") as j:      # the rest, element by element
                    col = elem_at(b, src, b.mul(b.add(j0, j), csb), et)
                    with em.loop(kc, "pk", start=kfull) as kx:
                        x = b.load(elem_at(b, col, b.mul(kx, rsb), et), typ=et)
                        b.store(x, elem_at(b, panel, b.add(b.mul(kx, nr), j), et))
    b.ret_void()
    return fn


def pack_a(module: ll.Module, dtype: DType) -> ll.Function:
    """``pack_a(mc, kc, A, rsa, csa, dst)``: A[:mc, :kc] row-major into ``dst`` (rows kc
    apart), for an A strided along k (the Aᵀ of a weight gradient ``xᵀ @ d``): the macro-kernel
    then walks it as it walks a plain A. Read in place, such an A ran at 55-75% of the speed
    of a row-major one (every k step of a tile touched a new cache line of each row)."""
    fn, new = shared_fn(module, f"graphc.gemm.pack_a.{dtype.name}", PACK_A_ARGS)
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
    full = b.select(b.icmp_signed("==", rsa, i64c(1)), b.sdiv(mc, i64c(lanes)), i64c(0))
    kfull = b.mul(b.sdiv(kc, i64c(lanes)), i64c(lanes))
    with em.loop(full, "ab") as ib:
        i0 = b.mul(ib, i64c(lanes))
        with em.loop(b.sdiv(kc, i64c(lanes)), "kb") as kb:
            k0 = b.mul(kb, i64c(lanes))
            vs = [b.load(elem_at(b, src, b.add(i0, b.mul(b.add(k0, i64c(r)), csa)), et), typ=vt,
                         align=dtype.itemsize) for r in range(lanes)]
            for i, v in enumerate(_transpose(b, vs)):
                b.store(v, elem_at(b, dst, b.add(b.mul(b.add(i0, i64c(i)), kc), k0), et),
                        align=dtype.itemsize)
    # the last columns of those rows (kc not a multiple of lanes), as a loop of its own: a
    # constant-length loop here is fully unrolled by O3 into seconds of compile time
    with em.loop(b.mul(full, i64c(lanes)), "ar") as i, em.loop(kc, "ak", start=kfull) as kx:
        x = b.load(elem_at(b, src, b.add(i, b.mul(kx, csa)), et), typ=et)
        b.store(x, elem_at(b, dst, b.add(b.mul(i, kc), kx), et))
    with em.loop(mc, "ai", start=b.mul(full, i64c(lanes))) as i:
        row = elem_at(b, src, b.mul(i, rsa), et)
        out = elem_at(b, dst, b.mul(i, kc), et)
        with em.loop(kc, "ak") as kx:
            b.store(b.load(elem_at(b, row, b.mul(kx, csa), et), typ=et), elem_at(b, out, kx, et))
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
    fn, new = pool_task(module, f"graphc.gemm.pack_a_task.{dtype.name}.{mc_}", PACK_A_ARGS)
    if new is None:
        return fn
    b, (m, kc, src, rsa, csa, dst), t = new
    et = reg_type(dtype)
    i0 = b.mul(t, i64c(mc_))
    b.call(pack_a(module, dtype), [imin(b, i64c(mc_), b.sub(m, i0)), kc,
                                   elem_at(b, src, b.mul(i0, rsa), et), rsa, csa,
                                   elem_at(b, dst, b.mul(i0, kc), et)])
    b.ret_void()
    return fn


MACRO_ARGS = [I64, I64, I64, PTR, I64, I64, PTR, I64, I64, PTR, I64, I1, I64, I64]


def macro(module: ll.Module, dtype: DType, blk: Blocking) -> ll.Function:
    """``macro(mc, nc, kc, A, rsa, csa, Bp, ldbp, panel, C, ldc, first, jr0, jr1)``:
    C[:mc, jr0*NR : jr1*NR] (clipped to nc) = (or += unless ``first``) A[:mc, :kc] @ B, where
    B's column panel jr starts at ``Bp + jr*panel`` with rows ``ldbp`` apart (packed: ldbp =
    NR, panel = kc*NR; in place: ldbp = B's row stride, panel = NR). A last tile of fewer
    rows ends at row mc-1 and stores only its own rows; with fewer than MR rows in all, rows
    past mc repeat row mc-1 (never outside A). Columns past nc are not stored."""
    fn, new = shared_fn(module, f"graphc.gemm.macro.{dtype.name}.{blk.mr}x{blk.nr}", MACRO_ARGS)
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
        j0 = b.mul(jr, i64c(nr))
        ncols = imin(b, i64c(nr), b.sub(nc, j0))
        bp = elem_at(b, Bp, b.mul(jr, panel), et)
        with em.loop(ceil_div(b, mc, mr_), "ir") as ir:
            i0 = b.mul(ir, i64c(mr_))
            nrows = imin(b, i64c(mr_), b.sub(mc, i0))
            # a last tile of fewer rows is shifted up to end at row mc-1 (it recomputes rows
            # of the tile before and stores only its own): every tile then reads mr rows
            # rsa apart, and LLVM addresses them from one pointer instead of keeping mr
            # pointers (8 on AVX-512, half of them spilled and reloaded every k step; +1-3%)
            shifted = b.icmp_signed(">=", mc, i64c(mr_))
            top = b.select(shifted, imin(b, i0, b.sub(mc, i64c(mr_))), i0)
            shift = b.sub(i0, top)
            for row in accs:
                for slot in row:
                    b.store(zeros, slot)
            # the tile of C on its way to L1 while the k loop runs: C is written (and after
            # the first k block read) only after it, and a big C has left the caches by then
            ctile = elem_at(b, C, b.add(b.mul(i0, ldc), j0), et)
            i32 = ll.IntType(32)
            for r in range(mr_):
                crow = elem_at(b, ctile, b.mul(i64c(r), ldc), et)
                for off in sorted({0, nr - 1}):
                    em.intrinsic("prefetch", [elem_at(b, crow, i64c(off), et), ll.Constant(i32, 1),
                                              ll.Constant(i32, 3), ll.Constant(i32, 1)],
                                 ret=ll.VoidType(), over=[PTR])

            def k_loop(rows: list[ll.Value]) -> None:
                with em.loop(kc, "k") as kx:
                    bk = elem_at(b, bp, b.mul(kx, ldbp), et)
                    bvecs = [b.load(elem_at(b, bk, i64c(v * lanes), et), typ=vt,
                                    align=dtype.itemsize) for v in range(nv)]
                    koff = b.mul(kx, csa)
                    for r in range(mr_):
                        x = _splat(b, b.load(elem_at(b, rows[r], koff, et), typ=et), lanes)
                        for v in range(nv):
                            acc = b.load(accs[r][v], typ=vt)
                            b.store(em.intrinsic("fma", [x, bvecs[v], acc]), accs[r][v])

            with b.if_else(shifted) as (tiles, few_rows):
                with tiles:
                    k_loop([elem_at(b, A, b.mul(b.add(top, i64c(r)), rsa), et)
                            for r in range(mr_)])
                with few_rows:      # fewer than mr rows in all: the last one repeats
                    last = b.sub(mc, i64c(1))
                    k_loop([elem_at(b, A, b.mul(imin(b, i64c(r), last), rsa), et)
                            for r in range(mr_)])
            full = b.and_(b.icmp_signed("==", nrows, i64c(mr_)),
                          b.icmp_signed("==", ncols, i64c(nr)))
            with b.if_else(full) as (whole, edge):
                # (a branch, not a select: the first k block never reads C)
                with whole, b.if_else(first) as (set_, add):
                    for branch, adds in ((set_, False), (add, True)):
                        with branch:
                            for r in range(mr_):
                                crow = elem_at(b, ctile, b.mul(i64c(r), ldc), et)
                                for v in range(nv):
                                    p = elem_at(b, crow, i64c(v * lanes), et)
                                    acc = b.load(accs[r][v], typ=vt)
                                    if adds:
                                        old = b.load(p, typ=vt, align=dtype.itemsize)
                                        acc = b.fadd(old, acc)
                                    b.store(acc, p, align=dtype.itemsize)
                with edge:
                    for r in range(mr_):
                        for v in range(nv):
                            b.store(b.load(accs[r][v], typ=vt),
                                    b.gep(tile, [i64c(0), i64c(r * nv + v)]), align=64)
                    with em.loop(nrows, "er") as r:
                        crow = elem_at(b, ctile, b.mul(r, ldc), et)
                        trow = b.mul(b.add(r, shift), i64c(nr))
                        with em.loop(ncols, "ec") as j:
                            p = elem_at(b, crow, j, et)
                            acc = b.load(b.gep(tile_s, [i64c(0), b.add(trow, j)]), typ=et)
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
# ... and one of at most SMALL_M rows (the small and one-row tiles): at 1 << 19 the MLP's
# products with its 256 x 256 weight at batch 8 were split, and its step ran 0.85-0.9x as fast
# on 2 threads as on 1 (the weight's update, a thin loop, runs on one core); now on one
PARALLEL_MACS_FEW = 1 << 20


def _field(b: ll.IRBuilder, ctx: ll.Value, fields: Sequence[ll.Type], i: int) -> ll.Value:
    """The address of field ``i`` of ``ctx``, a struct of ``fields``."""
    i32 = ll.IntType(32)
    return b.gep(ctx, [ll.Constant(i32, 0), ll.Constant(i32, i)],
                 source_etype=ll.LiteralStructType(fields))


def pool_task(module: ll.Module, name: str, fields: Sequence[ll.Type]
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


def spawn(em: Emitter, task_fn: ll.Function, fields: Sequence[ll.Type],
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
    fn, new = pool_task(module, f"graphc.gemm.task.{dtype.name}.{blk.mr}x{blk.nr}", MACRO_ARGS)
    if new is None:
        return fn
    b, args, t = new
    jr = b.add(args[12], t)
    b.call(macro(module, dtype, blk), args[:12] + [jr, b.add(jr, i64c(1))])
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
    fn, new = pool_task(module, f"graphc.gemm.rows_task.{dtype.name}.{blk.mr}x{blk.nr}",
                    ROWS_ARGS)
    if new is None:
        return fn
    b, args, t = new
    m, panels, group = args[0], args[12], args[13]
    runs = b.udiv(b.add(panels, b.sub(group, i64c(1))), group)
    ic, jr = b.udiv(t, runs), b.mul(b.urem(t, runs), group)
    i0 = b.mul(ic, i64c(blk.mc))
    et = elem_type(dtype)
    a = elem_at(b, args[3], b.mul(i0, args[4]), et)
    c = elem_at(b, args[9], b.mul(i0, args[10]), et)
    b.call(macro(module, dtype, blk), [imin(b, i64c(blk.mc), b.sub(m, i0))] + args[1:3] + [a]
           + args[4:9] + [c] + args[10:12] + [jr, imin(b, b.add(jr, group), panels)])
    b.ret_void()
    return fn


PACK_ARGS = [I64, I64, PTR, I64, I64, PTR, I64]
PARALLEL_PACK = 1 << 15    # elements of B worth packing on several threads


def pack_task(module: ll.Module, dtype: DType, lanes: int) -> ll.Function:
    """``pack_task(ctx, t)``: panel t of the ``pack_b`` call whose arguments ``ctx`` holds."""
    fn, new = pool_task(module, f"graphc.gemm.pack_task.{dtype.name}", PACK_ARGS)
    if new is None:
        return fn
    b, (kc, nc, src, rsb, csb, dst, nr), t = new
    et = reg_type(dtype)
    j0 = b.mul(t, nr)
    b.call(pack_b(module, dtype, lanes), [kc, imin(b, nr, b.sub(nc, j0)),
                                          elem_at(b, src, b.mul(j0, csb), et), rsb, csb,
                                          elem_at(b, dst, b.mul(t, b.mul(kc, nr)), et), nr])
    b.ret_void()
    return fn


def elem_type(dtype: DType) -> ll.Type:
    return reg_type(dtype)
