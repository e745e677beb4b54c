"""Native lowering of the random ops (ir/ops/random.py): Philox-4x32-10 per element, counter =
the element's row-major position, so every bit equals the NumPy reference's. Box-Muller's log
and cos go through the same inline math as the elementwise ops (runtime.vmath)."""
from __future__ import annotations

import math

import llvmlite.ir as ll

from graphc.ir.ops.random import M0, M1, ROUNDS, W0, W1
from graphc.ir.types import DType
from graphc.runtime.emit import I64
from graphc.runtime.kernel import Kernel
from graphc.runtime.plan import Step

I32 = ll.IntType(32)
F32, F64 = ll.FloatType(), ll.DoubleType()


def _mulhilo(k: Kernel, m: int, x: ll.Value) -> tuple[ll.Value, ll.Value]:
    b = k.b
    p = b.mul(b.zext(x, I64), ll.Constant(I64, m))
    return b.trunc(b.lshr(p, ll.Constant(I64, 32)), I32), b.trunc(p, I32)


def philox(k: Kernel, i: ll.Value, key: ll.Value, stream: int) -> list[ll.Value]:
    """The four i32 words for counter (i, stream, 0) and the i64 ``key``."""
    b = k.b
    c = [b.trunc(i, I32), b.trunc(b.lshr(i, ll.Constant(I64, 32)), I32),
         ll.Constant(I32, stream & 0xFFFFFFFF), ll.Constant(I32, 0)]
    k0, k1 = b.trunc(key, I32), b.trunc(b.lshr(key, ll.Constant(I64, 32)), I32)
    for r in range(ROUNDS):
        if r:
            k0, k1 = b.add(k0, ll.Constant(I32, W0)), b.add(k1, ll.Constant(I32, W1))
        hi0, lo0 = _mulhilo(k, M0, c[0])
        hi1, lo1 = _mulhilo(k, M1, c[2])
        c = [b.xor(b.xor(hi1, c[1]), k0), lo1, b.xor(b.xor(hi0, c[3]), k1), lo0]
    return c


def _unit53(k: Kernel, hi: ll.Value, lo: ll.Value) -> ll.Value:
    b = k.b
    bits = b.or_(b.shl(b.zext(hi, I64), ll.Constant(I64, 21)),
                 b.lshr(b.zext(lo, I64), ll.Constant(I64, 11)))
    return b.fmul(b.uitofp(bits, F64), ll.Constant(F64, 2.0 ** -53))


def emit_random(k: Kernel, s: Step) -> None:
    em, b = k.em, k.b
    attrs = s.value.attrs
    key = em.cast(k.load(s.args[0], []), DType.i64)
    shape = s.out.shape
    with em.loop_nest([k.dim(d) for d in shape], "rng") as oi:
        counter = k.flat(shape, oi)
        if attrs.get("counter", 0) != 0:          # a micro-batch's rows of the batch's draw
            counter = b.add(counter, k.dim(attrs["counter"]))
        r = philox(k, counter, key, attrs["stream"])
        if attrs["dist"] == "uniform" and attrs["dtype"] is DType.f32:
            top = b.lshr(r[0], ll.Constant(I32, 8))
            v = b.fmul(b.uitofp(top, F32), ll.Constant(F32, 2.0 ** -24))
        elif attrs["dist"] == "uniform":
            v = _unit53(k, r[0], r[1])
        else:
            u1 = b.fsub(ll.Constant(F64, 1.0), _unit53(k, r[0], r[1]))
            u2 = _unit53(k, r[2], r[3])
            rad = em.sqrt(b.fmul(ll.Constant(F64, -2.0), em.log(u1)))
            v = b.fmul(rad, em.cos(b.fmul(ll.Constant(F64, 2.0 * math.pi), u2)))
        k.store(em.cast(v, s.value.dtype), s.out, oi)




def emit_flip(k: Kernel, s: Step) -> None:
    """``flip``: element i of a flipped axis of size n reads n - 1 - i (kept with the random
    kernels: the one other primitive of issue 14 that needs a kernel of its own)."""
    x, axes = s.args[0], s.value.attrs["axis"]
    b = k.b
    shape = s.out.shape
    with k.em.loop_nest([k.dim(d) for d in shape], "fl") as oi:
        src = [b.sub(b.sub(k.dim(d), ll.Constant(I64, 1)), i) if a in axes else i
               for a, (d, i) in enumerate(zip(shape, oi))]
        k.store(k.load(x, src), s.out, oi)


EMITTERS = {"random_uniform": emit_random, "random_normal": emit_random, "flip": emit_flip}
