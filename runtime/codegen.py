"""Func -> LLVM module: one function per distinct step (its buffers ``noalias``, so loops
vectorise without run-time alias checks; identical steps share it, runtime/dedup.py) and one
exported driver that checks slice bounds, takes a workspace, runs every step in order and writes
the results: one native call per entry point. ``build_model`` puts the kernels of all entry
points in one module, so forward, backward and the step compile a kernel they share once.

Driver ABI: ``i32 graphc_entry(ptr args)`` (``graphc_entry.<name>`` in a model's module), ``args`` = [param ptrs.., output ptrs.., dims ptr,
direct flags ptr, workspace ptr]; byte k of the flags says output k may be written directly
(else it is staged in the workspace and copied at the end). ``dims`` holds one i64 per symbol,
then DETAIL_WORDS words where a failing kernel describes its error."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import llvmlite.ir as ll

from graphc.ir.ops import registry
from graphc.ir.types import DimLike, DType, dim_mul
from graphc.runtime.emit import I1, I32, I64, PTR, Emitter, byte_size, mem_type, reg_type
from graphc.runtime.plan import (
    DETAIL_WORDS,
    ERR_ARG_NUMERICS,
    ERR_DEBUG_BOUNDS,
    ERR_NUMERICS,
    Acc,
    Lazy,
    Operand,
    Plan,
    Reg,
    Step,
    View,
    buffers_read,
    contiguous,
)

ENTRY = "graphc_entry"
SINK_BYTES = 128           # scratch a debug build sends an out-of-bounds access to (>= a vector)



class DimEval:
    """Dim polynomials as i64 values, each computed once in a function's entry block (which
    dominates every loop) from the run-time ``dims`` array (one i64 per symbol, sorted)."""

    def __init__(self, entry: ll.Block, dims_ptr: ll.Value, symbols: Sequence[str],
                 args: dict[str, ll.Value] | None = None):
        self.entry = entry
        self.dims_ptr = dims_ptr
        self.symbols = list(symbols)
        self.cache: dict[Any, ll.Value] = dict(args or {})   # symbols passed as arguments

    def get(self, d: DimLike) -> ll.Value:
        if isinstance(d, int):
            return ll.Constant(I64, d)
        if d not in self.cache:
            eb = ll.IRBuilder(self.entry)
            total: ll.Value | None = None
            for mono, coef in d.terms:
                term: ll.Value = ll.Constant(I64, coef)
                for s in mono:
                    term = eb.mul(term, self.sym(eb, s))
                total = term if total is None else eb.add(total, term)
            self.cache[d] = total
        return self.cache[d]

    def sym(self, eb: ll.IRBuilder, s: str) -> ll.Value:
        if s not in self.cache:
            p = eb.gep(self.dims_ptr, [ll.Constant(I64, self.symbols.index(s))],
                       source_etype=I64)
            self.cache[s] = eb.load(p, name=f"dim.{s}", typ=I64)
        return self.cache[s]


def _shares_output(plan: Plan, bufs: Sequence[int]) -> set[int]:
    """The output ``bufs[0]`` and the inputs it overwrites in place (the memory plan gave both
    one slot, or the output is a param's updated value written over the caller's array): the
    kernel reads and writes that memory through two pointers, so neither may be ``noalias``."""
    if not bufs:
        return set()
    out = bufs[0]
    o = plan.buffers[out]
    same: set[int] = set()
    for b in bufs[1:]:
        x = plan.buffers[b]
        if o.kind == "slot" and x.kind == "slot" and plan.offsets.get(b) == plan.offsets.get(out):
            same.add(b)
        elif o.kind == "result" and x.kind == "param" and \
                plan.inplace.get(o.index) == plan.func.params[x.index].attrs["name"]:
            same.add(b)
    return same | {out} if same else set()


@dataclass
class Call:
    """One kernel call of a driver: the function, its buffers and offsets (the ``@offN``
    arguments' values), and the step index the driver adds to an error code it returns (a
    shared kernel's codes carry index 0; 0 where the kernel's codes carry their own)."""
    fn: ll.Function
    bufs: list[int]
    offsets: list[DimLike]
    tag: int


class Kernel:
    """An LLVM function ``i32 (ptr dims, ptr buf0, ..., i64 off0, ...)`` being built; buf0 is
    the output, ``offsets`` name the symbols (dedup.OFFSET) passed as the trailing i64s."""

    def __init__(self, cg: Codegen, name: str, bufs: Sequence[int], tag: int = 0,
                 offsets: Sequence[str] = ()):
        self.cg = cg
        self.tag = tag                          # the index its error codes carry
        self.bufs = list(dict.fromkeys(bufs))
        fnty = ll.FunctionType(I32, [PTR] * (1 + len(self.bufs)) + [I64] * len(offsets))
        self.fn = ll.Function(cg.module, fnty, name)
        if not cg.shared.split:             # else the drivers' module calls it
            self.fn.linkage = "internal"
        # never inlined: a kernel shared by the steps of an unrolled loop would grow the driver
        # with the steps again (LLVM's optimiser is superlinear in a function's size), and one
        # inlined even once is optimised twice, alone and then again inside the driver
        self.fn.attributes.add("noinline")
        # an in-place pair is read through one pointer (Codegen.emit_versions), except in a
        # debug build, whose checked accesses go through each buffer's own pointer
        shared = _shares_output(cg.plan, self.bufs) if cg.debug else set()
        for b, a in zip(self.bufs, self.fn.args[1:1 + len(self.bufs)]):
            if b not in shared:
                a.add_attribute("noalias")
        self.entry = self.fn.append_basic_block("entry")
        start = self.fn.append_basic_block("start")
        self.b = ll.IRBuilder(start)
        self.em = Emitter(self.b)
        nb = 1 + len(self.bufs)
        self.ptrs: dict[int, ll.Value] = {b: a for b, a in zip(self.bufs, self.fn.args[1:nb])}
        self.dims = DimEval(self.entry, self.fn.args[0], cg.plan.symbols,
                            dict(zip(offsets, self.fn.args[nb:])))
        self.code: ll.Value | None = None      # an error code a kernel body may set
        self.acc: ll.Value | None = None       # the matmul result an epilogue reads (Acc)
        self._oob: ll.Value | None = None      # debug build: an access fell outside its buffer
        self._sink: ll.Value | None = None     # debug build: where such an access goes instead

    def dim(self, d: DimLike) -> ll.Value:
        return self.dims.get(d)

    def unless_empty(self, shape: Sequence[DimLike]) -> Any:
        """A with-block that runs only when no axis of ``shape`` is 0 (see Emitter)."""
        return self.em.unless_empty([self.dim(d) for d in shape])

    def ptr(self, buf: int) -> ll.Value:
        if buf in self.ptrs:
            return self.ptrs[buf]
        return self.cg.const_global(buf)

    def index(self, v: View, idx: Sequence[ll.Value]) -> ll.Value:
        """Element index ``offset + sum(idx[k] * strides[k])`` (zero strides cost nothing)."""
        b = self.b
        acc: ll.Value | None = None if v.offset == 0 else self.dim(v.offset)
        for i, s in zip(idx, v.strides):
            if s == 0:
                continue
            t = i if s == 1 else b.mul(i, self.dim(s))
            acc = t if acc is None else b.add(acc, t)
        return acc if acc is not None else ll.Constant(I64, 0)

    def address(self, buf: int, index: ll.Value, ty: ll.Type) -> ll.Value:
        """The address of element ``index`` of ``buf`` seen as an array of ``ty`` (a scalar,
        or a vector for ``ty``'s bytes from there). Every load and store of a buffer goes
        through here; a debug build checks it against the buffer's byte size."""
        elem = ty.element if isinstance(ty, ll.VectorType) else ty
        if not self.cg.debug:
            return self.b.gep(self.ptr(buf), [index], inbounds=True, source_etype=elem)
        return self._checked(buf, index, ty, elem)

    def load_at(self, buf: int, index: ll.Value, dtype: DType) -> ll.Value:
        return self.em.load_at(self.address(buf, index, mem_type(dtype)), dtype)

    def store_at(self, value: ll.Value, buf: int, index: ll.Value, dtype: DType) -> None:
        self.em.store_at(value, self.address(buf, index, mem_type(dtype)), dtype)

    def extent(self, buf: int) -> ll.Value:
        """``buf``'s size in bytes, as the plan sizes it."""
        bf = self.cg.plan.buffers[buf]
        if bf.kind == "const":
            value = bf.value.attrs["value"]
            n = len(value) if isinstance(value, tuple) else 1
            return ll.Constant(I64, n * bf.dtype.itemsize)
        return self.dim(dim_mul(bf.size, bf.dtype.itemsize))

    def _checked(self, buf: int, index: ll.Value, ty: ll.Type, elem: ll.Type) -> ll.Value:
        """Debug build: an access outside ``buf`` touches a scratch sink instead, and the kernel
        returns ERR_DEBUG_BOUNDS (the first one's buffer and element index as details)."""
        b, em = self.b, self.em
        size, esize = byte_size(ty), byte_size(elem)
        room = b.sub(self.extent(buf), ll.Constant(I64, size))      # last valid start byte
        zero = ll.Constant(I64, 0)
        ok = b.and_(b.and_(b.icmp_signed(">=", index, zero), b.icmp_signed(">=", room, zero)),
                    b.icmp_signed("<=", index, b.sdiv(room, ll.Constant(I64, esize))))
        if self._oob is None:
            self._oob = em.alloca_entry(I1, "oob")
            self._sink = em.alloca_entry(ll.ArrayType(ll.IntType(8), SINK_BYTES), "oob.sink")
            self._sink.align = 64
            eb = ll.IRBuilder(self.entry)
            eb.store(ll.Constant(I1, 0), self._oob)
        first = b.and_(em.not_(ok), em.not_(b.load(self._oob, typ=I1)))
        with b.if_then(first, likely=False):
            b.store(ll.Constant(I1, 1), self._oob)
            self.detail(index, ll.Constant(I64, buf), self.extent(buf), ll.Constant(I64, size))
        p = b.gep(self.ptr(buf), [b.select(ok, index, zero)], source_etype=elem)
        sink = self._sink if self._sink.type == p.type else b.bitcast(self._sink, p.type)
        return b.select(ok, p, sink)

    def flag(self, slot: ll.Value, bad: ll.Value, *words: ll.Value) -> None:
        """OR ``bad`` into the i1 ``slot``; the first time it is set, describe it (``detail``)."""
        b = self.b
        prev = b.load(slot, typ=I1)
        if self.cg.details and words:
            with b.if_then(b.and_(bad, self.em.not_(prev)), likely=False):
                self.detail(*words)
        b.store(b.or_(prev, bad), slot)

    def flat(self, shape: Sequence[DimLike], idx: Sequence[ll.Value]) -> ll.Value:
        """The row-major position of ``idx`` in an array of ``shape``."""
        return self.index(contiguous(0, DType.i64, tuple(shape)), idx)

    def detail(self, *words: ll.Value) -> None:
        """Write up to DETAIL_WORDS i64 words about an error after the run-time dims (only in
        a build whose caller allocates them there: ``Codegen.details``)."""
        if not self.cg.details:
            return
        base = len(self.cg.plan.symbols)
        for j, w in enumerate(words[:DETAIL_WORDS]):
            p = self.b.gep(self.fn.args[0], [ll.Constant(I64, base + j)], source_etype=I64)
            self.b.store(self.b.sext(w, I64) if w.type.width < 64 else w, p)

    def load(self, op: Operand, idx: Sequence[ll.Value],
             memo: dict[int, ll.Value] | None = None) -> ll.Value:
        """``op`` at ``idx``; a subtree shared within ``op`` is emitted once (``memo``)."""
        if isinstance(op, View):
            return self.load_at(op.buf, self.index(op, idx), op.dtype)
        if isinstance(op, Reg):
            return self.b.load(op.slot, typ=reg_type(op.dtype))
        if isinstance(op, Acc):
            assert self.acc is not None
            return self.acc
        memo = {} if memo is None else memo
        if id(op) not in memo:
            if op.value.op == "dim":
                memo[id(op)] = self.em.cast(self.dim(op.value.attrs["value"]), op.value.dtype)
            else:
                xs = [self.load(a, idx, memo) for a in op.args]
                memo[id(op)] = lower_elementwise(self.em, op.value, xs)
        return memo[id(op)]

    def store(self, value: ll.Value, out: View, idx: Sequence[ll.Value]) -> None:
        self.store_at(value, out.buf, self.index(out, idx), out.dtype)

    def finish(self, code: ll.Value | None = None) -> None:
        code = code if code is not None else ll.Constant(I32, 0)
        if self._oob is not None:           # a bad access outranks what it may have caused
            code = self.b.select(self.b.load(self._oob, typ=I1),
                                 ll.Constant(I32, (ERR_DEBUG_BOUNDS << 24) | self.tag), code)
        self.b.ret(code)
        ll.IRBuilder(self.entry).branch(self.fn.blocks[1])


def lower_elementwise(em: Emitter, v: Any, xs: list[ll.Value]) -> ll.Value:
    opdef = registry.get(v.op)
    return opdef.lower(em, *xs, **v.attrs.as_dict())


def coalesce(shape: Sequence[DimLike], views: list[View]) -> tuple[list[DimLike], list[View]]:
    """Merge neighbouring axes that every view walks as one (fewer, longer loops vectorise)."""
    from graphc.ir.types import dim_mul
    keep = [k for k, d in enumerate(shape) if d != 1]
    groups: list[list[int]] = []
    for k in keep:
        if groups and all(v.strides[groups[-1][-1]] == dim_mul(v.strides[k], shape[k])
                          for v in views):
            groups[-1].append(k)
        else:
            groups.append([k])
    from graphc.ir.types import dim_prod
    new_shape = [dim_prod(tuple(shape[k] for k in g)) for g in groups]
    out = [View(v.buf, v.dtype, tuple(new_shape), tuple(v.strides[g[-1]] for g in groups),
                v.offset) for v in views]
    return new_shape, out


def map_views(op: Operand, views: dict[int, View], memo: dict[int, Operand] | None = None
              ) -> Operand:
    """``op`` with each view replaced from ``views``; shared subtrees stay shared."""
    if isinstance(op, View):
        return views[id(op)]
    if not isinstance(op, Lazy):
        return op
    memo = {} if memo is None else memo
    if id(op) not in memo:
        memo[id(op)] = Lazy(op.value, tuple(map_views(a, views, memo) for a in op.args))
    return memo[id(op)]


def leaves(op: Operand) -> list[View]:
    """The distinct views ``op`` reads, each once."""
    out: dict[int, View] = {}
    seen: set[int] = set()
    stack = [op]
    while stack:
        x = stack.pop()
        if isinstance(x, View):
            out.setdefault(id(x), x)
        elif isinstance(x, Lazy) and id(x) not in seen:
            seen.add(id(x))
            stack.extend(reversed(x.args))
    return list(out.values())


def emit_map(k: Kernel, out: View, expr: Operand) -> None:
    """out[i] = expr[i] over out's shape (expr's views aligned to it), axes coalesced."""
    vs = [out] + leaves(expr)
    shape, merged = coalesce(out.shape, vs)
    table = {id(a): m for a, m in zip(vs, merged)}
    expr2 = map_views(expr, table)
    with k.em.loop_nest([k.dim(d) for d in shape], "e") as idx:
        k.store(k.load(expr2, idx), table[id(out)], idx)


def emit_copy(k: Kernel, out: View, src: Operand, shape: Sequence[DimLike]) -> None:
    """Copy ``src`` (any layout, shape ``shape``) in row-major order into contiguous ``out``."""
    flat = contiguous(out.buf, out.dtype, tuple(shape), out.offset)
    emit_map(k, flat, src)


class Shared:
    """What the entry points built into one LLVM module share: the module, its kernel
    functions by structural key (runtime/dedup.py) and its consts by contents. ``split``: the
    drivers go to a module of their own (``drivers``), which calls the kernels by name and is
    compiled without optimisation (the kernels' module at the model's -O level)."""

    def __init__(self, name: str, split: bool = False):
        self.split = split
        self.module = ll.Module(name=name)
        self.drivers = ll.Module(name=f"{name}.drivers") if split else self.module
        self.kernels: dict[Any, ll.Function] = {}
        self.consts: dict[tuple, ll.GlobalVariable] = {}

    def callee(self, fn: ll.Function) -> ll.Function:
        """``fn`` as the drivers' module sees it (a declaration there when split)."""
        if not self.split:
            return fn
        g = self.drivers.globals.get(fn.name)
        return g if g is not None else ll.Function(self.drivers, fn.function_type, fn.name)


def entry_symbol(name: str) -> str:
    """The driver symbol of entry point ``name`` in a model's module."""
    return f"{ENTRY}.{name}"


class Codegen:
    """``debug``: check every load and store of a buffer against its size (ERR_DEBUG_BOUNDS);
    ``details``: kernels describe their errors after the run-time dims (DETAIL_WORDS), which
    the caller must then allocate."""

    def __init__(self, plan: Plan, check_numerics: bool = False, debug: bool = False,
                 details: bool = False, threads: int = 1, shared: Shared | None = None,
                 entry: str = ENTRY):
        self.plan = plan
        self.check = check_numerics
        self.debug = debug
        self.details = details
        self.threads = threads           # > 1: big loops call the worker pool (runtime/pool.py)
        self.shared = shared if shared is not None else Shared(plan.func.name)
        self.module = self.shared.module
        self.kernels = self.shared.kernels
        self.entry = entry                  # the driver's symbol
        self.prefix = "" if entry == ENTRY else entry.removeprefix(ENTRY + ".") + "."
        from graphc.runtime.dedup import KeyMaker
        self.keys = KeyMaker(plan)

    def const_global(self, buf: int) -> ll.GlobalVariable:
        """Buffer ``buf`` (a const) as a global, one per distinct contents in the module."""
        b = self.plan.buffers[buf]
        value = b.value.attrs["value"]
        vals = value if isinstance(value, tuple) else (value,)
        key = (b.dtype, repr(vals))
        if key not in self.shared.consts:
            mt = mem_type(b.dtype)
            conv = (lambda x: int(bool(x))) if b.dtype is DType.bool else \
                (float if b.dtype.is_float else int)
            ty = ll.ArrayType(mt, len(vals))
            g = ll.GlobalVariable(self.module, ty, f"const{len(self.shared.consts)}")
            g.global_constant = True
            g.linkage = "internal"
            g.initializer = ll.Constant(ty, [ll.Constant(mt, conv(x)) for x in vals])
            self.shared.consts[key] = g
        return self.shared.consts[key]

    def kernel_bufs(self, out: int, args: Sequence[Operand]) -> list[int]:
        bufs = [out] + [b for a in args for b in buffers_read(a)]
        return [b for b in dict.fromkeys(bufs) if self.plan.buffers[b].kind != "const"]

    def build(self) -> ll.Module:
        steps = [self.step_call(s) for s in self.plan.steps]
        copies: list[Call | None] = []
        for r, (src, own) in enumerate(self.plan.results):
            if own is not None:
                copies.append(None)
                continue
            out_buf = self.output_buf(r)
            k = Kernel(self, f"{self.prefix}result{r}.copy", self.kernel_bufs(out_buf, [src]),
                       len(self.plan.steps) + r)
            emit_copy(k, contiguous(out_buf, src.dtype if isinstance(src, View)
                                    else src.value.dtype, ()), src, self.result_shape(r))
            k.finish()
            copies.append(Call(k.fn, k.bufs, [], 0))      # its codes carry their index
        arg_checks = []
        if self.check:
            for b, buf in enumerate(self.plan.buffers):
                if buf.kind == "param" and buf.dtype.is_float:
                    k = Kernel(self, f"{self.prefix}arg{buf.index}.check", [b],
                               len(self.plan.steps) + len(self.plan.results) + buf.index)
                    k.finish(self.numerics(k, contiguous(b, buf.dtype, buf.value.shape),
                                           (ERR_ARG_NUMERICS << 24) | buf.index))
                    arg_checks.append(Call(k.fn, k.bufs, [], 0))
        from graphc.runtime.driver import emit_driver
        emit_driver(self, steps, copies, arg_checks)
        return self.module

    def step_call(self, s: Step) -> Call:
        """The call that runs step ``s``: a function emitted for it, or the one already
        emitted for an identical step (runtime/dedup.py; not in a debug build, whose error
        details name the buffer of a bad access)."""
        from graphc.runtime import dedup, kernels
        bufs = self.kernel_bufs(s.out.buf, s.args)
        if self.debug:
            key, step, offsets = None, s, []
        else:
            step, offsets = dedup.symbolize(s)
            # kernels of entry points read their dims from the same places only when the
            # entry points have the same symbols
            key = (self.plan.symbols, self.keys.key(step, bufs, _shares_output(self.plan, bufs)))
        fn = self.kernels.get(key) if key is not None else None
        if fn is None:
            names = [f"{dedup.OFFSET}{j}" for j in range(len(offsets))]
            k = Kernel(self, f"{self.prefix}k{s.index}.{s.value.op}", bufs, step.index, names)
            self.emit_versions(k, step)
            code = k.code
            if self.check:
                num = self.numerics(k, step.out, (ERR_NUMERICS << 24) | step.index)
                if num is not None:
                    code = num if code is None else k.b.select(
                        k.b.icmp_signed("!=", code, ll.Constant(I32, 0)), code, num)
            k.finish(code)
            fn = k.fn
            if key is not None:
                self.kernels[key] = fn
        return Call(fn, list(dict.fromkeys(bufs)), offsets, s.index)

    def emit_versions(self, k: Kernel, step: Step) -> None:
        """The kernel's body; for a kernel that writes over an input in place (``_shares_output``)
        twice: once for the pointers equal, with that input read through the output's own
        pointer, and once for them apart. Either way no two pointers of the kernel alias, so
        every pointer stays ``noalias`` and the loops vectorise without run-time overlap checks
        (which an exact in-place update always failed, falling back to scalar code). Apart
        happens only for a param's update staged elsewhere, so the two never overlap."""
        from graphc.runtime import kernels
        shared = _shares_output(self.plan, k.bufs) if not self.debug else set()
        out = k.bufs[0] if k.bufs else None
        ins = [b for b in k.bufs[1:] if b in shared]
        if not ins:
            kernels.emit_step(k, step)
            return
        b = k.b
        same = b.icmp_unsigned("==", k.ptrs[ins[0]], k.ptrs[out])
        for x in ins[1:]:
            same = b.and_(same, b.icmp_unsigned("==", k.ptrs[x], k.ptrs[out]))
        ends = []
        with b.if_else(same, likely=True) as (equal, apart):
            with equal:
                saved = dict(k.ptrs)
                k.ptrs.update({x: k.ptrs[out] for x in ins})
                kernels.emit_step(k, step)
                ends.append((k.code, b.block))
                k.ptrs, k.code = saved, None
            with apart:
                kernels.emit_step(k, step)
                ends.append((k.code, b.block))
        if any(c is not None for c, _ in ends):
            phi = b.phi(I32, name="code")
            for c, blk in ends:
                phi.add_incoming(c if c is not None else ll.Constant(I32, 0), blk)
            k.code = phi

    def output_buf(self, r: int) -> int:
        return next(i for i, b in enumerate(self.plan.buffers) if b.kind == "output"
                    and b.index == r)

    def result_shape(self, r: int) -> tuple[DimLike, ...]:
        return self.plan.func.results[r].shape

    def numerics(self, k: Kernel, out: View, code: int) -> ll.Value | None:
        """OR of ``not isfinite`` over a float output; returns ``code`` if any."""
        if not out.dtype.is_float:
            return None
        em = k.em
        flag = em.alloca_entry(I1, "bad")
        k.b.store(ll.Constant(I1, 0), flag)
        n = k.dim(_size(out.shape))
        with em.loop(n, "chk") as i:
            x = k.load_at(out.buf, i, out.dtype)
            k.b.store(k.b.or_(k.b.load(flag, typ=I1), em.not_(em.isfinite(x))), flag)
        return k.b.select(k.b.load(flag, typ=I1), ll.Constant(I32, code), ll.Constant(I32, 0))


def _size(shape: Sequence[DimLike]) -> DimLike:
    from graphc.ir.types import dim_prod
    return dim_prod(tuple(shape))


def build_module(plan: Plan, check_numerics: bool = False, debug: bool = False,
                 details: bool = False, threads: int = 1) -> ll.Module:
    """The LLVM module of ``plan``; see Codegen for ``debug``, ``details`` and ``threads``."""
    return Codegen(plan, check_numerics, debug, details, threads).build()


def build_model(plans: dict[str, Plan], check_numerics: bool = False, debug: bool = False,
                details: bool = False, threads: int = 1) -> Shared:
    """The kernels of several entry points in one LLVM module, their drivers
    (``entry_symbol(name)`` each) in another (``Shared.split``), so a kernel that forward,
    backward and the step share is optimised and compiled once."""
    shared = Shared("graphc", split=True)
    for name, plan in plans.items():
        Codegen(plan, check_numerics, debug, details, threads, shared, entry_symbol(name)).build()
    return shared

