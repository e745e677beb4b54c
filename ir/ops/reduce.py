"""Reductions over a tuple of axes (canonical: sorted, non-negative; the DSL's default None means
every axis). Empty reductions give the identity (sum 0, prod 1, max -inf); mean of nothing is
NaN."""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

import numpy as np

from graphc.ir.core import Value, make
from graphc.ir.ops.elementwise import mask
from graphc.ir.ops.registry import COMPOSITE, REDUCE, defop
from graphc.ir.ops.rules import (
    FLOAT,
    NUMERIC,
    call,
    canon_reduce,
    count,
    no_grad,
    reduce_identity,
    reduced_shape,
    require,
    sample,
)
from graphc.ir.types import DType, TensorType

REDUCE_ATTRS = (("axis", None), ("keepdims", False))
REDUCE_SAMPLES = (sample("f32[N,3]"), sample("f32[N,3]", axis=1),
                  sample("f32[N,3]", axis=-2, keepdims=True), sample("f64[2,N,3]", axis=(0, 2)),
                  sample("f64[2,N,3]", axis=(-1, 1), keepdims=True), sample("f32[]"),
                  sample("f32[4]", axis=()), sample("i32[N,3]", axis=0), sample("i64[N]"))


def _reduce_type(name: str, kind: str, x: TensorType, *, axis: tuple[int, ...], keepdims: bool,
                 out: DType | None = None) -> TensorType:
    require(name, kind, x)
    return TensorType(out or x.dtype, reduced_shape(x.shape, axis, keepdims))


def keep(g: Value, x: Value, axis: tuple[int, ...], keepdims: bool) -> Value:
    """A reduction's result (or cotangent) with the reduced axes kept as 1s, to broadcast."""
    return g if keepdims else make("reshape", g, shape=reduced_shape(x.shape, axis, True))


def reduce_op(name: str, ref: Callable[..., Any], vjp: Callable[..., Any], combine: str,
              identity: float, *, kind: str = NUMERIC, out: DType | None = None,
              samples: tuple[Any, ...] = REDUCE_SAMPLES, **fields: Any) -> None:
    defop(name, REDUCE, ("x",), attrs=REDUCE_ATTRS, canon=partial(canon_reduce, name),
          infer=partial(_reduce_type, name, kind, out=out), ref=ref, vjp=vjp, combine=combine,
          identity=identity, samples=samples, domain=((-2.0, 2.0),), **fields)


def _sum_vjp(g: Value, out: Value, x: Value, *, axis: tuple[int, ...], keepdims: bool
             ) -> list[Value]:
    return [make("broadcast_to", keep(g, x, axis, keepdims), shape=x.shape)]


def _extreme_vjp(g: Value, out: Value, x: Value, *, axis: tuple[int, ...], keepdims: bool
                 ) -> list[Value]:
    # every element equal to the extreme gets an equal share: ties split g (spec)
    hit = mask(call("eq", x, keep(out, x, axis, keepdims)), x)
    share = make("sum", hit, axis=axis, keepdims=True)
    return [keep(g, x, axis, keepdims) * hit / share]


def _extreme_ref(fn: Callable[..., Any], identity: float, x: np.ndarray, *,
                 axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    start = reduce_identity(identity, DType.from_np(x.dtype))
    return fn(x, axis=axis, keepdims=keepdims, initial=start)   # NaN propagates


reduce_op("sum", lambda x, *, axis, keepdims: np.sum(x, axis=axis, keepdims=keepdims,
                                                    dtype=x.dtype),
          _sum_vjp, "add", 0.0)

# exact zeros for the gradient (a domain of more than two numbers lists the values, repeated in
# row-major order): rows with one, two, none, two and three zeros; one zero and two in all
ZEROS = (0.0, 1.5, -0.75, 0.0, 0.0, 1.25, 0.5, -1.125, 0.875, 0.0, -1.5, 0.0, 0.0, 0.0, 0.0)
PROD_SAMPLES = REDUCE_SAMPLES + (
    sample("f64[N,3]", axis=1, domain=(ZEROS,), sizes=(1, 5)),
    sample("f32[5,3]", axis=0, keepdims=True, domain=(ZEROS,)),
    sample("f64[2,3]", domain=((0.5, -1.25, 0.0, 1.5, 0.75, -1.0),)),
    sample("f64[2,3]", domain=((0.5, 0.0, -1.25, 1.5, 0.0, -1.0),)))


def _prod_vjp(g: Value, out: Value, x: Value, *, axis: tuple[int, ...], keepdims: bool
              ) -> list[Value]:
    """d prod / d x_i is the product of the other elements, exact with zeros in x (as JAX):
    ``out / x_i`` where x_i != 0; at a zero, the product of the non-zero rest if it is the only
    zero, that times the other zero if there are two (0 in value, but its derivative is that
    product, so second derivatives hold at zeros too), else 0. Division by x never meets a 0."""
    zero = call("eq", x, 0)
    safe = call("where", zero, 1, x)
    rest = make("prod", safe, axis=axis, keepdims=True)      # the non-zero elements' product
    zeros = make("sum", mask(zero, x), axis=axis, keepdims=True)
    other = make("sum", call("where", zero, x, 0), axis=axis, keepdims=True) - x
    at_zero = call("where", call("eq", zeros, 1), rest,
                   call("where", call("eq", zeros, 2), rest * other, 0))
    others = call("where", zero, at_zero, keep(out, x, axis, keepdims) / safe)
    return [keep(g, x, axis, keepdims) * others]


reduce_op("prod", lambda x, *, axis, keepdims: np.prod(x, axis=axis, keepdims=keepdims,
                                                      dtype=x.dtype),
          _prod_vjp, "mul", 1.0, samples=PROD_SAMPLES)

reduce_op("max", partial(_extreme_ref, np.max, -np.inf), _extreme_vjp, "max", -np.inf)
reduce_op("min", partial(_extreme_ref, np.min, np.inf), _extreme_vjp, "min", np.inf)


def _arg_ref(fn: Callable[..., Any], x: np.ndarray, *, axis: tuple[int, ...], keepdims: bool
             ) -> np.ndarray:
    """First index of the extreme (first NaN wins, as NumPy) over the reduced axes flattened in
    row-major order; 0 where there is nothing to reduce."""
    rest = [i for i in range(x.ndim) if i not in axis]
    moved = np.transpose(x, rest + list(axis))
    flat = moved.reshape(moved.shape[:len(rest)] + (int(np.prod([x.shape[a] for a in axis])),))
    if flat.shape[-1] == 0:
        idx = np.zeros(flat.shape[:-1], np.int64)
    else:
        idx = fn(flat, axis=-1)
    return np.asarray(idx, np.int64).reshape(reduced_shape(x.shape, axis, keepdims))


reduce_op("argmax", partial(_arg_ref, np.argmax), no_grad, "argmax", -np.inf, out=DType.i64,
          differentiable=False, samples=REDUCE_SAMPLES)
reduce_op("argmin", partial(_arg_ref, np.argmin), no_grad, "argmin", np.inf, out=DType.i64,
          differentiable=False, samples=REDUCE_SAMPLES)

# ---------------------------------------------------------------------------- composites

FLOAT_REDUCE_SAMPLES = tuple(s for s in REDUCE_SAMPLES if s.types[0][0] == "f")


def _mean(x: Value, *, axis: tuple[int, ...], keepdims: bool) -> Value:
    require("mean", FLOAT, x.type)
    n = count(x.shape, axis)
    total = make("sum", x, axis=axis, keepdims=keepdims)
    # a symbolic count is read at run time; 0 elements give 0 / 0 = NaN
    return total / (n if isinstance(n, int) else make("dim", value=n, dtype=x.dtype))


defop("mean", COMPOSITE, ("x",), attrs=REDUCE_ATTRS, canon=partial(canon_reduce, "mean"),
      decompose=_mean, ref=lambda x, *, axis, keepdims: np.mean(x, axis=axis, keepdims=keepdims),
      samples=FLOAT_REDUCE_SAMPLES, domain=((-2.0, 2.0),))


def shift_by_max(x: Value, axis: tuple[int, ...]) -> tuple[Value, Value]:
    """``x - m`` and ``m``, m the max over ``axis`` (kept) as a constant (stop_gradient): the
    stable form of exp-sums. An infinite max (all -inf, or +inf) shifts by 0: no inf - inf."""
    top = make("max", x, axis=axis, keepdims=True)
    shift = make("stop_gradient", call("where", make("isfinite", top), top, 0))
    return x - shift, shift


def _logsumexp(x: Value, *, axis: tuple[int, ...], keepdims: bool) -> Value:
    require("logsumexp", FLOAT, x.type)
    shifted, shift = shift_by_max(x, axis)
    out = make("log", make("sum", make("exp", shifted), axis=axis, keepdims=True)) + shift
    return out if keepdims else make("reshape", out, shape=reduced_shape(x.shape, axis, False))


def _logsumexp_ref(x: np.ndarray, *, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True, initial=-np.inf)
    top = np.where(np.isfinite(top), top, 0)
    out = np.log(np.sum(np.exp(x - top), axis=axis, keepdims=True)) + top
    return out if keepdims else out.reshape(reduced_shape(x.shape, axis, False))


defop("logsumexp", COMPOSITE, ("x",), attrs=REDUCE_ATTRS,
      canon=partial(canon_reduce, "logsumexp"), decompose=_logsumexp, ref=_logsumexp_ref,
      samples=FLOAT_REDUCE_SAMPLES + (sample("f32[N,3]", axis=1, domain=((-200.0, 200.0),)),),
      domain=((-3.0, 3.0),))
