"""Neural-net composites: softmax, log_softmax, the losses and clip. Each builds stable
primitives (shifted exp-sums, softplus, clamped logs), never ``log(softmax(x))``."""
from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from graphc.ir.core import Value, lift, make
from graphc.ir.errors import GraphTypeError
from graphc.ir.ops.reduce import shift_by_max
from graphc.ir.ops.registry import COMPOSITE, defop, suggest
from graphc.ir.ops.rules import FLOAT, NUMERIC, call, fail, norm_axes, require, sample
from graphc.ir.types import DType, TensorType

# ---------------------------------------------------------------------------- softmax


def _canon_softmax(name: str, types: tuple[TensorType, ...], attrs: dict[str, Any]
                   ) -> dict[str, Any]:
    require(name, FLOAT, types[0])
    return dict(axis=norm_axes(name, attrs["axis"], types[0].rank))


def _softmax(x: Value, *, axis: tuple[int, ...]) -> Value:
    e = make("exp", shift_by_max(x, axis)[0])
    return e / make("sum", e, axis=axis, keepdims=True)


def _log_softmax(x: Value, *, axis: tuple[int, ...]) -> Value:
    shifted = shift_by_max(x, axis)[0]
    return shifted - make("log", make("sum", make("exp", shifted), axis=axis, keepdims=True))


def _log_softmax_ref(x: np.ndarray, *, axis: tuple[int, ...]) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True, initial=-np.inf)
    shifted = x - np.where(np.isfinite(top), top, 0)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


SOFTMAX_SAMPLES = (sample("f32[N,4]"), sample("f64[N,3]", axis=0), sample("f32[2,N,3]", axis=1),
                   sample("f64[N,3,2]", axis=(1, 2)), sample("f32[N,4]", domain=((-90., 90.),)))
defop("softmax", COMPOSITE, ("x",), attrs=(("axis", -1),),
      canon=partial(_canon_softmax, "softmax"), decompose=_softmax,
      ref=lambda x, *, axis: np.exp(_log_softmax_ref(x, axis=axis)), samples=SOFTMAX_SAMPLES)
defop("log_softmax", COMPOSITE, ("x",), attrs=(("axis", -1),),
      canon=partial(_canon_softmax, "log_softmax"), decompose=_log_softmax,
      ref=_log_softmax_ref, samples=SOFTMAX_SAMPLES)

# ---------------------------------------------------------------------------- losses

REDUCTIONS = ("none", "mean", "sum")


def _canon_loss(name: str, types: tuple[TensorType, ...], attrs: dict[str, Any]
                ) -> dict[str, Any]:
    r = attrs["reduction"]
    if r not in REDUCTIONS:
        raise GraphTypeError(f"{name}: reduction must be one of {', '.join(REDUCTIONS)}, got "
                             f"{r!r}" + suggest(str(r), list(REDUCTIONS)))
    return dict(reduction=r)


def _reduce_loss(loss: Value, reduction: str) -> Value:
    return loss if reduction == "none" else make(reduction, loss)


def _reduce_loss_ref(loss: np.ndarray, reduction: str) -> np.ndarray:
    return loss if reduction == "none" else getattr(np, reduction)(loss)


def loss_op(name: str, decompose: Any, ref: Any, default: str, samples: tuple[Any, ...],
            inputs: tuple[str, str], domain: tuple[Any, ...]) -> None:
    """Declare a loss: ``decompose``/``ref`` give the unreduced loss; ``reduction`` follows."""
    defop(name, COMPOSITE, inputs, attrs=(("reduction", default),),
          canon=partial(_canon_loss, name),
          decompose=lambda x, y, *, reduction: _reduce_loss(decompose(x, y), reduction),
          ref=lambda x, y, *, reduction: _reduce_loss_ref(ref(x, y), reduction),
          samples=samples + (sample(*samples[0].types, reduction="mean"),
                             sample(*samples[0].types, reduction="sum")),
          domain=domain)


def _same_float(name: str, x: Value, y: Value) -> None:
    require(name, FLOAT, x.type, y.type)
    if x.shape != y.shape or x.type.rank == 0:
        raise fail(name, (x.type, y.type), "needs two tensors of one shape, of rank >= 1")


def _softmax_ce(logits: Value, onehot: Value) -> Value:
    _same_float("softmax_cross_entropy", logits, onehot)
    return -make("sum", onehot * _log_softmax(logits, axis=(logits.type.rank - 1,)), axis=-1)


loss_op("softmax_cross_entropy", _softmax_ce,
        lambda x, y: -np.sum(y * _log_softmax_ref(x, axis=(x.ndim - 1,)), axis=-1), "none",
        (sample("f32[N,4]", "f32[N,4]"), sample("f64[2,N,3]", "f64[2,N,3]")),
        ("logits", "onehot"), ((-3.0, 3.0), (0.0, 1.0)))


def _sparse_ce(logits: Value, labels: Value) -> Value:
    if not labels.dtype.is_int or labels.shape != logits.shape[:-1] or not logits.dtype.is_float:
        raise fail("sparse_softmax_cross_entropy", (logits.type, labels.type),
                   "needs float logits [..., C] and integer labels [...]")
    last = logits.type.rank - 1
    hit = make("one_hot", labels, depth=logits.shape[-1], dtype=DType.bool, strict=True)
    picked = make("sum", call("where", hit, logits, 0), axis=last)   # where: no 0 * -inf
    return make("logsumexp", logits, axis=last) - picked


def _sparse_ce_ref(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    logp = _log_softmax_ref(x, axis=(x.ndim - 1,))
    return -np.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]


loss_op("sparse_softmax_cross_entropy", _sparse_ce, _sparse_ce_ref, "none",
        (sample("f32[N,4]", "i64[N]"), sample("f64[2,N,3]", "i32[2,N]")),
        ("logits", "labels"), ((-3.0, 3.0), (0, 3)))


def _sigmoid_ce(logits: Value, y: Value) -> Value:
    require("sigmoid_cross_entropy", FLOAT, logits.type, y.type)
    # -y log s(x) - (1-y) log(1 - s(x)) = softplus(x) - x y: stable for any x
    return make("softplus", logits) - logits * y


loss_op("sigmoid_cross_entropy", _sigmoid_ce,
        lambda x, y: np.logaddexp(0, x) - x * y, "none",
        (sample("f32[N,3]", "f32[N,3]"), sample("f64[N]", "f64[]")),
        ("logits", "y"), ((-4.0, 4.0), (0.0, 1.0)))


def _clamped_log(p: Value, one_minus: bool) -> Value:
    """max(log(p), -100) (or of log(1 - p)) as PyTorch's BCELoss; the inner where keeps the
    gradient finite (0) where p is 0 or 1 instead of 0 * inf."""
    ok = call("lt", p, 1) if one_minus else call("gt", p, 0)
    safe = call("where", ok, p, 0 if one_minus else 1)
    log = make("log1p", -safe) if one_minus else make("log", safe)
    return call("maximum", call("where", ok, log, -np.inf), -100)


def _bce(p: Value, y: Value) -> Value:
    require("binary_cross_entropy", FLOAT, p.type, y.type)
    return -(y * _clamped_log(p, False) + (1 - y) * _clamped_log(p, True))


def _bce_ref(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return -(y * np.maximum(np.log(p), -100) + (1 - y) * np.maximum(np.log1p(-p), -100))


loss_op("binary_cross_entropy", _bce, _bce_ref, "none",
        (sample("f32[N,3]", "f32[N,3]"), sample("f64[N]", "f64[]")),
        ("p", "y"), ((0.05, 0.95), (0.0, 1.0)))


def _mse(pred: Value, target: Value) -> Value:
    require("mse", FLOAT, pred.type, target.type)
    return make("square", pred - target)


loss_op("mse", _mse, lambda x, y: np.square(x - y), "mean",
        (sample("f32[N,3]", "f32[N,3]"), sample("f64[N]", "f64[]")),
        ("pred", "target"), ((-2.0, 2.0), (-2.0, 2.0)))

# ---------------------------------------------------------------------------- clip


def _clip(x: Value, lo: Any, hi: Any) -> Value:
    lo, hi = lift(lo, x), lift(hi, x)
    require("clip", NUMERIC, x.type, lo.type, hi.type)
    # maximum/minimum keep NaN; at lo or hi the gradient is shared, as jnp.clip's
    return make("minimum", make("maximum", x, lo), hi)


defop("clip", COMPOSITE, ("x", "lo", "hi"), decompose=_clip,
      ref=lambda x, lo, hi: np.minimum(np.maximum(x, lo), hi),
      domain=((-2.0, 2.0), (-1.5, -0.5), (0.5, 1.5)),
      samples=(sample("f32[N,3]", "f32[]", "f32[]"), sample("f64[N,3]", "f64[3]", "f64[N,1]"),
               sample("i32[N]", "i32[]", "i32[]", domain=((-5, 5), (-2, 0), (1, 3)))))
