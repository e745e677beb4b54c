"""The exported driver of an entry point: reads the argument block, checks run-time bounds, places
every buffer in the caller's arena (one per model and thread, so concurrent calls share nothing)
at the plan's offsets, runs the step kernels in order and writes the results.

Two forms, the same behaviour. The *direct* driver emits one call (and error check) per step.
The *table* driver emits one call site per distinct kernel function and walks a constant table
of the steps (callee, step tag, buffer and offset numbers), with the bounds checks, the
buffers' addresses and the distinct dim expressions (polynomials in the run-time dims) as
tables too: an unrolled loop then costs LLVM its distinct kernels plus data, not its steps.
``TABLE_MIN_CALLS`` chooses between them by the number of calls (and the table needs kernels
that repeat: at least two calls per distinct kernel function)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import llvmlite.ir as ll
import numpy as np

from graphc.ir.types import Dim, DimLike, dim_mul
from graphc.runtime.emit import I1, I32, I64, PTR, Emitter
from graphc.runtime.errcodes import ERR_BOUNDS
from graphc.runtime.kernel import Call, DimEval

I8 = ll.IntType(8)
# calls (steps, result copies, argument checks) from which an entry gets the table driver: the
# direct one costs ~0.3 ms of LLVM time per call, the table one ~8 ms more for its loops (issue
# 12: an unrolled RNN's 1,982 calls went from ~1.1 s to ~0.2 s, an MLP's 39 stay direct)
TABLE_MIN_CALLS = 100

# buffer address modes of the table driver
_NONE, _BLOCK, _WS, _RESULT = 0, 1, 2, 3


class _Driver:
    """What both forms share: the function, its argument block and the run-time dims."""

    def __init__(self, cg: Any):
        self.cg = cg
        self.plan = plan = cg.plan
        # with flush_denormals the exported symbol is a wrapper that sets the mode around
        # this driver (runtime/fpmode.py), so the driver itself is internal
        name = f"{cg.entry}.body" if cg.flush else cg.entry
        fn = self.fn = ll.Function(cg.shared.drivers, ll.FunctionType(I32, [PTR]), name)
        if cg.flush:
            fn.linkage = "internal"
        # the driver only computes addresses and calls kernels: LLVM's optimiser (and its
        # instruction selector) would spend more on it than it could save at run time.
        # optnone gives it the cheapest pipeline.
        fn.attributes.add("noinline")
        fn.attributes.add("optnone")
        self.entry = fn.append_basic_block("entry")
        start = fn.append_basic_block("start")
        self.b = ll.IRBuilder(start)
        self.em = Emitter(self.b)
        self.block = fn.args[0]
        self.n_params = n_params = len(plan.func.params)
        self.n_results = n_results = len(plan.func.results)
        self.params = [self.arg(k) for k in range(n_params)]
        self.outs = [self.arg(n_params + r) for r in range(n_results)]
        self.dims = DimEval(self.entry, self.arg(n_params + n_results), plan.symbols)
        self.direct = self.arg(n_params + n_results + 1)   # a byte per result: in place?
        self.ws = self.arg(n_params + n_results + 2)

    def arg(self, k: int, ty: ll.Type = PTR) -> ll.Value:
        eb = ll.IRBuilder(self.entry)
        return eb.load(eb.gep(self.block, [ll.Constant(I64, k)], source_etype=PTR), typ=ty)

    def fail_if(self, bad: ll.Value, code: ll.Value) -> None:
        b = self.b
        err = self.fn.append_basic_block("fail")
        ok = self.fn.append_basic_block("ok")
        b.cbranch(bad, err, ok)
        b.position_at_end(err)
        b.ret(code)
        b.position_at_end(ok)

    def bit(self, r: ll.Value | int) -> ll.Value:
        b = self.b
        r = ll.Constant(I64, r) if isinstance(r, int) else r
        flag = b.load(b.gep(self.direct, [r], source_etype=I8), typ=I8)
        return b.icmp_unsigned("!=", flag, ll.Constant(I8, 0))

    def nbytes(self, buf: int) -> ll.Value:
        bf = self.plan.buffers[buf]
        return self.dims.get(dim_mul(bf.size, bf.dtype.itemsize))

    def finish(self, copies: Sequence[Call | None], ptr: Any) -> ll.Function:
        """Results staged in the workspace copied out (``ptr(buf)``: its address), return 0."""
        b = self.b
        for r, ((src, own), k) in enumerate(zip(self.plan.results, copies)):
            if k is None:
                with b.if_then(b.not_(self.bit(r))):
                    self.em.intrinsic("memcpy", [self.outs[r], ptr(own), self.nbytes(own),
                                                 ll.Constant(I1, 0)],
                                      ret=ll.VoidType(), over=[PTR, PTR, I64])
        b.ret(ll.Constant(I32, 0))
        ll.IRBuilder(self.entry).branch(self.fn.blocks[1])
        return self.fn


def use_table(calls: Sequence[Call]) -> bool:
    """Whether a driver of ``calls`` takes the table form: many calls, and kernels that repeat
    (a debug build shares no kernel, so its table would hold a call site per step)."""
    return len(calls) >= TABLE_MIN_CALLS and 2 * len({c.fn.name for c in calls}) <= len(calls)


def emit_driver(cg: Any, steps: Sequence[Call], copies: Sequence[Call | None],
                arg_checks: Sequence[Call]) -> ll.Function:
    """``cg``: the runtime/codegen.py Codegen whose plan and modules this driver serves."""
    # copies out of views and params last: an in-place result may overwrite a param they read
    calls = list(arg_checks) + list(steps) + [k for k in copies if k is not None]
    if use_table(calls):
        return _emit_table(_Driver(cg), calls, copies)
    return _emit_direct(_Driver(cg), calls, copies)


def _emit_direct(d: _Driver, calls: Sequence[Call], copies: Sequence[Call | None]
                 ) -> ll.Function:
    plan, b, dims = d.plan, d.b, d.dims
    for ci, c in enumerate(plan.checks):
        x = dims.get(c.x)
        bad = b.icmp_signed("<", x, dims.get(c.lo))
        if c.hi is not None:
            bad = b.or_(bad, b.icmp_signed(">", x, dims.get(c.hi)))
        d.fail_if(bad, ll.Constant(I32, (ERR_BOUNDS << 24) | ci))
    ptrs: dict[int, ll.Value] = {}
    for bi, bf in enumerate(plan.buffers):
        if bf.kind == "param":
            ptrs[bi] = d.params[bf.index]
        elif bf.kind == "output":
            ptrs[bi] = d.outs[bf.index]
        elif bf.kind == "slot":
            ptrs[bi] = b.gep(d.ws, [dims.get(plan.offsets[bi])], source_etype=I8)
        elif bf.kind == "result":
            p = b.gep(d.ws, [dims.get(plan.stage[bi])], source_etype=I8)
            ptrs[bi] = b.select(d.bit(bf.index), d.outs[bf.index], p)
    for c in calls:
        rc = b.call(d.cg.shared.callee(c.fn), [dims.dims_ptr] + [ptrs[x] for x in c.bufs]
                    + [dims.get(o) for o in c.offsets])
        # a shared kernel's codes carry index 0: the call adds its own (a no-op on the
        # codes of a kernel made for this call alone, which carry it already)
        d.fail_if(b.icmp_signed("!=", rc, ll.Constant(I32, 0)),
                  b.or_(rc, ll.Constant(I32, c.tag)) if c.tag else rc)
    return d.finish(copies, ptrs.__getitem__)


class _Values:
    """The distinct dim expressions a table driver uses, numbered: value k is the constant
    ``consts[k]`` plus its symbolic terms (``terms``: (k, monomial number, coefficient))."""

    def __init__(self) -> None:
        self.index: dict[DimLike, int] = {}
        self.consts: list[int] = []
        self.terms: list[tuple[int, int, int]] = []
        self.monos: dict[tuple[str, ...], int] = {}

    def __call__(self, d: DimLike) -> int:
        k = self.index.get(d)
        if k is None:
            k = self.index[d] = len(self.consts)
            if isinstance(d, int):
                self.consts.append(d)
            else:
                const = 0
                for mono, coef in d.terms:
                    if not mono:
                        const += coef
                    else:
                        m = self.monos.setdefault(tuple(mono), len(self.monos))
                        self.terms.append((k, m, coef))
                self.consts.append(const)
        return k


def _table(d: _Driver, name: str, rows: np.ndarray) -> ll.GlobalVariable:
    """``rows`` (a numpy array) as a constant global of the driver's module."""
    data = np.ascontiguousarray(rows)
    ty = ll.ArrayType(I8, max(data.nbytes, 1))
    g = ll.GlobalVariable(d.fn.module, ty, f"{d.fn.name}.{name}")
    g.global_constant = True
    g.linkage = "internal"
    g.align = 8
    g.initializer = ll.Constant(ty, bytearray(data.tobytes() or b"\0"))
    return g


def _emit_table(d: _Driver, calls: Sequence[Call], copies: Sequence[Call | None]
                ) -> ll.Function:
    plan, b, fn = d.plan, d.b, d.fn
    vals = _Values()
    vals(0)                     # value 0 is 0: what a buffer outside the workspace points past
    checks = [(vals(c.x), vals(c.lo), vals(c.hi) if c.hi is not None else -1)
              for c in plan.checks]
    # per buffer: (mode, block word, value of its workspace offset, result number)
    bufs = []
    for bf in plan.buffers:
        if bf.kind == "param":
            bufs.append((_BLOCK, bf.index, 0, 0))
        elif bf.kind == "output":
            bufs.append((_BLOCK, d.n_params + bf.index, 0, 0))
        elif bf.kind == "slot":
            bufs.append((_WS, 0, vals(plan.offsets[len(bufs)]), 0))
        elif bf.kind == "result":
            bufs.append((_RESULT, d.n_params + bf.index, vals(plan.stage[len(bufs)]), bf.index))
        else:
            bufs.append((_NONE, 0, 0, 0))
    callees: dict[str, int] = {}
    fns: list[tuple[ll.Function, int, int]] = []     # callee, its buffers, its offsets
    prog: list[int] = []
    for c in calls:
        if c.fn.name not in callees:
            callees[c.fn.name] = len(fns)
            fns.append((c.fn, len(c.bufs), len(c.offsets)))
        prog += [callees[c.fn.name], c.tag, *c.bufs, *(vals(o) for o in c.offsets)]

    def load(table: ll.Value, ty: ll.Type, i: ll.Value) -> ll.Value:
        return b.load(b.gep(table, [i], source_etype=ty), typ=ty)

    def count(n: int, name: str, body: Any) -> None:
        """``for i in range(n): body(i)`` (nothing emitted for n == 0)."""
        if n == 0:
            return
        i_ptr = eb.alloca(I64, name=f"{name}.i")
        b.store(ll.Constant(I64, 0), i_ptr)
        head = fn.append_basic_block(f"{name}.head")
        loop = fn.append_basic_block(f"{name}.body")
        done = fn.append_basic_block(f"{name}.done")
        b.branch(head)
        b.position_at_end(head)
        i = b.load(i_ptr, typ=I64)
        b.cbranch(b.icmp_signed("<", i, ll.Constant(I64, n)), loop, done)
        b.position_at_end(loop)
        body(i)
        b.store(b.add(i, ll.Constant(I64, 1)), i_ptr)
        b.branch(head)
        b.position_at_end(done)

    # the values: constants copied, then each symbolic term added (its monomial computed once)
    n_vals = len(vals.consts)
    eb = ll.IRBuilder(d.entry)          # allocas there: static, made once
    values = eb.alloca(I64, ll.Constant(I64, max(n_vals, 1)), name="values")
    consts = _table(d, "consts", np.array(vals.consts, np.int64))
    count(n_vals, "value", lambda i: b.store(load(consts, I64, i),
                                             b.gep(values, [i], source_etype=I64)))
    if vals.terms:
        monos = eb.alloca(I64, ll.Constant(I64, len(vals.monos)), name="monos")
        for mono, m in vals.monos.items():
            v = d.dims.get(Dim(((mono, 1),)))
            b.store(v, b.gep(monos, [ll.Constant(I64, m)], source_etype=I64))
        terms = _table(d, "terms", np.array([(k, m, c) for k, m, c in vals.terms], np.int64))

        def add_term(i: ll.Value) -> None:
            row = b.mul(i, ll.Constant(I64, 3))
            k = load(terms, I64, row)
            m = load(terms, I64, b.add(row, ll.Constant(I64, 1)))
            coef = load(terms, I64, b.add(row, ll.Constant(I64, 2)))
            at = b.gep(values, [k], source_etype=I64)
            b.store(b.add(b.load(at, typ=I64), b.mul(coef, load(monos, I64, m))), at)
        count(len(vals.terms), "term", add_term)

    def value(i: ll.Value) -> ll.Value:
        return load(values, I64, b.sext(i, I64) if i.type != I64 else i)

    if checks:
        ctab = _table(d, "checks", np.array(checks, np.int32))

        def check(i: ll.Value) -> None:
            row = b.mul(i, ll.Constant(I64, 3))
            x = value(load(ctab, I32, row))
            lo = value(load(ctab, I32, b.add(row, ll.Constant(I64, 1))))
            hi_k = load(ctab, I32, b.add(row, ll.Constant(I64, 2)))
            has_hi = b.icmp_signed(">=", hi_k, ll.Constant(I32, 0))
            hi = value(b.select(has_hi, hi_k, ll.Constant(I32, 0)))
            bad = b.or_(b.icmp_signed("<", x, lo),
                        b.and_(has_hi, b.icmp_signed(">", x, hi)))
            d.fail_if(bad, b.or_(ll.Constant(I32, ERR_BOUNDS << 24), b.trunc(i, I32)))
        count(len(checks), "check", check)

    # the buffers' addresses
    n_bufs = len(bufs)
    ptrs = eb.alloca(PTR, ll.Constant(I64, max(n_bufs, 1)), name="ptrs")
    if bufs:
        btab = _table(d, "buffers", np.array(bufs, np.int32))

        def address(i: ll.Value) -> None:
            row = b.mul(i, ll.Constant(I64, 4))
            mode = load(btab, I32, row)
            word = b.sext(load(btab, I32, b.add(row, ll.Constant(I64, 1))), I64)
            at = b.gep(d.ws, [value(load(btab, I32, b.add(row, ll.Constant(I64, 2))))],
                       source_etype=I8)
            given = b.load(b.gep(d.block, [word], source_etype=PTR), typ=PTR)
            r = b.sext(load(btab, I32, b.add(row, ll.Constant(I64, 3))), I64)
            result = b.icmp_signed("==", mode, ll.Constant(I32, _RESULT))
            given_mode = b.icmp_signed("==", mode, ll.Constant(I32, _BLOCK))
            # a result's flag is read only for a result (there may be no results at all)
            flag = fn.append_basic_block("flag")
            join = fn.append_basic_block("flag.done")
            here = b.block
            b.cbranch(result, flag, join)
            b.position_at_end(flag)
            direct = d.bit(r)
            b.branch(join)
            b.position_at_end(join)
            use_given = b.phi(I1)
            use_given.add_incoming(given_mode, here)
            use_given.add_incoming(direct, flag)
            b.store(b.select(use_given, given, at), b.gep(ptrs, [i], source_etype=PTR))
        count(n_bufs, "buf", address)

    # the steps: one call site per distinct callee, its arguments read from the table
    if prog:
        ptab = _table(d, "steps", np.array(prog, np.int32))
        pc_ptr = eb.alloca(I64, name="pc")
        b.store(ll.Constant(I64, 0), pc_ptr)
        head = fn.append_basic_block("step.head")
        dispatch = fn.append_basic_block("step.dispatch")
        done = fn.append_basic_block("steps.done")
        b.branch(head)
        b.position_at_end(head)
        pc = b.load(pc_ptr, typ=I64)
        b.cbranch(b.icmp_signed("<", pc, ll.Constant(I64, len(prog))), dispatch, done)
        b.position_at_end(dispatch)
        tag = load(ptab, I32, b.add(pc, ll.Constant(I64, 1)))
        switch = b.switch(load(ptab, I32, pc), done)
        for n, (f, nb, no) in enumerate(fns):
            case = fn.append_basic_block(f"call{n}")
            switch.add_case(ll.Constant(I32, n), case)
            b.position_at_end(case)
            words = [load(ptab, I32, b.add(pc, ll.Constant(I64, 2 + j))) for j in range(nb + no)]
            args = [d.dims.dims_ptr]
            args += [load(ptrs, PTR, b.sext(w, I64)) for w in words[:nb]]
            args += [value(w) for w in words[nb:]]
            rc = b.call(d.cg.shared.callee(f), args)
            # a shared kernel's codes carry index 0: the call adds its step's (a no-op on the
            # codes of a kernel made for this call alone, which carry it already)
            d.fail_if(b.icmp_signed("!=", rc, ll.Constant(I32, 0)), b.or_(rc, tag))
            b.store(b.add(pc, ll.Constant(I64, 2 + len(words))), pc_ptr)
            b.branch(head)
        b.position_at_end(done)
    return d.finish(copies, lambda buf: load(ptrs, PTR, ll.Constant(I64, buf)))
