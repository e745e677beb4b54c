"""Pooling, channels last (NHWC) as ``jax.lax`` reduce_window: the windows of the (padded) input
stacked on a new axis and reduced with ``max`` or ``sum`` (ties in a max window share the gradient,
as the reduction's rule says). A window that tiles the input is a ``reshape`` instead, and a max
over tiles the primitive ``window_max``, whose gradient ``window_max_grad`` counts each window's
ties and divides once per window (the reduction's rule divides at every input element)."""
from __future__ import annotations

from typing import Any

import numpy as np

from graphc.ir.core import Value, make
from graphc.ir.ops.registry import COMPOSITE, MOVEMENT, PRESERVES_FINITE, REQUIRED, defop
from graphc.ir.ops.rules import FLOAT, fail, require, sample
from graphc.ir.ops.window import out_len, pad_value, padding_pairs, pair, windows
from graphc.ir.types import DimLike, TensorType


def _canon_pool(name: str, types: tuple[TensorType, ...], attrs: dict[str, Any]
                ) -> dict[str, Any]:
    x = types[0]
    require(name, FLOAT, x)
    if x.rank != 4:
        raise fail(name, types, "needs x [N,H,W,C]")
    window = pair(name, "window", attrs["window"], 2)
    stride = window if attrs["stride"] is None else pair(name, "stride", attrs["stride"], 2)
    pads = padding_pairs(name, attrs["padding"], x.shape[1:3], window, stride)
    for d, (lo, hi), k, s in zip(x.shape[1:3], pads, window, stride):
        out_len(name, d, lo, hi, k, s)
    return {"window": window, "stride": stride, "padding": pads}


def _pooled(name: str, how: str, x: Value, window: tuple, stride: tuple, padding: tuple
            ) -> Value:
    """Sum or max over each window: a reshape when the windows tile x, else stacked taps."""
    out_hw = tuple(out_len(name, d, lo, hi, k, s) for d, (lo, hi), k, s in
                   zip(x.shape[1:3], padding, window, stride))
    tiles = stride == window and all(p == (0, 0) for p in padding) and \
        all(isinstance(o, int) for o in out_hw)
    if tiles:
        (oh, ow), (kh, kw) = out_hw, window
        n, h, w, c = x.shape
        if (h, w) != (oh * kh, ow * kw):
            x = make("slice", x, start=(0, 0, 0, 0), stop=(n, oh * kh, ow * kw, c))
        if how == "max":
            return make("window_max", x, window=window)
        x = make("reshape", x, shape=(n, oh, kh, ow, kw, c))
        return make(how, x, axis=(2, 4))
    fill = -np.inf if how == "max" else 0
    xp = pad_value(x, ((0, 0),) + padding + ((0, 0),), fill)
    taps = windows(xp, window, stride, (1, 1), out_hw)
    if len(taps) == 1:
        return taps[0]
    stacked = make("concat", *(make("expand_dims", t, axis=3) for t in taps), axis=3)
    return make(how, stacked, axis=3)


def pool_ref(how: str, x: np.ndarray, *, window: tuple, stride: tuple, padding: tuple
             ) -> np.ndarray:
    fill = -np.inf if how == "max" else 0
    xp = np.pad(x, ((0, 0),) + tuple(padding) + ((0, 0),), constant_values=fill)
    outs = tuple((xp.shape[1 + a] - window[a]) // stride[a] + 1 for a in range(2))
    out = np.full((x.shape[0],) + outs + (x.shape[3],), fill, x.dtype)
    for i, j in np.ndindex(*outs):
        win = xp[:, i * stride[0]:i * stride[0] + window[0],
                 j * stride[1]:j * stride[1] + window[1]]
        out[:, i, j] = win.max(axis=(1, 2), initial=-np.inf) if how == "max" else \
            win.sum(axis=(1, 2)) / (window[0] * window[1])
    return out


def _canon_tiles(name: str, types: tuple[TensorType, ...], attrs: dict[str, Any]
                 ) -> dict[str, Any]:
    x = types[0]
    require(name, FLOAT, *types)
    window = pair(name, "window", attrs["window"], 2)
    if x.rank != 4 or any(not isinstance(d, int) or d % k for d, k in zip(x.shape[1:3], window)):
        raise fail(name, types, f"needs x [N,H,W,C] with H and W static multiples of {window}")
    return {"window": window}


def _tiles(x: np.ndarray, window: tuple) -> np.ndarray:
    n, h, w, c = x.shape
    return x.reshape(n, h // window[0], window[0], w // window[1], window[1], c)


def _tiled_shape(x: TensorType, window: tuple) -> tuple[DimLike, ...]:
    n, h, w, c = x.shape
    return (n, h // window[0], w // window[1], c)


def _window_max_grad_type(x: TensorType, out: TensorType, g: TensorType, *, window: tuple
                          ) -> TensorType:
    if out.shape != _tiled_shape(x, window) or g.shape != out.shape:
        raise fail("window_max_grad", (x, out, g), "out and g must be x's window maxima")
    return x


def _window_max_grad_ref(x: np.ndarray, out: np.ndarray, g: np.ndarray, *, window: tuple
                         ) -> np.ndarray:
    hit = (_tiles(x, window) == out[:, :, None, :, None]).astype(x.dtype)
    gx = g[:, :, None, :, None] * hit / hit.sum(axis=(2, 4), keepdims=True)
    return gx.reshape(x.shape)


def _window_max_grad_vjp(ct: Value, gx: Value, x: Value, out: Value, g: Value, *,
                         window: tuple) -> list[Value | None]:
    """Linear in g, its transpose: each window sums its cotangents' shares; the shares are
    constant between ties (no gradient for x or out)."""
    n, oh, ow, c = out.shape
    tiles = (n, oh, window[0], ow, window[1], c)
    hit = make("cast", make("eq", make("reshape", x, shape=tiles),
                            make("reshape", out, shape=(n, oh, 1, ow, 1, c))), dtype=x.dtype)
    share = make("sum", hit, axis=(2, 4), keepdims=True)
    return [None, None, make("sum", make("reshape", ct, shape=tiles) * hit / share,
                             axis=(2, 4))]


defop("window_max", MOVEMENT, ("x",), attrs=(("window", REQUIRED),),
      canon=lambda types, a: _canon_tiles("window_max", types, a),
      infer=lambda x, *, window: x.with_shape(_tiled_shape(x, window)),
      ref=lambda x, *, window: _tiles(x, window).max(axis=(2, 4), initial=-np.inf),
      vjp=lambda g, out, x, *, window: [make("window_max_grad", x, out, g, window=window)],
      dsl=False,                                    # max_pool2d over windows that tile x
      samples=(sample("f32[N,4,6,2]", window=2, sizes=(0, 1, 2)),
               sample("f64[N,6,3,3]", window=(3, 1), sizes=(0, 1, 2))),
      traits=(PRESERVES_FINITE,))
defop("window_max_grad", MOVEMENT, ("x", "out", "g"), attrs=(("window", REQUIRED),),
      canon=lambda types, a: _canon_tiles("window_max_grad", types, a),
      infer=_window_max_grad_type, ref=_window_max_grad_ref,
      vjp=_window_max_grad_vjp, dsl=False,            # window_max's gradient
      # out must be x's window maxima: x drawn so that every window's max is 1, twice (f32)
      # or thrice (f64); out all 1s. The gradient is linear in g and flat in x and out but
      # jumps at ties, which finite differences cannot follow: tests/runtime/test_col2im.py
      samples=(sample("f32[N,4,6,2]", "f32[N,2,3,2]", "f32[N,2,3,2]", window=2, grad=False,
                      sizes=(0, 1, 2), domain=((0.0, 1.0, 1.0, 0.5), (1.0,) * 3, None)),
               sample("f64[N,6,3,3]", "f64[N,2,3,3]", "f64[N,2,3,3]", window=(3, 1),
                      grad=False, sizes=(0, 1, 2), domain=((1.0,) * 3, (1.0,) * 3, None))))


POOL_ATTRS = (("window", 2), ("stride", None), ("padding", "valid"))
POOL_SAMPLES = (sample("f32[N,4,6,2]", sizes=(0, 1, 2)),
                sample("f64[N,5,5,2]", window=3, stride=2, padding="same", sizes=(0, 1, 2)),
                sample("f32[N,5,4,3]", window=(2, 3), stride=1, sizes=(0, 1, 2)),
                sample("f64[N,5,7,1]", window=2, padding=((1, 0), (0, 1)), sizes=(0, 1, 2)),
                sample("f32[2,3,N,2]", window=(3, 1), stride=1, sizes=(0, 1, 2)))

defop("max_pool2d", COMPOSITE, ("x",), attrs=POOL_ATTRS,
      canon=lambda types, a: _canon_pool("max_pool2d", types, a),
      decompose=lambda x, *, window, stride, padding: _pooled("max_pool2d", "max", x, window,
                                                              stride, padding),
      ref=lambda x, **a: pool_ref("max", x, **a),
      samples=POOL_SAMPLES)  # ties: tests/ops/test_conv.py
defop("avg_pool2d", COMPOSITE, ("x",), attrs=POOL_ATTRS,
      canon=lambda types, a: _canon_pool("avg_pool2d", types, a),
      decompose=lambda x, *, window, stride, padding: _pooled(
          "avg_pool2d", "sum", x, window, stride, padding) / (window[0] * window[1]),
      ref=lambda x, **a: pool_ref("sum", x, **a), samples=POOL_SAMPLES)

