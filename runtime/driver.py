"""The exported driver of an entry point: reads the argument block, checks run-time bounds,
allocates one 64-byte-aligned workspace for this call (so concurrent calls share nothing),
runs the step kernels in order, writes the results and frees the workspace."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import llvmlite.ir as ir

from ir.types import dim_mul
from runtime.emit import I1, I32, I64, PTR, Emitter
from runtime.plan import ERR_ALLOC, ERR_BOUNDS

if TYPE_CHECKING:
    from runtime.codegen import Codegen, Kernel

ALIGN = 64


def _decl(module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    fn = module.globals.get(name)
    return fn if fn is not None else ir.Function(module, ir.FunctionType(ret, args), name)


def emit_driver(cg: Codegen, steps: Sequence[Kernel], copies: Sequence[Kernel | None],
                arg_checks: Sequence[Kernel]) -> ir.Function:
    from runtime.codegen import ENTRY, DimEval
    plan = cg.plan
    fn = ir.Function(cg.module, ir.FunctionType(I32, [PTR]), ENTRY)
    entry = fn.append_basic_block("entry")
    start = fn.append_basic_block("start")
    b = ir.IRBuilder(start)
    em = Emitter(b)
    block = fn.args[0]
    n_params = len(plan.func.params)
    n_results = len(plan.func.results)

    def arg(k: int, ty: ir.Type = PTR) -> ir.Value:
        eb = ir.IRBuilder(entry)
        return eb.load(eb.gep(block, [ir.Constant(I64, k)], source_etype=PTR), typ=ty)

    params = [arg(k) for k in range(n_params)]
    outs = [arg(n_params + r) for r in range(n_results)]
    dims = DimEval(entry, arg(n_params + n_results), plan.symbols)
    mask = arg(n_params + n_results + 1, I64)

    def fail_if(bad: ir.Value, code: ir.Value, ws: ir.Value | None = None) -> None:
        err = fn.append_basic_block("fail")
        ok = fn.append_basic_block("ok")
        b.cbranch(bad, err, ok)
        b.position_at_end(err)
        if ws is not None:
            b.call(free, [ws])
        b.ret(code)
        b.position_at_end(ok)

    for ci, c in enumerate(plan.checks):
        x = dims.get(c.x)
        bad = b.icmp_signed("<", x, dims.get(c.lo))
        if c.hi is not None:
            bad = b.or_(bad, b.icmp_signed(">", x, dims.get(c.hi)))
        fail_if(bad, ir.Constant(I32, (ERR_BOUNDS << 24) | ci))

    def nbytes(buf: int) -> ir.Value:
        bf = plan.buffers[buf]
        return dims.get(dim_mul(bf.size, bf.dtype.itemsize))

    def round_up(n: ir.Value) -> ir.Value:
        return b.and_(b.add(n, ir.Constant(I64, ALIGN - 1)), ir.Constant(I64, -ALIGN))

    regions: list[tuple[list[int], ir.Value]] = []
    for members in plan.slots:
        size: ir.Value = ir.Constant(I64, 0)
        for m in members:
            n = nbytes(m)
            size = b.select(b.icmp_signed(">", n, size), n, size)
        regions.append((members, size))
    for bi, bf in enumerate(plan.buffers):
        if bf.kind == "result":
            regions.append(([bi], nbytes(bi)))
    total: ir.Value = ir.Constant(I64, ALIGN)
    offsets: dict[int, ir.Value] = {}
    for members, size in regions:
        for m in members:
            offsets[m] = total
        total = b.add(total, round_up(size))
    alloc = _decl(cg.module, "aligned_alloc", PTR, [I64, I64])
    free = _decl(cg.module, "free", ir.VoidType(), [PTR])
    ws = b.call(alloc, [ir.Constant(I64, ALIGN), total], name="ws")
    fail_if(b.icmp_unsigned("==", ws, ir.Constant(PTR, None)), ir.Constant(I32, ERR_ALLOC << 24))

    def bit(r: int) -> ir.Value:
        v = b.and_(b.lshr(mask, ir.Constant(I64, r)), ir.Constant(I64, 1))
        return b.trunc(v, I1)

    ptrs: dict[int, ir.Value] = {}
    for bi, bf in enumerate(plan.buffers):
        if bf.kind == "param":
            ptrs[bi] = params[bf.index]
        elif bf.kind == "output":
            ptrs[bi] = outs[bf.index]
        elif bi in offsets:
            p = b.gep(ws, [offsets[bi]], source_etype=ir.IntType(8))
            ptrs[bi] = b.select(bit(bf.index), outs[bf.index], p) if bf.kind == "result" else p

    def run(k: Kernel) -> None:
        rc = b.call(k.fn, [dims.dims_ptr] + [ptrs[x] for x in k.bufs])
        fail_if(b.icmp_signed("!=", rc, ir.Constant(I32, 0)), rc, ws)

    for k in list(arg_checks) + list(steps):
        run(k)
    # copies out of views and params first: an in-place result may overwrite a param they read
    for k in copies:
        if k is not None:
            run(k)
    for r, ((src, own), k) in enumerate(zip(plan.results, copies)):
        if k is None:
            with b.if_then(b.not_(bit(r))):
                em.intrinsic("memcpy", [outs[r], ptrs[own], nbytes(own), ir.Constant(I1, 0)],
                             ret=ir.VoidType(), over=[PTR, PTR, I64])
    b.call(free, [ws])
    b.ret(ir.Constant(I32, 0))
    ir.IRBuilder(entry).branch(start)
    return fn
