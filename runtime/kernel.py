"""What every kernel body is emitted with: the ``Kernel`` being built (its LLVM function,
buffers, dims, and the loads and stores that a debug build checks, with the invariant values it
computes once in its entry block). The loops and vector access over its operands are
runtime/lowering.py; kernel bodies by op kind runtime/kernels.py and runtime/fusedgen.py; the
module and the drivers that call kernels, runtime/codegen.py."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import llvmlite.ir as ll

from graphc.ir.ops import registry
from graphc.ir.types import DimLike, DType, dim_mul
from graphc.runtime.emit import (
    I1,
    I32,
    I64,
    PTR,
    Emitter,
    byte_size,
    mem_type,
    reg_type,
)
from graphc.runtime.errcodes import DETAIL_WORDS, ERR_DEBUG_BOUNDS
from graphc.runtime.plantypes import Acc, Lazy, Operand, Plan, Reg, View, contiguous

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


def shares_output(plan: Plan, bufs: Sequence[int]) -> set[int]:
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
        slot = o.kind == "slot" and x.kind == "slot" and \
            plan.offsets.get(b) == plan.offsets.get(out)
        if slot or (o.kind == "result" and x.kind == "param" and
                    plan.inplace.get(o.index) == plan.func.params[x.index].attrs["name"]):
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

    def __init__(self, cg: Any, name: str, bufs: Sequence[int], tag: int = 0,
                 offsets: Sequence[str] = ()):
        self.cg = cg
        self.tag = tag                          # the index its error codes carry
        self.bufs = list(dict.fromkeys(bufs))
        self.offsets = list(offsets)
        fnty = ll.FunctionType(I32, [PTR] * (1 + len(self.bufs)) + [I64] * len(offsets))
        fn = ll.Function(cg.module, fnty, name)
        if not cg.shared.split:             # else the drivers' module calls it
            fn.linkage = "internal"
        # never inlined: a kernel shared by the steps of an unrolled loop would grow the driver
        # with the steps again (LLVM's optimiser is superlinear in a function's size), and one
        # inlined even once is optimised twice, alone and then again inside the driver
        fn.attributes.add("noinline")
        # an in-place pair is read through one pointer (Codegen.emit_versions), except in a
        # debug build, whose checked accesses go through each buffer's own pointer
        shared = shares_output(cg.plan, self.bufs) if cg.debug else set()
        for b, a in zip(self.bufs, fn.args[1:1 + len(self.bufs)]):
            if b not in shared:
                a.add_attribute("noalias")
        nb = 1 + len(self.bufs)
        self._begin(fn, dict(zip(self.bufs, fn.args[1:nb])), dict(zip(offsets, fn.args[nb:])))

    def _begin(self, fn: ll.Function, ptrs: dict[int, ll.Value], args: dict[str, ll.Value]
               ) -> None:
        self.fn = fn
        self.entry = fn.append_basic_block("entry")
        self.b = ll.IRBuilder(fn.append_basic_block("start"))
        self.em = Emitter(self.b)
        self.ptrs: dict[int, ll.Value] = ptrs
        self.dims = DimEval(self.entry, fn.args[0], self.cg.plan.symbols, args)
        self.code: ll.Value | None = None      # an error code a kernel body may set
        self.acc: ll.Value | None = None       # the matmul result an epilogue reads (Acc)
        self._oob: ll.Value | None = None      # debug build: an access fell outside its buffer
        self._sink: ll.Value | None = None     # debug build: where such an access goes instead
        self.scratch: dict[int, ll.Value] = {}  # byte sizes of scratch buffers (ids < 0)
        self.written: set[int] = set(self.bufs[:1])   # buffers the body stores to
        self._still: dict[tuple[int, int], tuple[Operand, ll.Value | None]] = {}

    def outline(self, name: str, extra: Sequence[ll.Type]) -> tuple[Kernel, list[ll.Value]]:
        """A kernel ``i32 (ptr dims, ptr.., i64 offsets.., extra.., i64 lo, i64 hi)`` that sees
        this one's buffers and dims (each distinct pointer once, ``noalias`` where it is here),
        and the arguments that call it from here, to which the caller appends the ``extra``
        values, lo and hi: a loop body moved out so that worker threads can run parts of it
        (runtime/pool.py). A scratch buffer of the body's own (an id < 0) is the body's to
        set up, from a pointer among the extra arguments."""
        distinct: list[ll.Value] = []
        for p in self.ptrs.values():
            if not any(p is q for q in distinct):
                distinct.append(p)
        offs = [self.dims.cache[o] for o in self.offsets]
        fnty = ll.FunctionType(I32, [PTR] * (1 + len(distinct)) + [I64] * len(offs)
                               + list(extra) + [I64, I64])
        module = self.cg.module
        fn = ll.Function(module, fnty, module.get_unique_name(f"{self.fn.name}.{name}"))
        # its own symbol, never inlined: no caller's constants specialise it, so every thread
        # count runs the very same code over a part (bitwise the same results)
        fn.attributes.add("noinline")
        for p, a in zip(distinct, fn.args[1:]):
            if isinstance(p, ll.Argument) and "noalias" in p.attributes:
                a.add_attribute("noalias")
        sub = Kernel.__new__(Kernel)
        sub.cg, sub.tag, sub.bufs, sub.offsets = self.cg, self.tag, self.bufs, self.offsets
        at = {id(p): fn.args[1 + j] for j, p in enumerate(distinct)}
        nd = 1 + len(distinct)
        sub._begin(fn, {b: at[id(p)] for b, p in self.ptrs.items()},
                   dict(zip(self.offsets, fn.args[nd:nd + len(offs)])))
        assert all(isinstance(v, ll.Constant) for v in self.scratch.values())
        sub.scratch = dict(self.scratch)
        sub.written = set(self.written)
        return sub, [self.fn.args[0]] + distinct + offs

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
        if buf < 0:
            return self.scratch[buf]
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
        oob = self.oob_slot()
        first = b.and_(em.not_(ok), em.not_(b.load(oob, typ=I1)))
        with b.if_then(first, likely=False):
            b.store(ll.Constant(I1, 1), self._oob)
            self.detail(index, ll.Constant(I64, buf), self.extent(buf), ll.Constant(I64, size))
        p = b.gep(self.ptr(buf), [b.select(ok, index, zero)], source_etype=elem)
        sink = self._sink if self._sink.type == p.type else b.bitcast(self._sink, p.type)
        return b.select(ok, p, sink)

    def oob_slot(self) -> ll.Value:
        """Debug build: the flag that an access fell outside its buffer (the kernel then
        returns ERR_DEBUG_BOUNDS), made on first use."""
        if self._oob is None:
            self._oob = self.em.alloca_entry(I1, "oob")
            self._sink = self.em.alloca_entry(ll.ArrayType(ll.IntType(8), SINK_BYTES),
                                              "oob.sink")
            self._sink.align = 64
            ll.IRBuilder(self.entry).store(ll.Constant(I1, 0), self._oob)
        return self._oob

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

    def invariant(self, op: Operand, lanes: int = 0) -> ll.Value | None:
        """``op`` (splat to ``lanes`` when > 0) computed once, in the entry block, when no
        index moves it: it reads only views with every stride 0 (a learning rate, a scale)
        of buffers the kernel never writes, through CHEAP float ops. Loops then need no
        optimisation pass to hoist it (a GLUE kernel runs none, runtime/codegen.py). None for
        anything else, and in a debug build (its checked accesses belong in the loop)."""
        if self.cg.debug or not isinstance(op, (View, Lazy)):
            return None
        key = (id(op), lanes)
        if key not in self._still:          # (op kept with its value: its id stays its own)
            value = self._invariant(op)
            if value is not None and lanes:
                value = splat_at(ll.IRBuilder(self.entry), value, lanes)
            self._still[key] = (op, value)
        return self._still[key][1]

    def _invariant(self, op: Operand) -> ll.Value | None:
        if isinstance(op, View):
            if any(s != 0 for s in op.strides) or not self._read_only(op.buf):
                return None
            # (a dim or a const first: each is appended to the entry block as it is made)
            base, offset = self.ptr(op.buf), self.dim(op.offset)
            with self.b.goto_block(self.entry):
                at = self.b.gep(base, [offset], inbounds=True, source_etype=mem_type(op.dtype))
                return self.em.load_at(at, op.dtype)
        assert isinstance(op, Lazy)
        v = op.value
        if not v.dtype.is_float or not (v.op == "dim" or registry.has(v.op, registry.CHEAP)):
            return None
        xs = [self.dim(v.attrs["value"])] if v.op == "dim" else \
            [self.invariant(a) for a in op.args]
        if any(x is None for x in xs):
            return None
        with self.b.goto_block(self.entry):
            out = self.em.cast(xs[0], v.dtype) if v.op == "dim" else \
                lower_elementwise(self.em, v, xs)
            assert self.b.block is self.entry, "a CHEAP op's lowering is straight-line code"
        return out

    def _read_only(self, buf: int) -> bool:
        """Whether the body never stores to ``buf`` and reads it through the function's own
        argument (or a constant), so a load of it may move to the entry block."""
        if buf < 0 or buf in self.written or buf in shares_output(self.cg.plan, self.bufs):
            return False
        b = self.cg.plan.buffers[buf]
        if b.kind == "param" and self.cg.plan.func.params[b.index].attrs["name"] in \
                self.cg.plan.inplace.values():
            return False
        p = self.ptr(buf)
        return isinstance(p, (ll.Argument, ll.GlobalVariable)) and \
            (b.kind == "const" or (isinstance(b.size, int) and b.size > 0))

    def load(self, op: Operand, idx: Sequence[ll.Value],
             memo: dict[int, ll.Value] | None = None) -> ll.Value:
        """``op`` at ``idx``; a subtree shared within ``op`` is emitted once (``memo``), one
        that no index moves once per kernel (``invariant``)."""
        still = self.invariant(op)
        if still is not None:
            return still
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



def splat_at(b: ll.IRBuilder, x: ll.Value, lanes: int) -> ll.Value:
    vt = ll.VectorType(x.type, lanes)
    one = b.insert_element(ll.Constant(vt, ll.Undefined), x, ll.Constant(I32, 0))
    return b.shuffle_vector(one, ll.Constant(vt, ll.Undefined),
                            ll.Constant(ll.VectorType(I32, lanes), [0] * lanes))
