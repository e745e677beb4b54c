"""The emitter: a thin layer over llvmlite's IRBuilder with loop nests, entry-block allocas and
the scalar math that op lowerings (``OpDef.lower``) call, dispatched on the LLVM type so one
lowering serves f32/f64/i32/i64/bool. Transcendentals are inline polynomials (runtime.vmath)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import llvmlite.ir as ll

from graphc.ir.types import DType
from graphc.runtime import vmath
from graphc.runtime.lltypes import (  # noqa: F401  (re-exported: what kernels import from here)
    F32,
    F64,
    I1,
    I8,
    I32,
    I64,
    PTR,
    is_float,
    mem_type,
    reg_type,
    scalar_of,
)

_FLT_CMP = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "=="}


def _mangle(t: ll.Type) -> str:
    if isinstance(t, ll.PointerType):
        return "p0"
    if isinstance(t, ll.VectorType):
        return f"v{t.count}{_mangle(t.element)}"
    if isinstance(t, ll.FloatType):
        return "f32"
    if isinstance(t, ll.DoubleType):
        return "f64"
    return f"i{t.width}"


class Emitter:
    """Builds code at the builder's position. Values are plain llvmlite values."""

    def __init__(self, builder: ll.IRBuilder):
        self.b = builder
        self.module: ll.Module = builder.module
        self._n = 0

    # -- structure -------------------------------------------------------------------------
    def fresh(self, name: str) -> str:
        self._n += 1
        return f"{name}{self._n}"

    def intrinsic(self, name: str, args: Sequence[ll.Value], ret: ll.Type | None = None,
                  over: Sequence[ll.Type] | None = None) -> ll.Value:
        """Call ``llvm.<name>`` mangled on the types in ``over`` (default: the first arg's)."""
        over = list(over) if over is not None else [args[0].type]
        full = "llvm." + name + "".join("." + _mangle(t) for t in over)
        fn = self.module.globals.get(full)
        if fn is None:
            fnty = ll.FunctionType(ret if ret is not None else args[0].type,
                                   [a.type for a in args])
            fn = ll.Function(self.module, fnty, full)
        return self.b.call(fn, list(args))

    def alloca_entry(self, ty: ll.Type, name: str = "") -> ll.Value:
        """An alloca in the function's entry block, so mem2reg promotes it."""
        b = self.b
        here = b.block
        entry = b.function.entry_basic_block
        with b.goto_block(entry):
            if entry.instructions:
                b.position_before(entry.instructions[0])
            slot = b.alloca(ty, name=name)
        b.position_at_end(here)
        return slot

    @contextlib.contextmanager
    def loop(self, n: ll.Value, name: str = "i", start: ll.Value | None = None
             ) -> Iterator[ll.Value]:
        """``for i in range(start, n)``; the body is the with-block. ``n`` is an i64."""
        b = self.b
        tag = self.fresh(name)
        pre = b.block
        head = b.append_basic_block(f"{tag}.head")
        body = b.append_basic_block(f"{tag}.body")
        end = b.append_basic_block(f"{tag}.end")
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64, name=tag)
        i.add_incoming(start if start is not None else ll.Constant(I64, 0), pre)
        b.cbranch(b.icmp_signed("<", i, n), body, end)
        b.position_at_end(body)
        yield i
        nxt = b.add(i, ll.Constant(I64, 1), name=f"{tag}.next", flags=("nsw",))
        i.add_incoming(nxt, b.block)
        b.branch(head)
        b.position_at_end(end)

    @contextlib.contextmanager
    def loop_nest(self, shape: Sequence[ll.Value], name: str = "i",
                  part: tuple[int, ll.Value, ll.Value] | None = None
                  ) -> Iterator[list[ll.Value]]:
        """Nested loops over ``shape`` (outermost first); yields the index list. Nothing runs
        when any extent is 0, however large the others. ``part = (axis, lo, hi)``: that axis
        runs from lo to hi only (a task's share of it, runtime/pool.py)."""
        with contextlib.ExitStack() as stack:
            if len(shape) > 1:
                stack.enter_context(self.unless_empty(
                    [n for k, n in enumerate(shape) if part is None or k != part[0]]))
            idx = []
            for k, n in enumerate(shape):
                lo = None
                if part is not None and k == part[0]:
                    lo, n = part[1], part[2]
                idx.append(stack.enter_context(self.loop(n, f"{name}{k}.", start=lo)))
            yield idx

    @contextlib.contextmanager
    def unless_empty(self, extents: Sequence[ll.Value]) -> Iterator[None]:
        """Run the with-block only when every extent is positive: an outer loop over 2**60 rows
        of nothing ([2**60, 0], which holds no bytes) would never end, where NumPy returns."""
        tests = [self.b.icmp_signed(">", n, ll.Constant(n.type, 0)) for n in extents
                 if not (isinstance(n, ll.Constant) and n.constant > 0)]
        if not tests:
            yield
            return
        ok = tests[0]
        for t in tests[1:]:
            ok = self.b.and_(ok, t)
        with self.b.if_then(ok, likely=True):
            yield

    @contextlib.contextmanager
    def if_(self, cond: ll.Value) -> Iterator[None]:
        with self.b.if_then(cond):
            yield

    def i64(self, v: int) -> ll.Constant:
        return ll.Constant(I64, v)

    # -- constants and generic helpers ---------------------------------------------------------
    def const(self, value: Any, like: ll.Value | ll.Type) -> ll.Value:
        t = like if isinstance(like, ll.Type) else like.type
        s = scalar_of(t)
        if is_float(s):
            c = ll.Constant(s, float(value))
        elif s.width == 1:
            c = ll.Constant(s, int(bool(value)))
        else:
            c = ll.Constant(s, int(value))
        if isinstance(t, ll.VectorType):
            return ll.Constant(t, [c] * t.count)
        return c

    def _fl(self, a: ll.Value) -> bool:
        return is_float(a.type)

    # -- arithmetic ------------------------------------------------------------------------------
    def add(self, a: ll.Value, b: ll.Value) -> ll.Value:
        return self.b.fadd(a, b) if self._fl(a) else self.b.add(a, b)

    def sub(self, a: ll.Value, b: ll.Value) -> ll.Value:
        return self.b.fsub(a, b) if self._fl(a) else self.b.sub(a, b)

    def mul(self, a: ll.Value, b: ll.Value) -> ll.Value:
        return self.b.fmul(a, b) if self._fl(a) else self.b.mul(a, b)

    def div(self, a: ll.Value, b: ll.Value) -> ll.Value:
        if self._fl(a):
            return self.b.fdiv(a, b)
        # integers: C division with the two undefined cases (x/0, MIN/-1) made total (-> 0)
        zero, one = self.const(0, a), self.const(1, a)
        bad = self.or_(self.b.icmp_signed("==", b, zero),
                       self.and_(self.b.icmp_signed("==", b, self.const(-1, a)),
                                 self.b.icmp_signed("==", a, self.const(
                                     -(1 << (scalar_of(a.type).width - 1)), a))))
        q = self.b.sdiv(a, self.select(bad, one, b))
        return self.select(bad, zero, q)

    def fma(self, a: ll.Value, b: ll.Value, c: ll.Value) -> ll.Value:
        return self.intrinsic("fma", [a, b, c])

    def neg(self, a: ll.Value) -> ll.Value:
        return self.b.fneg(a) if self._fl(a) else self.b.sub(self.const(0, a), a)

    def abs(self, a: ll.Value) -> ll.Value:
        if self._fl(a):
            return self.intrinsic("fabs", [a])
        return self.select(self.b.icmp_signed("<", a, self.const(0, a)), self.neg(a), a)

    def maximum(self, a: ll.Value, b: ll.Value) -> ll.Value:
        if not self._fl(a):
            return self.select(self.b.icmp_signed(">", a, b), a, b)
        # NumPy: a NaN in either operand gives NaN
        return self.select(self.or_(self.gt(a, b), self.isnan(a)), a, b)

    def minimum(self, a: ll.Value, b: ll.Value) -> ll.Value:
        if not self._fl(a):
            return self.select(self.b.icmp_signed("<", a, b), a, b)
        return self.select(self.or_(self.lt(a, b), self.isnan(a)), a, b)

    def sqrt(self, a: ll.Value) -> ll.Value:
        return self.intrinsic("sqrt", [self._as_float(a)])

    def rint(self, a: ll.Value) -> ll.Value:
        return self.intrinsic("rint", [a])

    def floor(self, a: ll.Value) -> ll.Value:
        return self.intrinsic("floor", [a])

    def copysign(self, mag: ll.Value, sign: ll.Value) -> ll.Value:
        return self.intrinsic("copysign", [mag, sign])

    def maxnum(self, a: ll.Value, b: ll.Value) -> ll.Value:
        """IEEE maxNum: a NaN operand yields the other one (used for poison-free clamps)."""
        return self.intrinsic("maxnum", [a, b])

    def minnum(self, a: ll.Value, b: ll.Value) -> ll.Value:
        return self.intrinsic("minnum", [a, b])

    def _as_float(self, a: ll.Value) -> ll.Value:
        return a if self._fl(a) else self.cast(a, DType.f64)

    # -- transcendentals (inline polynomials; see runtime.vmath) ----------------------------------
    def exp(self, a: ll.Value) -> ll.Value:
        return vmath.exp(self, self._as_float(a))

    def expm1(self, a: ll.Value) -> ll.Value:
        return vmath.expm1(self, self._as_float(a))

    def log(self, a: ll.Value) -> ll.Value:
        return vmath.log(self, self._as_float(a))

    def log1p(self, a: ll.Value) -> ll.Value:
        return vmath.log1p(self, self._as_float(a))

    def tanh(self, a: ll.Value) -> ll.Value:
        return vmath.tanh(self, self._as_float(a))

    def sin(self, a: ll.Value) -> ll.Value:
        return vmath.sincos(self, self._as_float(a), 0)

    def cos(self, a: ll.Value) -> ll.Value:
        return vmath.sincos(self, self._as_float(a), 1)

    def pow(self, a: ll.Value, b: ll.Value) -> ll.Value:
        if self._fl(a):
            return vmath.pow(self, a, b)
        return vmath.ipow(self, a, b)

    # -- comparisons and logic (results are i1) -----------------------------------------------
    def _cmp(self, op: str, a: ll.Value, b: ll.Value) -> ll.Value:
        if self._fl(a):
            if op == "ne":
                return self.b.fcmp_unordered("!=", a, b)   # NaN != NaN is true, as in NumPy
            return self.b.fcmp_ordered(_FLT_CMP[op], a, b)
        sym = {**_FLT_CMP, "ne": "!="}[op]
        if scalar_of(a.type).width == 1:
            return self.b.icmp_unsigned(sym, a, b)
        return self.b.icmp_signed(sym, a, b)

    def lt(self, a: ll.Value, b: ll.Value) -> ll.Value: return self._cmp("lt", a, b)
    def le(self, a: ll.Value, b: ll.Value) -> ll.Value: return self._cmp("le", a, b)
    def gt(self, a: ll.Value, b: ll.Value) -> ll.Value: return self._cmp("gt", a, b)
    def ge(self, a: ll.Value, b: ll.Value) -> ll.Value: return self._cmp("ge", a, b)
    def eq(self, a: ll.Value, b: ll.Value) -> ll.Value: return self._cmp("eq", a, b)
    def ne(self, a: ll.Value, b: ll.Value) -> ll.Value: return self._cmp("ne", a, b)

    def select(self, c: ll.Value, a: ll.Value, b: ll.Value) -> ll.Value:
        return self.b.select(c, a, b)

    def and_(self, a: ll.Value, b: ll.Value) -> ll.Value:
        return self.b.and_(a, b)

    def or_(self, a: ll.Value, b: ll.Value) -> ll.Value:
        return self.b.or_(a, b)

    def not_(self, a: ll.Value) -> ll.Value:
        return self.b.xor(a, self.const(1, a))

    def isnan(self, a: ll.Value) -> ll.Value:
        if not self._fl(a):
            return self.const(0, ll.VectorType(I1, a.type.count)
                              if isinstance(a.type, ll.VectorType) else I1)
        return self.b.fcmp_unordered("uno", a, a)

    def isfinite(self, a: ll.Value) -> ll.Value:
        if not self._fl(a):
            return self.const(1, ll.VectorType(I1, a.type.count)
                              if isinstance(a.type, ll.VectorType) else I1)
        return self.b.fcmp_ordered("<", self.abs(a), self.const(float("inf"), a))

    # -- conversions -----------------------------------------------------------------------------
    def cast(self, a: ll.Value, dtype: DType) -> ll.Value:
        """NumPy ``astype`` semantics, made total: float -> int saturates (NaN -> 0)."""
        dst = reg_type(dtype)
        if isinstance(a.type, ll.VectorType):
            dst = ll.VectorType(dst, a.type.count)
        src = a.type
        if src == dst:
            return a
        b = self.b
        sf, df = is_float(src), is_float(dst)
        dwidth = 0 if df else scalar_of(dst).width
        if dwidth == 1:
            return self.ne(a, self.const(0, a))
        if sf and df:
            return b.fpext(a, dst) if isinstance(scalar_of(dst), ll.DoubleType) \
                else b.fptrunc(a, dst)
        if sf:
            return self.cast_raw_fptosi(a, dst)
        swidth = scalar_of(src).width
        if df:
            return b.uitofp(a, dst) if swidth == 1 else b.sitofp(a, dst)
        if swidth == 1:
            return b.zext(a, dst)
        return b.sext(a, dst) if dwidth > swidth else b.trunc(a, dst)

    def widen(self, a: ll.Value) -> ll.Value:
        """``a`` as f64 (scalar or vector): extra precision for an ill-conditioned formula."""
        t = ll.VectorType(F64, a.type.count) if isinstance(a.type, ll.VectorType) else F64
        return a if a.type == t else self.b.fpext(a, t)

    def narrow(self, a: ll.Value, like: ll.Value) -> ll.Value:
        """A ``widen``-ed value back to ``like``'s type."""
        return a if a.type == like.type else self.b.fptrunc(a, like.type)

    def cast_raw_fptosi(self, a: ll.Value, ty: ll.Type) -> ll.Value:
        """Float to integer type ``ty``, saturating, NaN to 0 (no poison for NaN or out of
        range). Clamped selects around a plain ``fptosi`` of an in-range value, because the
        x86 backend scalarises a vector ``llvm.fptosi.sat`` lane by lane (3x slower)."""
        w = scalar_of(ty).width
        lo, top = -2.0 ** (w - 1), 2.0 ** (w - 1)          # both exact in f32 and f64
        big = self.ge(a, self.const(top, a))                # ordered: false for NaN
        ok = self.select(self.isnan(a), self.const(0.0, a), a)
        ok = self.select(self.lt(ok, self.const(lo, a)), self.const(lo, a), ok)
        ok = self.select(big, self.const(0.0, a), ok)
        return self.select(big, self.const((1 << (w - 1)) - 1, ty), self.b.fptosi(ok, ty))

    def bitcast(self, a: ll.Value, ty: ll.Type) -> ll.Value:
        return self.b.bitcast(a, ty)

    # -- memory ------------------------------------------------------------------------------------
    # addresses of buffer elements come from Kernel.address, which a debug build checks
    def load_at(self, p: ll.Value, dtype: DType, name: str = "") -> ll.Value:
        """The ``dtype`` element at address ``p``, as a register value (bool -> i1)."""
        mt = mem_type(dtype)
        v = self.b.load(p, name=name, typ=mt)
        return self.b.trunc(v, I1) if dtype is DType.bool else v

    def store_at(self, value: ll.Value, p: ll.Value, dtype: DType) -> None:
        if dtype is DType.bool:
            value = self.b.zext(value, I8)
        self.b.store(value, p)


def byte_size(t: ll.Type) -> int:
    """Bytes of a scalar or vector type in memory."""
    if isinstance(t, ll.VectorType):
        return t.count * byte_size(t.element)
    if isinstance(t, ll.DoubleType):
        return 8
    if isinstance(t, ll.FloatType):
        return 4
    return max(1, t.width // 8)
