"""The GEMM's blocking driver, a function of the GEMM library (runtime/gemmlib.py): the
cache-blocking loops around the packing and the micro-kernels of runtime/gemm.py, the split of a
product over the worker pool, and the call of a kernel's epilogue (a function pointer) on each
finished block of C, or after the whole product as row tasks on several threads. A model's
matmul kernel (runtime/matmul_kernels.py) only allocates its buffers and calls it."""
from __future__ import annotations

import llvmlite.ir as ll

from graphc.ir.types import DType
from graphc.runtime.emit import I64, PTR, Emitter
from graphc.runtime.gemm import (
    DEEP_M,
    DIRECT_KC,
    DIRECT_M,
    MACRO_ARGS,
    PACK_A_ARGS,
    PACK_A_ROWS,
    PACK_ARGS,
    PARALLEL_MACS,
    PARALLEL_MACS_FEW,
    PARALLEL_PACK,
    ROWS_ARGS,
    SMALL_M,
    TASKS_PER_THREAD,
    blocking,
    ceil_div,
    elem_at,
    elem_type,
    i64c,
    imin,
    libc,
    macro,
    pack_a,
    pack_a_task,
    pack_b,
    pack_task,
    pool_task,
    rows_task,
    shared_fn,
    spawn,
    task,
)
from graphc.runtime.pool import PARALLEL_WORK, TASK_WORK


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
    return b.select(b.icmp_signed("<=", k, i64c(big.kc)), i64c(big.mc * big.nc), b.mul(m, n))


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
    fn, new = shared_fn(module, f"graphc.gemm.driver.{dtype.name}", DRIVER_ARGS)
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
    multi = b.icmp_signed(">", threads, i64c(1))
    pack = pack_b(module, dtype, big.lanes)

    def call(name: str, args: list[ll.Value]) -> None:
        work = b.mul(b.mul(args[0], args[1]), args[2])
        split_ = b.and_(multi, b.icmp_signed(">=", work, i64c(
            PARALLEL_MACS if name == "big" else PARALLEL_MACS_FEW)))
        with b.if_else(split_) as (split, alone):
            with split:
                spawn(em, task(module, dtype, tiles[name]), MACRO_ARGS, args,
                       b.sub(args[13], args[12]), threads)
            with alone:
                b.call(fns[name], args)

    def pack_all(args: list[ll.Value]) -> None:
        """pack_b, its panels split over the threads when B is big enough."""
        size = b.mul(args[0], args[1])
        split_ = b.and_(multi, b.icmp_signed(">=", size, i64c(PARALLEL_PACK)))
        # ... and only for a product split too: else the one core that runs it reads every
        # panel the others packed (gh @ W2ᵀ at batch 8 on 2 threads)
        work = b.mul(b.mul(m, args[1]), args[0])
        least = b.select(b.icmp_signed(">", m, i64c(SMALL_M)), i64c(PARALLEL_MACS),
                         i64c(PARALLEL_MACS_FEW))
        split_ = b.and_(split_, b.icmp_signed(">=", work, least))
        with b.if_else(split_) as (split, alone):
            with split:
                panels = b.sdiv(b.add(args[1], b.sub(args[6], i64c(1))), args[6])
                spawn(em, pack_task(module, dtype, big.lanes), PACK_ARGS, args, panels,
                       threads)
            with alone:
                b.call(pack, args)

    def run(args: list[ll.Value]) -> None:
        """Call the macro-kernel whose tile suits ``m`` rows."""
        with b.if_else(b.icmp_signed(">", m, i64c(SMALL_M))) as (large, few_):
            with large:
                call("big", args)
            with few_, b.if_else(b.icmp_signed("==", m, i64c(1))) as (one, some_):
                with one:
                    call("one", args)
                with some_:
                    call("small", args)

    nr = b.select(b.icmp_signed("==", m, i64c(1)), i64c(tiles["one"].nr), i64c(big.nr))
    # B read in place (no packing) for few rows: up to SMALL_M always, up to DIRECT_M when A
    # is unit-stride along k (packing B costs K x N copies for M x K x N products)
    few = b.icmp_signed("<=", m, i64c(SMALL_M))
    if DIRECT_M > SMALL_M:
        some = b.and_(b.icmp_signed("<=", m, i64c(DIRECT_M)), b.icmp_signed("==", csa, i64c(1)))
        few = b.or_(few, some)
    direct = b.and_(few, b.icmp_signed("==", csb, i64c(1)))
    blocks_k = b.select(b.icmp_signed(">", k, i64c(0)), ceil_div(b, k, kc_), i64c(1))
    # a direct product of more than DEEP_M rows up to DIRECT_KC deep is one k block: its B
    # panels are read in place anyway (a panel that deep stays in L2 across the few row
    # tiles), and each k block is another pass over C and, on several threads, another
    # parallel region (x @ W1 of the MLP at batch 32: 4 regions of 196 deep, now 1 of 784;
    # at batch 16 the product is then big enough to split). Fewer rows keep KC: the one-row
    # tile measured slower with one deep block, and x @ W1 at batch 8, one block, would be
    # split, which made the step slower than on one thread (its update runs on one core)
    deep = b.and_(b.and_(direct, b.icmp_signed("<=", k, i64c(DIRECT_KC))),
                  b.icmp_signed(">", m, i64c(DEEP_M)))
    blocks_k = b.select(deep, i64c(1), blocks_k)
    # k blocks of equal depth (784 = 4 x 196, not 3 x 256 + 16): a shallow last block pays a
    # whole pass over C (and a region's tasks) for little work
    kstep = b.sdiv(b.add(k, b.sub(blocks_k, i64c(1))), blocks_k)
    et = elem_type(dtype)
    separate = b.icmp_unsigned("!=", scratch, null)
    blockwise = b.and_(b.icmp_signed("==", blocks_k, i64c(1)), b.not_(multi))
    # (a block's rows min(n, NC) apart: within the scratch whatever its size, all of C for a
    # product deeper than KC that is one k block here, being direct)
    ld = b.select(blockwise, imin(b, n, i64c(nc_)), n)
    accumulate = b.icmp_signed("!=", b.and_(flags, i64c(ACCUMULATE)), i64c(0))
    # an A strided along k, for the big tile, is packed row-major per row block (pack_a): one
    # row block's worth, or on several threads all of a k block's rows (up to PACK_A_ROWS).
    # On several threads an Aᵀ (unit stride down its rows) is read in place: its packing is
    # memory-bound (on 2 threads it took twice the CPU time it takes on one), while the
    # macro-kernel's own reads overlap its FMAs (784 x 2048 x 256: 226 GFLOP/s in place, 208
    # packed on 2 threads; on 1, 107 and 144)
    trans = b.and_(b.icmp_signed("!=", csa, i64c(1)), b.icmp_signed(">", m, i64c(SMALL_M)))
    trans = b.and_(trans, b.or_(b.not_(multi), b.icmp_signed("!=", rsa, i64c(1))))
    all_rows = b.and_(multi, b.icmp_signed("<=", m, i64c(PACK_A_ROWS)))
    rows_cap = b.select(all_rows, b.mul(ceil_div(b, m, mc_), i64c(mc_)), i64c(mc_))
    slot = em.alloca_entry(PTR, "apacked")
    b.store(null, slot)
    with b.if_then(trans):
        b.store(b.call(libc(module, "aligned_alloc"),
                       [i64c(64), b.mul(rows_cap, i64c(kc_ * dtype.itemsize))]), slot)
    apacked = b.load(slot, typ=PTR)
    # without the memory, A is read where it is (slower, still right)
    trans = b.and_(trans, b.icmp_unsigned("!=", apacked, null))

    def product_at(i0: ll.Value, j0: ll.Value) -> tuple[ll.Value, ll.Value]:
        """Where the raw product of C[i0, j0] goes, and its row stride."""
        inc = elem_at(b, C, b.add(b.mul(i0, ldc_), j0), et)
        whole = elem_at(b, scratch, b.add(b.mul(i0, n), j0), et)
        return (b.select(separate, b.select(blockwise, scratch, whole), inc),
                b.select(separate, ld, ldc_))
    # decided once for the product (its first block's work)
    work = b.mul(b.mul(m, imin(b, n, i64c(nc_))), kstep)
    wide = b.and_(multi, b.and_(b.icmp_signed(">", m, i64c(max(SMALL_M, mc_))),
                                b.icmp_signed(">=", work, i64c(PARALLEL_MACS))))
    wide = b.and_(wide, b.or_(b.not_(trans), all_rows))
    has_epi = b.icmp_unsigned("!=", epi, null)
    with em.loop(ceil_div(b, n, nc_), "jc") as jc:
        j0 = b.mul(jc, i64c(nc_))
        nc = imin(b, i64c(nc_), b.sub(n, j0))
        with em.loop(blocks_k, "pc") as pc:
            p0 = b.mul(pc, kstep)
            kc = imin(b, kstep, b.sub(k, p0))
            first = b.and_(b.icmp_signed("==", pc, i64c(0)), b.not_(accumulate))
            last = b.icmp_signed("==", pc, b.sub(blocks_k, i64c(1)))
            a0 = elem_at(b, A, b.mul(p0, csa), et)
            b0 = elem_at(b, B, b.add(b.mul(p0, rsb), b.mul(j0, csb)), et)
            c0, ldc = product_at(i64c(0), j0)
            with b.if_else(direct) as (in_place, packing):
                with in_place:          # few rows: B's full panels read where they are
                    full = b.sdiv(nc, nr)
                    run([m, nc, kc, a0, rsa, csa, b0, rsb, nr, c0, ldc, first, i64c(0), full])
                    rest = b.sub(nc, b.mul(full, nr))
                    with b.if_then(b.icmp_signed(">", rest, i64c(0))):
                        # the last columns, packed in the narrow panels of the small tile
                        off = b.mul(full, nr)
                        narrow = i64c(tiles["small"].nr)
                        b.call(pack, [kc, rest, elem_at(b, b0, off, et), rsb, csb, packed, narrow])
                        b.call(fns["small"],
                               [m, rest, kc, a0, rsa, csa, packed, narrow,
                                b.mul(kc, narrow), elem_at(b, c0, off, et), ldc, first, i64c(0),
                                b.sdiv(b.add(rest, b.sub(narrow, i64c(1))), narrow)])
                with packing:
                    pack_all([kc, nc, b0, rsb, csb, packed, nr])
            # many row blocks of a big product on several threads: one parallel region for
            # all of them (a scratch is all of C then)
            with b.if_then(wide):
                blocks_i = ceil_div(b, m, mc_)
                with b.if_then(trans):
                    spawn(em, pack_a_task(module, dtype, mc_), PACK_A_ARGS,
                           [m, kc, a0, rsa, csa, apacked], blocks_i, threads)
                a_at = b.select(trans, apacked, a0)
                rsa_at = b.select(trans, kc, rsa)
                csa_at = b.select(trans, i64c(1), csa)
                panels = b.sdiv(b.add(nc, b.sub(nr, i64c(1))), nr)
                # a task is a run of ``group`` panels of one row block: all of them when
                # there are row blocks enough for TASKS_PER_THREAD each (one A block per
                # task, on one core), fewer when there are not
                want = b.mul(i64c(TASKS_PER_THREAD), threads)
                runs = imin(b, panels, b.sdiv(b.add(want, b.sub(blocks_i, i64c(1))), blocks_i))
                group = b.sdiv(b.add(panels, b.sub(runs, i64c(1))), runs)
                runs = b.sdiv(b.add(panels, b.sub(group, i64c(1))), group)
                spawn(em, rows_task(module, dtype, big), ROWS_ARGS,
                       [m, nc, kc, a_at, rsa_at, csa_at, packed, nr, b.mul(kc, nr), c0,
                        ldc, first, panels, group], b.mul(blocks_i, runs), threads)
            # row blocks (one when direct: m <= DIRECT_M <= MC)
            with em.loop(ceil_div(b, m, mc_), "ic") as ic:
                i0 = b.mul(ic, i64c(mc_))
                mc = imin(b, i64c(mc_), b.sub(m, i0))
                at, ldc = product_at(i0, j0)
                with b.if_then(b.not_(b.or_(direct, wide))):
                    panels = b.sdiv(b.add(nc, b.sub(nr, i64c(1))), nr)
                    a_blk = elem_at(b, a0, b.mul(i0, rsa), et)
                    with b.if_then(trans):
                        b.call(pack_a(module, dtype), [mc, kc, a_blk, rsa, csa, apacked])
                    a_blk = b.select(trans, apacked, a_blk)
                    rsa_blk = b.select(trans, kc, rsa)
                    csa_blk = b.select(trans, i64c(1), csa)
                    run([mc, nc, kc, a_blk, rsa_blk, csa_blk, packed, nr, b.mul(kc, nr), at,
                         ldc, first, i64c(0), panels])
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
        width = b.select(b.icmp_signed(">", n, i64c(1)), n, i64c(1))
        chunk = b.sdiv(b.add(i64c(TASK_WORK), b.sub(width, i64c(1))), width)   # rows per task
        ntasks = b.sdiv(b.add(m, b.sub(chunk, i64c(1))), chunk)
        split_ = b.and_(b.icmp_signed(">=", b.mul(m, n), i64c(PARALLEL_WORK)),
                        b.icmp_signed(">", ntasks, i64c(1)))
        with b.if_else(split_) as (split, alone):
            with split:
                spawn(em, epilogue_task(module, dtype), EPI_TASK_ARGS,
                       [epi, ctx, whole, ldw, m, n, chunk], ntasks, threads)
            with alone:
                b.call(_Indirect(epi, EPILOGUE), [ctx, i64c(0), m, i64c(0), n, whole, ldw])
    b.ret_void()
    return fn


# the epilogue's rows as tasks: (epilogue, ctx, product, its row stride, m, n, rows per task)
EPI_TASK_ARGS = [PTR, PTR, PTR, I64, I64, I64, I64]


def epilogue_task(module: ll.Module, dtype: DType) -> ll.Function:
    """``epilogue_task(ctx, t)``: the epilogue (gemm.EPILOGUE) over rows t*chunk.. of all of
    the product, whose arguments ``ctx`` holds (EPI_TASK_ARGS)."""
    fn, new = pool_task(module, f"graphc.gemm.epilogue_task.{dtype.name}", EPI_TASK_ARGS)
    if new is None:
        return fn
    b, (epi, ctx, whole, ld, m, n, chunk), t = new
    lo = b.mul(t, chunk)
    hi = imin(b, b.add(lo, chunk), m)
    b.call(_Indirect(epi, EPILOGUE), [ctx, lo, b.sub(hi, lo), i64c(0), n,
                                      elem_at(b, whole, b.mul(lo, ld), elem_type(dtype)), ld])
    b.ret_void()
    return fn


class _Indirect:
    """A function pointer as llvmlite's ``call`` takes it (an opaque ``ptr`` has no type of
    the function it points to)."""

    def __init__(self, value: ll.Value, fnty: ll.FunctionType) -> None:
        self.value, self.function_type, self.type = value, fnty, value.type

    def get_reference(self) -> str:
        return self.value.get_reference()
