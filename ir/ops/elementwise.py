"""Elementwise ops: each one's shape rule, NumPy reference, VJP and scalar lowering. Binary ops
broadcast (static-1 rule, rules.broadcast_shapes); dtypes never mix implicitly."""
from __future__ import annotations

import math
from functools import partial
from typing import Any, Callable

import numpy as np

from graphc.ir.core import Value, make
from graphc.ir.ops.registry import (
    ACCUMULATES,
    ASSOCIATIVE,
    CHEAP,
    COMMUTATIVE,
    ELEMENTWISE,
    IDEMPOTENT,
    PRESERVES_FINITE,
    REQUIRED,
    OpDef,
    defop,
)
from graphc.ir.ops.rules import (
    ANY,
    BOOL,
    FLOAT,
    NUMERIC,
    as_dtype,
    as_float,
    binary,
    broadcast_shapes,
    call,
    fail,
    no_grad,
    require,
    sample,
    to_bool,
    unary,
)
from graphc.ir.types import DType, TensorType

REALS = (-2.0, 2.0)
POSITIVE = (0.2, 3.0)
UNARY_SAMPLES = (sample("f32[N,3]"), sample("f64[]"), sample("f32[2,N,2]", sizes=(2,)))
INT_SAMPLES = (sample("i32[N,3]"), sample("i64[]"))
BINARY_SAMPLES = (sample("f32[N,3]", "f32[N,3]"), sample("f32[N,3]", "f32[3]"),
                  sample("f64[N,1]", "f64[1,4]"), sample("f32[]", "f32[N]"),
                  sample("f32[2,1,3]", "f32[N,1]", sizes=(1, 2)))
INT_BINARY_SAMPLES = (sample("i32[N,3]", "i32[3]"), sample("i64[]", "i64[N]"))


def unary_op(name: str, kind: str, ref: Callable[..., Any], vjp: Callable[..., Any] | None,
             lower: Callable[..., Any], *, domain: tuple[Any, ...] = (REALS,),
             samples: tuple[Any, ...] = UNARY_SAMPLES, **fields: Any) -> OpDef:
    """Declare a one-operand elementwise op (its dtype class ``kind``: FLOAT, NUMERIC, ...)."""
    if kind != FLOAT and samples is UNARY_SAMPLES:
        samples = UNARY_SAMPLES + INT_SAMPLES
    return defop(name, ELEMENTWISE, ("x",), infer=partial(unary, kind, name), ref=ref, vjp=vjp,
                 lower=lower, domain=domain, samples=samples, **fields)


def binary_op(name: str, kind: str, ref: Callable[..., Any], vjp: Callable[..., Any] | None,
              lower: Callable[..., Any], *, domain: tuple[Any, ...] = (REALS, REALS),
              samples: tuple[Any, ...] = BINARY_SAMPLES, out: DType | None = None,
              **fields: Any) -> OpDef:
    """Declare a broadcasting two-operand elementwise op."""
    if kind == NUMERIC and samples is BINARY_SAMPLES:
        samples = BINARY_SAMPLES + INT_BINARY_SAMPLES
    infer = partial(binary, kind, name, out=out) if out else partial(binary, kind, name)
    return defop(name, ELEMENTWISE, ("x", "y"), infer=infer, ref=ref, vjp=vjp, lower=lower,
                 domain=domain, samples=samples, **fields)


def mask(c: Value, like: Value) -> Value:
    """A bool condition as 0/1 in ``like``'s dtype."""
    return make("cast", c, dtype=like.dtype)


# ---------------------------------------------------------------------------- unary

unary_op("neg", NUMERIC, np.negative, lambda g, out, x: [-g], lambda em, x: em.neg(x),
         traits=(CHEAP, PRESERVES_FINITE))
unary_op("abs", NUMERIC, np.abs,
         lambda g, out, x: [g * make("sign", x)],          # abs'(0) = sign(0) = 0 (spec)
         lambda em, x: em.abs(x), traits=(CHEAP, PRESERVES_FINITE))


def _lower_sign(em: Any, x: Any) -> Any:
    zero, one = em.const(0, x), em.const(1, x)
    # x - x keeps NaN (and is 0 for integers) and makes -0.0 into +0.0, as np.sign does
    return em.select(em.gt(x, zero), one,
                     em.select(em.lt(x, zero), em.neg(one), em.sub(x, x)))


unary_op("sign", NUMERIC, np.sign, no_grad, _lower_sign, differentiable=False,
         traits=(CHEAP, PRESERVES_FINITE))
unary_op("exp", FLOAT, np.exp, lambda g, out, x: [g * out], lambda em, x: em.exp(x))
unary_op("log", FLOAT, np.log, lambda g, out, x: [g / x], lambda em, x: em.log(x),
         domain=(POSITIVE,))
unary_op("log1p", FLOAT, np.log1p, lambda g, out, x: [g / (1 + x)], lambda em, x: em.log1p(x),
         domain=((-0.6, 2.0),))
unary_op("sqrt", FLOAT, np.sqrt, lambda g, out, x: [g / (2 * out)], lambda em, x: em.sqrt(x),
         domain=(POSITIVE,))
unary_op("rsqrt", FLOAT, lambda x: 1 / np.sqrt(x),
         lambda g, out, x: [g * -0.5 * out / x],
         lambda em, x: em.div(em.const(1, x), em.sqrt(x)), domain=(POSITIVE,))
unary_op("square", NUMERIC, np.square, lambda g, out, x: [g * (2 * x)],
         lambda em, x: em.mul(x, x), traits=(CHEAP,))
unary_op("reciprocal", FLOAT, lambda x: 1 / x, lambda g, out, x: [-g * out * out],
         lambda em, x: em.div(em.const(1, x), x), domain=(POSITIVE,))
unary_op("sin", FLOAT, np.sin, lambda g, out, x: [g * make("cos", x)], lambda em, x: em.sin(x),
         traits=(PRESERVES_FINITE,))
unary_op("cos", FLOAT, np.cos, lambda g, out, x: [-g * make("sin", x)], lambda em, x: em.cos(x),
         traits=(PRESERVES_FINITE,))
unary_op("tanh", FLOAT, np.tanh, lambda g, out, x: [g * (1 - out * out)],
         lambda em, x: em.tanh(x), traits=(PRESERVES_FINITE,))
unary_op("sigmoid", FLOAT, lambda x: 1 / (1 + np.exp(-x)),
         lambda g, out, x: [g * out * (1 - out)],
         lambda em, x: em.div(em.const(1, x), em.add(em.const(1, x), em.exp(em.neg(x)))),
         domain=((-5.0, 5.0),), traits=(PRESERVES_FINITE,))
unary_op("relu", NUMERIC, lambda x: np.maximum(x, 0),          # maximum keeps NaN
         lambda g, out, x: [call("where", call("gt", x, 0), g, 0)],   # relu'(0) = 0 (spec)
         lambda em, x: em.maximum(x, em.const(0, x)), traits=(CHEAP, PRESERVES_FINITE))

def canon_alpha(name: str) -> Callable[..., dict[str, Any]]:
    return lambda types, attrs: dict(alpha=as_float(name, "alpha", attrs["alpha"]))


unary_op("leaky_relu", FLOAT, lambda x, *, alpha: np.where(x >= 0, x, alpha * x),
         # x >= 0 takes slope 1 at 0, as jax.nn.leaky_relu does
         lambda g, out, x, *, alpha: [call("where", call("ge", x, 0), g, g * alpha)],
         lambda em, x, *, alpha: em.select(em.ge(x, em.const(0, x)), x,
                                           em.mul(em.const(alpha, x), x)),
         attrs=(("alpha", 0.01),), canon=canon_alpha("leaky_relu"),
         samples=UNARY_SAMPLES + (sample("f32[N]", alpha=0.3),), traits=(CHEAP,))

unary_op("elu", FLOAT,
         lambda x, *, alpha: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))),
         lambda g, out, x, *, alpha: [call("where", call("gt", x, 0), g, g * (out + alpha))],
         lambda em, x, *, alpha: em.select(em.gt(x, em.const(0, x)), x,
                                           em.mul(em.const(alpha, x), em.expm1(x))),
         attrs=(("alpha", 1.0),), canon=canon_alpha("elu"),
         samples=UNARY_SAMPLES + (sample("f64[N]", alpha=0.5),))


def _lower_softplus(em: Any, x: Any) -> Any:
    # log(1 + e^x) = max(x, 0) + log1p(e^-|x|): never overflows; maximum keeps NaN
    return em.add(em.maximum(x, em.const(0, x)), em.log1p(em.exp(em.neg(em.abs(x)))))


unary_op("softplus", FLOAT, lambda x: np.logaddexp(x, 0),
         lambda g, out, x: [g * make("sigmoid", x)], _lower_softplus, domain=((-5.0, 5.0),))

GELU_C = math.sqrt(2 / math.pi)
GELU_K = 0.044715


def _gelu_vjp(g: Value, out: Value, x: Value) -> list[Value]:
    # 0.5 * (1 + tanh(u)) = sigmoid(2u) and 1 - tanh(u)^2 = 4 s (1 - s): no cancellation
    s = make("sigmoid", 2 * (GELU_C * (x + GELU_K * x * x * x)))
    du = GELU_C * (1 + 3 * GELU_K * x * x)
    return [g * (s + 2 * x * s * (1 - s) * du)]


def _gelu_ref(x: np.ndarray) -> np.ndarray:
    """0.5 x (1 + tanh(u)) written as x sigmoid(2u): ``1 + tanh(u)`` cancels for x < -2. For
    large negative x the result is a tiny multiple of exp(2u), whose relative error is |2u| times
    that of u, so f32 is evaluated in f64 (as the lowering does)."""
    x64 = x.astype(np.float64)
    u = GELU_C * (x64 + GELU_K * x64 * x64 * x64)
    e = np.exp(-2 * np.abs(u))                  # sigmoid(2u) = 1/(1+e), or e/(1+e) for u < 0
    return (x64 * np.where(u < 0, e, 1.0) / (1 + e)).astype(x.dtype)


def _lower_gelu(em: Any, x: Any) -> Any:
    wide = em.widen(x)
    c = lambda v: em.const(v, wide)  # noqa: E731
    u = em.mul(c(GELU_C), em.add(wide, em.mul(c(GELU_K), em.mul(wide, em.mul(wide, wide)))))
    e = em.exp(em.mul(c(-2.0), em.abs(u)))
    num = em.select(em.lt(u, c(0.0)), em.mul(wide, e), wide)
    return em.narrow(em.div(num, em.add(c(1.0), e)), x)


unary_op("gelu", FLOAT, _gelu_ref, _gelu_vjp, _lower_gelu, domain=((-3.0, 3.0),),
         doc="tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))")
unary_op("stop_gradient", ANY, lambda x: x, no_grad, lambda em, x: x, differentiable=False,
         samples=UNARY_SAMPLES + INT_SAMPLES, traits=(CHEAP, PRESERVES_FINITE))
defop("isfinite", ELEMENTWISE, ("x",), infer=partial(to_bool, NUMERIC, "isfinite"),
      ref=np.isfinite, vjp=no_grad,
      lower=lambda em, x: em.isfinite(x), differentiable=False, domain=(REALS,),
      samples=UNARY_SAMPLES + INT_SAMPLES, traits=(CHEAP,))
unary_op("logical_not", BOOL, np.logical_not, no_grad, lambda em, x: em.not_(x),
         differentiable=False, samples=(sample("bool[N,3]"), sample("bool[]")), traits=(CHEAP,))


def _cast_ref(x: np.ndarray, *, dtype: DType) -> np.ndarray:
    """NumPy ``astype``, made total where it is undefined: float -> int truncates toward zero
    and saturates at the int dtype's range, NaN -> 0 (LLVM's fptosi.sat, what JAX gives on
    CPU); NumPy itself returns INT_MIN there."""
    if x.dtype.kind != "f" or not dtype.is_int:
        return x.astype(dtype.np)
    info = np.iinfo(dtype.np)
    top = float(2 ** (info.bits - 1))          # a power of two: exact in every float dtype
    fits = (x > -top) & (x < top)              # NaN fails both tests
    out = np.where(fits, x, 0).astype(dtype.np)
    out = np.where(x >= top, info.max, out)
    return np.where(x <= -top, info.min, out).astype(dtype.np)


def _cast_vjp(g: Value, out: Value, x: Value, *, dtype: DType) -> list[Value | None]:
    return [make("cast", g, dtype=x.dtype) if x.dtype.is_float else None]


defop("cast", ELEMENTWISE, ("x",), attrs=(("dtype", REQUIRED),),
      canon=lambda types, a: dict(dtype=as_dtype(a["dtype"])),
      infer=lambda x, *, dtype: x.with_dtype(dtype),
      ref=_cast_ref, vjp=_cast_vjp,
      lower=lambda em, x, *, dtype: em.cast(x, dtype), domain=(REALS,),
      samples=(sample("f32[N,3]", dtype=DType.f64), sample("f64[N]", dtype=DType.f32),
               sample("f32[N]", dtype=DType.i32, grad=False), sample("i32[N]", dtype=DType.f32),
               sample("bool[N]", dtype=DType.f32), sample("f64[]", dtype=DType.bool)),
               traits=(CHEAP,))

# ---------------------------------------------------------------------------- binary

binary_op("add", NUMERIC, np.add, lambda g, out, x, y: [g, g], lambda em, x, y: em.add(x, y),
          traits=(COMMUTATIVE, ASSOCIATIVE, CHEAP))
binary_op("accumulate", NUMERIC, np.add, lambda g, out, x, y: [g, g],
          lambda em, x, y: em.add(x, y), traits=(ACCUMULATES,), dsl=False,
          doc="acc + x, materialized: a running sum over micro-batches, updated in place")
binary_op("sub", NUMERIC, np.subtract, lambda g, out, x, y: [g, -g],
          lambda em, x, y: em.sub(x, y), traits=(CHEAP,))
binary_op("mul", NUMERIC, np.multiply, lambda g, out, x, y: [g * y, g * x],
          lambda em, x, y: em.mul(x, y), traits=(COMMUTATIVE, ASSOCIATIVE, CHEAP))


def _div_vjp(g: Value, out: Value, x: Value, y: Value) -> list[Value]:
    gx = g / y
    return [gx, -gx * out]


binary_op("div", FLOAT, np.divide, _div_vjp, lambda em, x, y: em.div(x, y),
          domain=(REALS, POSITIVE))


def _pow_ref(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if x.dtype.kind != "i":
        out = np.power(x, y)                   # C pow: (-2.0) ** 3.0 is exactly -8
        # NumPy takes a sqrt shortcut for y == 0.5; C pow gives pow(-inf, .5) = +inf and
        # pow(-0., .5) = +0.
        half = (y == 0.5) & ((x == 0) | np.isneginf(x))
        return np.where(half, np.abs(x), out) if half.any() else out
    # integers: a negative exponent truncates 1 / x**|y| toward zero (only 1 and -1 survive)
    neg = y < 0
    pos = np.power(x, np.where(neg, 0, y))
    inv = np.where(x == 1, 1, np.where(x == -1, np.where(y % 2 == 0, 1, -1), 0))
    return np.where(neg, inv, pos).astype(x.dtype)


def _pow_vjp(g: Value, out: Value, x: Value, y: Value) -> list[Value]:
    # as jax: d/dx is 0 where y == 0 (no 0 * inf); d/dy uses log(1) where x == 0 (0^y stays 0)
    safe_y = call("where", call("eq", y, 0), 1, y)
    gx = call("where", call("eq", y, 0), 0, g * safe_y * x ** (safe_y - 1))
    gy = g * out * make("log", call("where", call("eq", x, 0), 1, x))
    return [gx, gy]


binary_op("pow", NUMERIC, _pow_ref, _pow_vjp, lambda em, x, y: em.pow(x, y),
          domain=(POSITIVE, REALS),
          samples=BINARY_SAMPLES + (sample("i32[N,3]", "i32[3]", domain=((-3, 4), (-2, 4))),))


def _share(g: Value, x: Value, y: Value, win: str) -> list[Value]:
    """Gradient of maximum/minimum: the winner takes g, ties share it equally (spec)."""
    half = 0.5 * mask(call("eq", x, y), g)
    return [g * (mask(make(win, x, y), g) + half), g * (mask(make(win, y, x), g) + half)]


binary_op("maximum", NUMERIC, np.maximum, lambda g, out, x, y: _share(g, x, y, "gt"),
          lambda em, x, y: em.maximum(x, y),
          traits=(COMMUTATIVE, ASSOCIATIVE, IDEMPOTENT, CHEAP, PRESERVES_FINITE))
binary_op("minimum", NUMERIC, np.minimum, lambda g, out, x, y: _share(g, x, y, "lt"),
          lambda em, x, y: em.minimum(x, y),
          traits=(COMMUTATIVE, ASSOCIATIVE, IDEMPOTENT, CHEAP, PRESERVES_FINITE))

COMPARE_SAMPLES = (sample("f32[N,3]", "f32[3]"), sample("i64[N]", "i64[]"),
                   sample("bool[N,2]", "bool[N,2]"), sample("i32[4]", "i32[4]",
                                                            domain=((0, 2), (0, 2))))
binary_op("lt", ANY, np.less, no_grad, lambda em, x, y: em.lt(x, y), out=DType.bool,
          differentiable=False, samples=COMPARE_SAMPLES, traits=(CHEAP,))
binary_op("le", ANY, np.less_equal, no_grad, lambda em, x, y: em.le(x, y), out=DType.bool,
          differentiable=False, samples=COMPARE_SAMPLES, traits=(CHEAP,))
binary_op("gt", ANY, np.greater, no_grad, lambda em, x, y: em.gt(x, y), out=DType.bool,
          differentiable=False, samples=COMPARE_SAMPLES, traits=(CHEAP,))
binary_op("ge", ANY, np.greater_equal, no_grad, lambda em, x, y: em.ge(x, y), out=DType.bool,
          differentiable=False, samples=COMPARE_SAMPLES, traits=(CHEAP,))
binary_op("eq", ANY, np.equal, no_grad, lambda em, x, y: em.eq(x, y), out=DType.bool,
          differentiable=False, samples=COMPARE_SAMPLES, traits=(COMMUTATIVE, CHEAP))
binary_op("ne", ANY, np.not_equal, no_grad, lambda em, x, y: em.ne(x, y), out=DType.bool,
          differentiable=False, samples=COMPARE_SAMPLES, traits=(COMMUTATIVE, CHEAP))

LOGICAL_SAMPLES = (sample("bool[N,3]", "bool[3]"), sample("bool[]", "bool[N]"))
binary_op("logical_and", BOOL, np.logical_and, no_grad, lambda em, x, y: em.and_(x, y),
          differentiable=False, samples=LOGICAL_SAMPLES,
          traits=(COMMUTATIVE, ASSOCIATIVE, IDEMPOTENT, CHEAP))
binary_op("logical_or", BOOL, np.logical_or, no_grad, lambda em, x, y: em.or_(x, y),
          differentiable=False, samples=LOGICAL_SAMPLES,
          traits=(COMMUTATIVE, ASSOCIATIVE, IDEMPOTENT, CHEAP))


def _where_type(c: TensorType, x: TensorType, y: TensorType) -> TensorType:
    if c.dtype is not DType.bool:
        raise fail("where", (c, x, y), f"the condition must be bool, got {c.dtype}")
    dt = require("where", ANY, x, y)
    return TensorType(dt, broadcast_shapes("where", c, x, y))


defop("where", ELEMENTWISE, ("c", "x", "y"), infer=_where_type, ref=np.where,
      vjp=lambda g, out, c, x, y: [None, call("where", c, g, 0), call("where", c, 0, g)],
      lower=lambda em, c, x, y: em.select(c, x, y), domain=(None, REALS, REALS),
      samples=(sample("bool[N,3]", "f32[N,3]", "f32[N,3]"),
               sample("bool[N,1]", "f32[3]", "f32[]"),
               sample("bool[]", "i32[N]", "i32[N]")), traits=(CHEAP, PRESERVES_FINITE))
