"""The exported driver of an entry point: reads the argument block, checks run-time bounds, places
every buffer in the caller's arena (one per model and thread, so concurrent calls share nothing)
at the plan's offsets, runs the step kernels in order and writes the results."""
from __future__ import annotations

from typing import Any, Sequence

import llvmlite.ir as ll

from graphc.ir.types import dim_mul
from graphc.runtime.emit import I1, I32, I64, PTR, Emitter
from graphc.runtime.errcodes import ERR_BOUNDS
from graphc.runtime.kernel import Call, DimEval


def emit_driver(cg: Any, steps: Sequence[Call], copies: Sequence[Call | None],
                arg_checks: Sequence[Call]) -> ll.Function:
    """``cg``: the runtime/codegen.py Codegen whose plan and modules this driver serves."""
    plan = cg.plan
    fn = ll.Function(cg.shared.drivers, ll.FunctionType(I32, [PTR]), cg.entry)
    # the driver only computes addresses and calls kernels, once per step: LLVM's optimiser
    # (and its instruction selector) would spend more on it, for an unrolled loop's thousands
    # of calls, than it could save at run time. optnone gives it the cheapest pipeline.
    fn.attributes.add("noinline")
    fn.attributes.add("optnone")
    entry = fn.append_basic_block("entry")
    start = fn.append_basic_block("start")
    b = ll.IRBuilder(start)
    em = Emitter(b)
    block = fn.args[0]
    n_params = len(plan.func.params)
    n_results = len(plan.func.results)

    def arg(k: int, ty: ll.Type = PTR) -> ll.Value:
        eb = ll.IRBuilder(entry)
        return eb.load(eb.gep(block, [ll.Constant(I64, k)], source_etype=PTR), typ=ty)

    params = [arg(k) for k in range(n_params)]
    outs = [arg(n_params + r) for r in range(n_results)]
    dims = DimEval(entry, arg(n_params + n_results), plan.symbols)
    direct = arg(n_params + n_results + 1)     # one byte per result: written in place?
    ws = arg(n_params + n_results + 2)

    def fail_if(bad: ll.Value, code: ll.Value) -> None:
        err = fn.append_basic_block("fail")
        ok = fn.append_basic_block("ok")
        b.cbranch(bad, err, ok)
        b.position_at_end(err)
        b.ret(code)
        b.position_at_end(ok)

    for ci, c in enumerate(plan.checks):
        x = dims.get(c.x)
        bad = b.icmp_signed("<", x, dims.get(c.lo))
        if c.hi is not None:
            bad = b.or_(bad, b.icmp_signed(">", x, dims.get(c.hi)))
        fail_if(bad, ll.Constant(I32, (ERR_BOUNDS << 24) | ci))

    def nbytes(buf: int) -> ll.Value:
        bf = plan.buffers[buf]
        return dims.get(dim_mul(bf.size, bf.dtype.itemsize))

    def bit(r: int) -> ll.Value:
        flag = b.load(b.gep(direct, [ll.Constant(I64, r)], source_etype=ll.IntType(8)),
                      typ=ll.IntType(8))
        return b.icmp_unsigned("!=", flag, ll.Constant(ll.IntType(8), 0))

    ptrs: dict[int, ll.Value] = {}
    for bi, bf in enumerate(plan.buffers):
        if bf.kind == "param":
            ptrs[bi] = params[bf.index]
        elif bf.kind == "output":
            ptrs[bi] = outs[bf.index]
        elif bf.kind == "slot":
            ptrs[bi] = b.gep(ws, [dims.get(plan.offsets[bi])], source_etype=ll.IntType(8))
        elif bf.kind == "result":
            p = b.gep(ws, [dims.get(plan.stage[bi])], source_etype=ll.IntType(8))
            ptrs[bi] = b.select(bit(bf.index), outs[bf.index], p)

    def run(c: Call) -> None:
        rc = b.call(cg.shared.callee(c.fn), [dims.dims_ptr] + [ptrs[x] for x in c.bufs]
                    + [dims.get(o) for o in c.offsets])
        # a shared kernel's codes carry index 0: the call adds its own (a no-op on the
        # codes of a kernel made for this call alone, which carry it already)
        fail_if(b.icmp_signed("!=", rc, ll.Constant(I32, 0)),
                b.or_(rc, ll.Constant(I32, c.tag)) if c.tag else rc)

    for k in list(arg_checks) + list(steps):
        run(k)
    # copies out of views and params first: an in-place result may overwrite a param they read
    for k in copies:
        if k is not None:
            run(k)
    for r, ((src, own), k) in enumerate(zip(plan.results, copies)):
        if k is None:
            with b.if_then(b.not_(bit(r))):
                em.intrinsic("memcpy", [outs[r], ptrs[own], nbytes(own), ll.Constant(I1, 0)],
                             ret=ll.VoidType(), over=[PTR, PTR, I64])
    b.ret(ll.Constant(I32, 0))
    ll.IRBuilder(entry).branch(start)
    return fn
