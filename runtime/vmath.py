"""Branch-free polynomial transcendentals, emitted inline so the loop vectoriser can widen them
(libm calls would stay scalar). Range reduction uses FMA with constants split in two or three
parts. f64 uses Taylor series long enough for < 1 ulp truncation error; f32 uses shorter
minimax polynomials (fitted by weighted least squares with Lawson iterations against mpmath,
relative error); f32 log is one polynomial, no division. f32 tanh is one division and two short
polynomials (see _tanh32): rational fits by linearised least squares (P - f Q = 0, rows divided
by the last iteration's Q) with Lawson reweighting, each piece's error weighted by its effect
on the result in ulps; on every f32 in [0, 10] it is within 2.1 ulp of tanh.

Nothing here converts float to int with ``fptosi.sat``: the x86 backend scalarises its vector
form lane by lane (it cost exp 4x). Rounding to an integer adds 1.5*2**mant instead."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from math import factorial
from typing import Any

import llvmlite.ir as ll

from graphc.runtime.lltypes import F64, I32, I64, scalar_of

# runtime/emit.py's Emitter, which calls into this module (so it cannot be imported here)
Emitter = Any

PI = Fraction("3.14159265358979323846264338327950288419716939937510582097494459230781640628")
LN2 = Fraction("0.693147180559945309417232121458176568075500134360255254120680009493393621969")


@dataclass(frozen=True)
class _Fmt:
    mant: int          # explicit mantissa bits
    bias: int
    int_ty: ll.IntType
    exp_c: tuple[float, ...]   # e^r = 1 + r + r^2 (c[0] + c[1] r + ...), |r| <= ln2/2
    log_terms: int     # atanh-series terms for log
    trig_deg: int      # highest power in the sin/cos series, |r| <= pi/4


# f32: minimax of degree 6, 0.055 ulp truncation error (Taylor needs degree 7 for 0.13)
_EXP32 = (0.49999993050655084, 0.1666651479026039, 0.04166845679698609, 0.008369418967717654,
          0.0013813144504938176)
_F32 = _Fmt(23, 127, I32, _EXP32, 4, 12)
_F64 = _Fmt(52, 1023, I64, tuple(1 / factorial(k) for k in range(2, 14)), 10, 20)
# f32 log(1+t) = t + t^2 (-1/2 + t P(t)) for t in [sqrt(1/2)-1, sqrt(2)-1]: 0.53 ulp truncation
# (P's error weighted by t^3/log(1+t), in ulps of the result)
_LOG32 = (0.3333390951156616, -0.2500133812427521, 0.19963063299655914, -0.1657758504152298,
          0.14914768934249878, -0.14267486333847046, 0.08700430393218994)
# f32 tanh (see _tanh32), (coefficients for |x| < TANH_SPLIT, for the rest) in z = x^2:
# (tanh a - a)/a^3 = P/Q below, truncation 1e-5 ulp of the result; tanh(a/2)/a = P/Q above,
# 0.1 ulp of the result
TANH_SPLIT, TANH_CLAMP = 1.25, 10.0
_TANH_P = ((-0.3333333432674408, -0.016080956906080246, -6.053164270269917e-06),
           (0.4999998211860657, 0.01482407283037901, 5.583471283898689e-05))
_TANH_Q = ((1.0, 0.4482428729534149, 0.01741056516766548, 0.0),
           (1.0, 0.11298108845949173, 0.0011935874354094267, 1.1776284054576536e-06))


def _fmt(x: ll.Value) -> _Fmt:
    return _F64 if isinstance(scalar_of(x.type), ll.DoubleType) else _F32


def _int_like(em: Emitter, x: ll.Value, f: _Fmt) -> ll.Type:
    return ll.VectorType(f.int_ty, x.type.count) if isinstance(x.type, ll.VectorType) else f.int_ty


def _split(value: Fraction, n: int, f: _Fmt) -> list[float]:
    """``value`` as ``n`` floats of the format, each the rounded remainder of the previous."""
    parts = []
    rest = value
    for _ in range(n):
        p = float(rest) if f is _F64 else _round_f32(float(rest))
        parts.append(p)
        rest -= Fraction(p)
    return parts


def _round_f32(v: float) -> float:
    import struct
    return struct.unpack("f", struct.pack("f", v))[0]


def _horner(em: Emitter, x: ll.Value, coeffs: Sequence[float]) -> ll.Value:
    """coeffs[0] + x*(coeffs[1] + x*(...)) with FMAs."""
    acc = em.const(coeffs[-1], x)
    for c in reversed(coeffs[:-1]):
        acc = em.fma(acc, x, em.const(c, x))
    return acc


def _pow2(em: Emitter, n_int: ll.Value, x: ll.Value, f: _Fmt) -> ll.Value:
    """2**n as a float, for n in the normal exponent range."""
    it = n_int.type
    bits = em.b.shl(em.b.add(n_int, em.const(f.bias, n_int)), em.const(f.mant, n_int))
    return em.bitcast(bits, x.type) if it != x.type else bits


def _round_shift(em: Emitter, x: ll.Value, scale: float, f: _Fmt
                 ) -> tuple[ll.Value, ll.Value]:
    """k = round(x*scale) as a float and as an integer, for |k| < 2**(mant-1), by adding
    1.5*2**mant (the integer lands in the low mantissa bits). No float-to-int conversion: the
    saturating one (fptosi.sat) is scalarised by the x86 backend, one lane at a time."""
    shifter = 1.5 * 2.0 ** f.mant
    kf = em.fma(x, em.const(scale, x), em.const(shifter, x))
    it = _int_like(em, x, f)
    k_int = em.b.sub(em.bitcast(kf, it), em.const(_bits(shifter, f), it))
    return em.sub(kf, em.const(shifter, x)), k_int


def _bits(v: float, f: _Fmt) -> int:
    import struct
    return struct.unpack("<Q", struct.pack("<d", v))[0] if f is _F64 else \
        struct.unpack("<I", struct.pack("<f", v))[0]


def _reduce_ln2(em: Emitter, x: ll.Value, f: _Fmt) -> tuple[ll.Value, ll.Value, ll.Value]:
    """x = n*ln2 + r with |r| <= ln2/2 (x finite, |x| < 2**(mant-2)); returns (n as float,
    n as int, r)."""
    n, n_int = _round_shift(em, x, float(1 / LN2), f)
    hi, lo = _split(LN2, 2, f)
    r = em.fma(em.neg(n), em.const(hi, x), x)
    r = em.fma(em.neg(n), em.const(lo, x), r)
    return n, n_int, r


def _scale(em: Emitter, p: ll.Value, n_int: ll.Value, x: ll.Value, f: _Fmt) -> ll.Value:
    """p * 2**n in two steps so that subnormal results and overflow come out right."""
    h = em.b.ashr(n_int, em.const(1, n_int))
    return em.mul(em.mul(p, _pow2(em, h, x, f)), _pow2(em, em.b.sub(n_int, h), x, f))


def _clamp_nan(em: Emitter, x: ll.Value, lo: float, hi: float) -> ll.Value:
    """Clamp that lets a NaN through (one vminps/vmaxps each): the exp family then carries it
    to the result by itself, with no select at the end."""
    x = em.select(em.gt(x, em.const(hi, x)), em.const(hi, x), x)
    return em.select(em.lt(x, em.const(lo, x)), em.const(lo, x), x)


def exp(em: Emitter, x: ll.Value) -> ll.Value:
    f = _fmt(x)
    ln2 = float(LN2)
    xc = _clamp_nan(em, x, -(f.bias + f.mant + 3) * ln2, (f.bias + 2) * ln2)
    _, n_int, r = _reduce_ln2(em, xc, f)          # a NaN gives garbage n bits, never poison
    p = _horner(em, r, [1.0, 1.0, *f.exp_c])
    return _scale(em, p, n_int, x, f)


def expm1(em: Emitter, x: ll.Value) -> ll.Value:
    f = _fmt(x)
    ln2 = float(LN2)
    xc = _clamp_nan(em, x, -(f.mant + 3) * ln2, (f.bias + 2) * ln2)
    _, n_int, r = _reduce_ln2(em, xc, f)
    # q = e^r - 1 = r*(1 + r/2 + r^2/6 + ...), accurate for tiny r
    q = em.mul(r, _horner(em, r, [1.0, *f.exp_c]))
    one = em.const(1.0, x)
    t = _scale(em, one, n_int, x, f)
    small = em.fma(t, q, em.sub(t, one))                  # 2^n*q + (2^n - 1)
    big = _scale(em, em.add(q, one), n_int, x, f)          # 2^n may overflow alone here
    return em.select(em.b.icmp_signed(">", n_int, em.const(f.mant + 2, n_int)), big, small)


def log(em: Emitter, x: ll.Value) -> ll.Value:
    f = _fmt(x)
    it = _int_like(em, x, f)
    b = em.b
    # subnormals: scale into the normal range first
    tiny = em.lt(x, em.const(2.0 ** (1 - f.bias), x))
    xs = em.select(tiny, em.mul(x, em.const(2.0 ** (f.mant + 1), x)), x)
    eadj = em.select(tiny, em.const(-(f.mant + 1), it), em.const(0, it))
    bits = em.bitcast(xs, it)
    # x = 2^e * m with m in [sqrt(1/2), sqrt(2)), in integer arithmetic on the bits: offset
    # by sqrt(1/2)'s bits, the exponent field is e (musl's logf; garbage for x <= 0, Inf or NaN,
    # which the selects below replace)
    tmp = b.sub(bits, em.const(_bits(0.5 ** 0.5, f), it))
    e = b.add(b.ashr(tmp, em.const(f.mant, it)), eadj)
    m = em.bitcast(b.sub(bits, b.and_(tmp, em.const(-1 << f.mant, it))), x.type)
    fr = em.sub(m, em.const(1.0, x))                       # exact (Sterbenz)
    l1p = _log1p_reduced(em, fr, f)
    ef = b.sitofp(e, x.type)
    if f is _F32:                  # f32's ln2 is 2e-9 off: |e| <= 149 of it is < 0.05 ulp
        y = em.fma(ef, em.const(_round_f32(float(LN2)), x), l1p)
    else:
        hi, lo = _split(LN2, 2, f)
        y = em.fma(ef, em.const(hi, x), em.fma(ef, em.const(lo, x), l1p))
    inf = em.const(float("inf"), x)
    y = em.select(em.eq(x, inf), inf, y)
    y = em.select(em.eq(x, em.const(0.0, x)), em.const(float("-inf"), x), y)
    bad = em.or_(em.lt(x, em.const(0.0, x)), em.isnan(x))
    return em.select(bad, em.const(float("nan"), x), y)


def _log1p_reduced(em: Emitter, fr: ll.Value, f: _Fmt) -> ll.Value:
    """log(1 + fr) for fr in [sqrt(1/2) - 1, sqrt(2) - 1]."""
    if f is _F32:                  # a polynomial: no division (the divider is the bottleneck)
        return em.fma(em.mul(fr, fr), _horner(em, fr, (-0.5, *_LOG32)), fr)
    s = em.div(fr, em.add(fr, em.const(2.0, fr)))
    z = em.mul(s, s)
    rr = em.mul(z, _horner(em, z, [2 / (2 * k + 3) for k in range(f.log_terms)]))
    hfsq = em.mul(em.const(0.5, fr), em.mul(fr, fr))
    # log(1+f) = f - (hfsq - s*(hfsq + R))   (fdlibm's arrangement)
    return em.sub(fr, em.sub(hfsq, em.mul(s, em.add(hfsq, rr))))


def log1p(em: Emitter, x: ll.Value) -> ll.Value:
    u = em.add(em.const(1.0, x), x)
    lu = log(em, u)
    # u = 1 + x rounded; add back what the rounding lost: (x - (u - 1)) / u
    c = em.div(em.sub(x, em.sub(u, em.const(1.0, x))), u)
    c = em.select(em.isfinite(c), c, em.const(0.0, x))
    return em.select(em.eq(u, em.const(1.0, x)), x, em.add(lu, c))   # keeps log1p(-0) = -0


def tanh(em: Emitter, x: ll.Value) -> ll.Value:
    if _fmt(x) is _F32:
        return _tanh32(em, x)
    a = em.abs(x)
    t = expm1(em, em.mul(a, em.const(-2.0, x)))           # in (-1, 0]: never overflows
    y = em.div(em.neg(t), em.add(t, em.const(2.0, x)))
    return em.copysign(y, x)


def _tanh32(em: Emitter, x: ll.Value) -> ll.Value:
    """tanh|x| with one division, copysigned. Below TANH_SPLIT: a + a^3 P(z)/Q(z) (z = a^2),
    whose quotient's rounding is scaled down by (a - tanh a)/tanh a <= 0.5. Above it: t = A/B
    = a P(z)/Q(z) approximates tanh(a/2), and tanh a = 1 - (B - A)^2/(A^2 + B^2), where the
    quotient's rounding is scaled down by (1 - tanh a)/tanh a. Both share the polynomials
    (their coefficients chosen per lane) and the division; |x| is clamped at TANH_CLAMP, where
    the result rounds to 1.0."""
    a = em.abs(x)
    a = em.select(em.gt(a, em.const(TANH_CLAMP, x)), em.const(TANH_CLAMP, x), a)  # keeps NaN
    z = em.mul(a, a)
    small = em.lt(a, em.const(TANH_SPLIT, x))

    def poly(cs_small: Sequence[float], cs_big: Sequence[float]) -> ll.Value:
        pairs = [(em.const(c, x), em.const(d, x)) for c, d in zip(cs_small, cs_big)]
        acc = em.select(small, *pairs[-1])
        for c, d in reversed(pairs[:-1]):
            acc = em.fma(acc, z, em.select(small, c, d))
        return acc

    u, v = poly(*_TANH_P), poly(*_TANH_Q)
    big_a = em.mul(a, u)
    d = em.sub(v, big_a)
    q = em.div(em.select(small, u, em.mul(d, d)),
               em.select(small, v, em.fma(v, v, em.mul(big_a, big_a))))
    y = em.fma(em.select(small, em.mul(a, z), em.const(-1.0, x)), q,
               em.select(small, a, em.const(1.0, x)))
    return em.copysign(y, x)


TRIG_LIMIT = 2.0 ** 50     # beyond this the 3-part reduction is meaningless: the result is NaN


def sincos(em: Emitter, x: ll.Value, shift: int) -> ll.Value:
    """sin(x) (shift 0) or cos(x) (shift 1) by reduction modulo pi/2 and a quadrant switch.
    f32 goes through f64, so it stays accurate far beyond f32's own reduction range; for
    |x| >= 2**50 (where no Payne-Hanek reduction is implemented) the result is NaN."""
    f = _fmt(x)
    if f is _F32:
        t = ll.VectorType(F64, x.type.count) if isinstance(x.type, ll.VectorType) else F64
        return em.b.fptrunc(sincos(em, em.b.fpext(x, t), shift), x.type)
    # k = round(x*2/pi); its low bits (the quadrant) are exact for |x| < TRIG_LIMIT, and
    # beyond it (or for Inf/NaN) they are garbage bits, never poison, and the result is NaN
    k, q = _round_shift(em, x, float(2 / PI), f)
    r = x
    for part in _split(PI / 2, 3, f):
        r = em.fma(em.neg(k), em.const(part, x), r)
    q = em.b.add(q, em.const(shift, q))
    z = em.mul(r, r)
    sin_c = [(-1) ** j / factorial(2 * j + 1) for j in range(f.trig_deg // 2)]
    cos_c = [(-1) ** j / factorial(2 * j) for j in range(f.trig_deg // 2 + 1)]
    s = em.mul(r, _horner(em, z, sin_c))
    c = _horner(em, z, cos_c)
    odd = em.b.trunc(q, ll.VectorType(ll.IntType(1), q.type.count)
                     if isinstance(q.type, ll.VectorType) else ll.IntType(1))
    v = em.select(odd, c, s)
    flip = em.ne(em.b.and_(q, em.const(2, q)), em.const(0, q))
    out = em.select(flip, em.neg(v), v)
    out = em.select(em.lt(em.abs(x), em.const(TRIG_LIMIT, x)), out, em.const(float("nan"), x))
    return out if shift else em.select(em.eq(x, em.const(0.0, x)), x, out)   # sin(-0) = -0


def pow(em: Emitter, x: ll.Value, y: ll.Value) -> ll.Value:
    """C ``pow``: exp(y*log|x|) with the sign and special cases of C99 Annex F.

    f32 is computed through f64 (correctly rounded in practice); f64 loses about
    |y*log(x)| ulp to the range reduction of exp."""
    if not isinstance(scalar_of(x.type), ll.DoubleType):
        t = ll.VectorType(F64, x.type.count) if isinstance(x.type, ll.VectorType) else F64
        r = pow(em, em.b.fpext(x, t), em.b.fpext(y, t))
        return em.b.fptrunc(r, x.type)
    one = em.const(1.0, x)
    p = exp(em, em.mul(y, log(em, em.abs(x))))
    yint = em.eq(em.rint(y), y)
    half = em.mul(y, em.const(0.5, y))
    yodd = em.and_(yint, em.ne(em.rint(half), half))
    signbit = em.b.icmp_signed("<", em.bitcast(x, _int_like(em, x, _F64)),
                               em.const(0, _int_like(em, x, _F64)))
    r = em.select(em.and_(signbit, yodd), em.neg(p), p)
    neg_finite = em.and_(em.lt(x, em.const(0.0, x)), em.isfinite(x))
    r = em.select(em.and_(neg_finite, em.not_(yint)), em.const(float("nan"), x), r)
    yinf = em.eq(em.abs(y), em.const(float("inf"), y))
    r = em.select(em.and_(em.eq(x, em.const(-1.0, x)), yinf), one, r)
    r = em.select(em.or_(em.eq(y, em.const(0.0, y)), em.eq(x, one)), one, r)
    # exact fast paths (folded away when y is a constant): x**2 is x*x, x**1 is x, x**-1 is 1/x
    r = em.select(em.eq(y, em.const(-1.0, y)), em.div(one, x), r)
    r = em.select(em.eq(y, one), x, r)
    return em.select(em.eq(y, em.const(2.0, y)), em.mul(x, x), r)


def ipow(em: Emitter, x: ll.Value, y: ll.Value) -> ll.Value:
    """Integer power by square-and-multiply over every exponent bit (branch-free).
    A negative exponent gives 1/x**|y| truncated: 1 for x == 1, +-1 for x == -1, else 0."""
    width = scalar_of(x.type).width
    one, zero = em.const(1, x), em.const(0, x)
    acc, base, e = one, x, y
    for _ in range(width - 1):
        bit = em.b.trunc(e, ll.IntType(1))
        acc = em.select(bit, em.mul(acc, base), acc)
        base = em.mul(base, base)
        e = em.b.lshr(e, em.const(1, e))
    neg = em.lt(y, zero)
    odd = em.b.trunc(y, ll.IntType(1))
    inv = em.select(em.eq(x, one), one,
                    em.select(em.eq(x, em.const(-1, x)), em.select(odd, em.neg(one), one), zero))
    return em.select(neg, inv, acc)
