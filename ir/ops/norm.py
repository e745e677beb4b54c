"""Statistics and normalisation: var, std, layer_norm, batch_norm. Composites of the reductions
and elementwise ops: the fusion pass makes them row kernels, autodiff their gradients. The
variance is the two-pass ``mean((x - mean)^2)`` (no ``E[x^2] - E[x]^2`` cancellation)."""
from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from graphc.ir.core import Value, make
from graphc.ir.errors import GraphTypeError
from graphc.ir.ops.reduce import REDUCE_ATTRS
from graphc.ir.ops.registry import COMPOSITE, defop
from graphc.ir.ops.rules import (
    FLOAT,
    as_float,
    as_int,
    broadcast_to_shape,
    canon_reduce,
    count,
    fail,
    norm_axes,
    require,
    sample,
)
from graphc.ir.types import TensorType


def _canon_var(name: str, types: tuple[TensorType, ...], attrs: dict[str, Any]
               ) -> dict[str, Any]:
    require(name, FLOAT, types[0])
    out = canon_reduce(name, types, attrs)
    out["ddof"] = as_int(name, "ddof", attrs["ddof"])
    if out["ddof"] < 0:
        raise GraphTypeError(f"{name}: negative ddof {out['ddof']}")
    return out


def _divide(total: Value, n: Any) -> Value:
    """total / n, n a (symbolic) count read at run time when not static."""
    return total / (n if isinstance(n, int) else make("dim", value=n, dtype=total.dtype))


def centred(x: Value, axis: tuple[int, ...]) -> Value:
    return x - make("mean", x, axis=axis, keepdims=True)


def variance(x: Value, axis: tuple[int, ...], keepdims: bool = True, ddof: int = 0) -> Value:
    total = make("sum", make("square", centred(x, axis)), axis=axis, keepdims=keepdims)
    return _divide(total, count(x.shape, axis) - ddof)


def _var_ref(x: np.ndarray, *, axis: tuple, keepdims: bool, ddof: int) -> np.ndarray:
    n = int(np.prod([x.shape[a] for a in axis]))
    dev = x - (np.mean(x, axis=axis, keepdims=True) if n else 0)
    with np.errstate(all="ignore"):
        return np.sum(dev * dev, axis=axis, keepdims=keepdims) / np.asarray(n - ddof, x.dtype)


VAR_ATTRS = REDUCE_ATTRS + (("ddof", 0),)
VAR_SAMPLES = (sample("f32[N,3]"), sample("f32[N,3]", axis=1),
               sample("f64[2,N,3]", axis=(0, 2), keepdims=True),
               sample("f64[N,4]", axis=-1, ddof=1), sample("f32[5]"))

defop("var", COMPOSITE, ("x",), attrs=VAR_ATTRS, canon=partial(_canon_var, "var"),
      decompose=lambda x, *, axis, keepdims, ddof: variance(x, axis, keepdims, ddof),
      ref=_var_ref, samples=VAR_SAMPLES)
defop("std", COMPOSITE, ("x",), attrs=VAR_ATTRS, canon=partial(_canon_var, "std"),
      decompose=lambda x, *, axis, keepdims, ddof: make("sqrt", variance(x, axis, keepdims,
                                                                         ddof)),
      ref=lambda x, **a: np.sqrt(_var_ref(x, **a)),
      # the gradient of sqrt at 0 is infinite: keep every sampled row away from constant
      samples=tuple(s for s in VAR_SAMPLES if s.types != ("f32[N,3]",) or s.attrs))

# ---------------------------------------------------------------------------- normalisation


def _canon_norm(name: str, axis_attr: bool, types: tuple[TensorType, ...],
                attrs: dict[str, Any]) -> dict[str, Any]:
    x = types[0]
    require(name, FLOAT, *types)
    if x.rank == 0:
        raise fail(name, types, "needs x of rank >= 1")
    for t in types[1:]:
        broadcast_to_shape(name, t, x.shape)
    out = {"eps": as_float(name, "eps", attrs["eps"])}
    if axis_attr:
        out["axis"] = norm_axes(name, attrs["axis"], x.rank)
    return out


def normalise(x: Value, mean: Value, var: Value, gamma: Value, beta: Value, eps: float
              ) -> Value:
    return (x - mean) * make("rsqrt", var + eps) * gamma + beta


def _layer_norm(x: Value, gamma: Value, beta: Value, *, axis: tuple[int, ...], eps: float
                ) -> Value:
    mean = make("mean", x, axis=axis, keepdims=True)
    return normalise(x, mean, variance(x, axis), gamma, beta, eps)


def _norm_ref(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, *, axis: tuple, eps: float
              ) -> np.ndarray:
    with np.errstate(all="ignore"):
        mean = np.mean(x, axis=axis, keepdims=True)
        var = np.mean((x - mean) ** 2, axis=axis, keepdims=True)
    return ((x - mean) / np.sqrt(var + np.asarray(eps, x.dtype)) * gamma + beta).astype(x.dtype)


defop("layer_norm", COMPOSITE, ("x", "gamma", "beta"), attrs=(("axis", -1), ("eps", 1e-5)),
      canon=partial(_canon_norm, "layer_norm", True), decompose=_layer_norm, ref=_norm_ref,
      samples=(sample("f32[N,4]", "f32[4]", "f32[4]"),
               sample("f64[N,3,2]", "f64[3,2]", "f64[]", axis=(1, 2), eps=1e-3),
               sample("f64[2,N]", "f64[2,1]", "f64[2,1]", axis=1)))


def _batch_axes(x: Value) -> tuple[int, ...]:
    return tuple(range(x.type.rank - 1))


def _batch_norm(x: Value, gamma: Value, beta: Value, *, eps: float) -> Value:
    axis = _batch_axes(x)
    mean = make("mean", x, axis=axis, keepdims=True)
    return normalise(x, mean, variance(x, axis), gamma, beta, eps)


defop("batch_norm", COMPOSITE, ("x", "gamma", "beta"), attrs=(("eps", 1e-5),),
      more_inputs="batch_norm_stats", canon=partial(_canon_norm, "batch_norm", False),
      decompose=_batch_norm,
      ref=lambda x, g, b, *, eps: _norm_ref(x, g, b, axis=tuple(range(x.ndim - 1)), eps=eps),
      samples=(sample("f32[N,3]", "f32[3]", "f32[3]"),
               sample("f64[N,2,2,3]", "f64[3]", "f64[3]", eps=1e-3)))


def _batch_norm_stats(x: Value, gamma: Value, beta: Value, mean: Value, var: Value, *,
                      eps: float) -> Value:
    return normalise(x, mean, var, gamma, beta, eps)


defop("batch_norm_stats", COMPOSITE, ("x", "gamma", "beta", "mean", "var"),
      attrs=(("eps", 1e-5),), canon=partial(_canon_norm, "batch_norm_stats", False),
      decompose=_batch_norm_stats,
      ref=lambda x, g, b, m, v, *, eps: ((x - m) / np.sqrt(v + np.asarray(eps, x.dtype)) * g
                                         + b).astype(x.dtype),
      domain=((-2.0, 2.0), (-2.0, 2.0), (-2.0, 2.0), (-1.0, 1.0), (0.5, 2.0)),
      samples=(sample("f32[N,3]", "f32[3]", "f32[3]", "f32[3]", "f32[3]"),
               sample("f64[N,2,3]", "f64[3]", "f64[3]", "f64[3]", "f64[3]", eps=1e-3)))

