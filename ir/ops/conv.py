"""Convolution and pooling, channels last as ``jax.lax`` defines them (NHWC input, HWIO kernel).

Composites, not primitives: a convolution is im2col built from ``pad`` and strided ``slice``s
(one per kernel tap, joined by ``concat`` on the channel axis), then one ``matmul`` against the
kernel seen as a ``[KH*KW*Cin, Cout]`` matrix, so that its speed is the GEMM's and the bias and
activation that follow fuse into it as into any matmul; its gradient is what autodiff makes of
those primitives (the slices' gradients are pads, summed). Pooling is the same windows stacked
on a new axis and the ``max`` / ``sum`` reductions (ties in a max window share the gradient, as
the reduction's rule says); a window that tiles the input is a ``reshape`` instead."""
from __future__ import annotations

from typing import Any

import numpy as np

from graphc.ir.core import Value, const, make
from graphc.ir.errors import GraphTypeError
from graphc.ir.ops.registry import COMPOSITE, defop
from graphc.ir.ops.rules import FLOAT, as_int, call, fail, require, sample
from graphc.ir.types import DimLike, DType, TensorType, dim_str

# ---------------------------------------------------------------------------- attributes


def _pair(name: str, what: str, v: Any, n: int) -> tuple[int, ...]:
    items = list(v) if isinstance(v, (list, tuple)) else [v] * n
    if len(items) != n:
        raise GraphTypeError(f"{name}: {what} needs 1 or {n} integers, got {v!r}")
    out = tuple(as_int(name, what, i) for i in items)
    if any(i < 1 for i in out):
        raise GraphTypeError(f"{name}: {what} must be positive, got {v!r}")
    return out


def _out_len(name: str, d: DimLike, lo: int, hi: int, span: int, stride: int) -> DimLike:
    """floor((d + lo + hi - span) / stride) + 1 windows; symbolic only with stride 1."""
    room = d + lo + hi - span
    if isinstance(room, int):
        if room < 0:
            raise GraphTypeError(f"{name}: a window of {span} does not fit in {d} "
                                 f"(padded by {lo}+{hi})")
        return room // stride + 1
    if stride != 1:
        raise GraphTypeError(f"{name}: a stride of {stride} over the symbolic dim "
                             f"{dim_str(d)} gives a length that is no polynomial; use stride 1 "
                             f"or a static size")
    return room + 1


def _pads(name: str, padding: Any, dims: tuple[DimLike, ...], spans: tuple[int, ...],
          strides: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """``"valid"``, ``"same"`` (output ceil(d / stride), the odd pad on the high side, as JAX),
    an int for every side, or one ``[lo, hi]`` per spatial axis."""
    n = len(dims)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * n
        if padding != "same":
            raise GraphTypeError(f"{name}: padding must be \"valid\", \"same\", an integer or "
                                 f"[lo, hi] per axis, got {padding!r}")
        out = []
        for d, span, s in zip(dims, spans, strides):
            if s == 1:
                total = span - 1
            elif isinstance(d, int):
                total = max((-(-d // s) - 1) * s + span - d, 0)
            else:
                raise GraphTypeError(f"{name}: padding \"same\" with stride {s} needs a static "
                                     f"size, got {dim_str(d)}")
            out.append((total // 2, total - total // 2))
        return tuple(out)
    if isinstance(padding, (list, tuple)) and len(padding) == n and all(
            isinstance(p, (list, tuple)) for p in padding):
        pairs = tuple(tuple(p) for p in padding)
    elif n == 1 and isinstance(padding, (list, tuple)) and len(padding) == 2:
        pairs = (tuple(padding),)
    else:
        pairs = ((padding, padding),) * n
    out = []
    for p in pairs:
        if len(p) != 2:
            raise GraphTypeError(f"{name}: padding needs [lo, hi] per axis, got {padding!r}")
        lo, hi = (as_int(name, "padding", v) for v in p)
        if lo < 0 or hi < 0:
            raise GraphTypeError(f"{name}: negative padding {padding!r}")
        out.append((lo, hi))
    return tuple(out)


def _canon_conv(name: str, rank: int, types: tuple[TensorType, ...], attrs: dict[str, Any]
                ) -> dict[str, Any]:
    x, w = types
    require(name, FLOAT, x, w)
    if x.rank != rank + 2 or w.rank != rank + 2:
        layout = ("[N,L,C]", "[K,Cin/groups,Cout]") if rank == 1 else \
            ("[N,H,W,C]", "[KH,KW,Cin/groups,Cout]")
        raise fail(name, types, f"needs x {layout[0]} and w {layout[1]}")
    groups = as_int(name, "groups", attrs["groups"])
    cin, cg, cout = x.shape[-1], w.shape[-2], w.shape[-1]
    if not all(isinstance(d, int) for d in w.shape) or not isinstance(cin, int):
        raise fail(name, types, "the kernel and the channel dims must be static")
    if groups < 1 or cin != cg * groups or cout % groups:
        raise fail(name, types, f"with groups={groups}, x's {cin} channels must be "
                   f"{groups} x the kernel's {cg} inputs, and {cout} outputs divide by "
                   f"{groups}")
    stride = _pair(name, "stride", attrs["stride"], rank)
    dilation = _pair(name, "dilation", attrs["dilation"], rank)
    spans = tuple((k - 1) * d + 1 for k, d in zip(w.shape[:rank], dilation))
    pads = _pads(name, attrs["padding"], x.shape[1:-1], spans, stride)
    for d, (lo, hi), span, s in zip(x.shape[1:-1], pads, spans, stride):
        _out_len(name, d, lo, hi, span, s)
    return {"stride": stride, "padding": pads, "dilation": dilation, "groups": groups}

# ---------------------------------------------------------------------------- windows


def pad_value(x: Value, pads: tuple[tuple[DimLike, DimLike], ...], value: Any) -> Value:
    """``pad`` with ``value`` (not 0) around: where(pad(True), pad(x), value)."""
    if all(lo == 0 and hi == 0 for lo, hi in pads):
        return x
    lo, hi = tuple(p[0] for p in pads), tuple(p[1] for p in pads)
    padded = make("pad", x, lo=lo, hi=hi)
    if value == 0:
        return padded
    inside = make("pad", const(True, DType.bool, x.shape), lo=lo, hi=hi)
    return call("where", inside, padded, value)


def windows(x: Value, kernel: tuple[int, int], stride: tuple[int, ...],
            dilation: tuple[int, ...], out_hw: tuple[DimLike, DimLike]) -> list[Value]:
    """One ``[N,OH,OW,C]`` slice of an (already padded) ``[N,H,W,C]`` per kernel tap, row-major
    over (kh, kw): tap (i, j) of output (oh, ow) is x[:, oh*sh + i*dh, ow*sw + j*dw, :]."""
    taps = []
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            start, stop = [0], [x.shape[0]]
            for t, s, d, o in zip((i, j), stride, dilation, out_hw):
                a = t * d
                start.append(a)
                stop.append(a if isinstance(o, int) and o == 0 else a + (o - 1) * s + 1)
            taps.append(make("slice", x, start=tuple(start) + (0,),
                             stop=tuple(stop) + (x.shape[3],), step=(1,) + stride + (1,)))
    return taps


def _conv2d(x: Value, w: Value, *, stride: tuple, padding: tuple, dilation: tuple,
            groups: int) -> Value:
    kh, kw, cg, cout = w.shape
    n = x.shape[0]
    spans = tuple((k - 1) * d + 1 for k, d in zip((kh, kw), dilation))
    out_hw = tuple(_out_len("conv2d", d, lo, hi, span, s) for d, (lo, hi), span, s in
                   zip(x.shape[1:3], padding, spans, stride))
    xp = pad_value(x, ((0, 0),) + padding + ((0, 0),), 0)
    taps = windows(xp, (kh, kw), stride, dilation, out_hw)
    patches = taps[0] if len(taps) == 1 else make("concat", *taps, axis=3)
    rows = n * out_hw[0] * out_hw[1]
    kk = kh * kw
    if groups == 1:
        cols = make("reshape", patches, shape=(rows, kk * cg))
        out = make("matmul", cols, make("reshape", w, shape=(kk * cg, cout)))
        return make("reshape", out, shape=(n,) + out_hw + (cout,))
    og = cout // groups
    cols = make("reshape", patches, shape=(rows, kk, groups, cg))
    cols = make("reshape", make("transpose", cols, perm=(2, 0, 1, 3)),
                shape=(groups, rows, kk * cg))
    wg = make("transpose", make("reshape", w, shape=(kk * cg, groups, og)), perm=(1, 0, 2))
    out = make("transpose", make("matmul", cols, wg), perm=(1, 0, 2))     # [rows, G, og]
    return make("reshape", out, shape=(n,) + out_hw + (cout,))


def conv_ref(x: np.ndarray, w: np.ndarray, *, stride: tuple, padding: tuple, dilation: tuple,
             groups: int) -> np.ndarray:
    """Per kernel tap and group, a strided view of the padded input times that tap's matrix."""
    rank = x.ndim - 2
    xp = np.pad(x, ((0, 0),) + tuple(padding) + ((0, 0),))
    ks, cg, cout = w.shape[:rank], w.shape[-2], w.shape[-1]
    og = cout // groups
    outs = tuple((xp.shape[1 + a] - (ks[a] - 1) * dilation[a] - 1) // stride[a] + 1
                 for a in range(rank))
    out = np.zeros((x.shape[0],) + outs + (cout,), x.dtype)
    for tap in np.ndindex(*ks):
        idx = (slice(None),) + tuple(
            slice(t * d, t * d + (o - 1) * s + 1 if o else t * d, s)
            for t, d, o, s in zip(tap, dilation, outs, stride))
        view = xp[idx]
        for g in range(groups):
            out[..., g * og:(g + 1) * og] += view[..., g * cg:(g + 1) * cg] @ \
                w[tap][:, g * og:(g + 1) * og]
    return out


def _conv1d(x: Value, w: Value, *, stride: tuple, padding: tuple, dilation: tuple,
            groups: int) -> Value:
    x2 = make("reshape", x, shape=(x.shape[0], 1) + x.shape[1:])
    w2 = make("reshape", w, shape=(1,) + w.shape)
    out = _conv2d(x2, w2, stride=(1,) + stride, padding=((0, 0),) + padding,
                  dilation=(1,) + dilation, groups=groups)
    return make("reshape", out, shape=(out.shape[0],) + out.shape[2:])


CONV_ATTRS = (("stride", 1), ("padding", "valid"), ("dilation", 1), ("groups", 1))
DOM = ((-2.0, 2.0), (-1.0, 1.0))

defop("conv2d", COMPOSITE, ("x", "w"), attrs=CONV_ATTRS,
      canon=lambda types, a: _canon_conv("conv2d", 2, types, a), decompose=_conv2d,
      ref=conv_ref, domain=DOM,
      samples=(sample("f32[N,4,5,2]", "f32[3,2,2,3]", sizes=(0, 1, 2)),
               sample("f64[N,5,5,2]", "f64[3,3,2,2]", stride=2, padding="same", sizes=(0, 1, 2)),
               sample("f32[N,5,4,2]", "f32[2,2,1,4]", padding=((1, 0), (2, 1)), dilation=(2, 1),
                      groups=2, sizes=(0, 1, 2)),
               sample("f64[N,6,5,3]", "f64[2,3,3,2]", stride=(2, 3), padding=1,
                      sizes=(0, 1, 2)),
               sample("f32[2,N,4,1]", "f32[3,3,1,2]", padding="same", sizes=(0, 1, 2)),
               sample("f32[N,3,3,4]", "f32[1,1,2,2]", groups=2, sizes=(0, 1, 2))))
defop("conv1d", COMPOSITE, ("x", "w"), attrs=CONV_ATTRS,
      canon=lambda types, a: _canon_conv("conv1d", 1, types, a), decompose=_conv1d,
      ref=conv_ref, domain=DOM,
      samples=(sample("f32[N,6,2]", "f32[3,2,3]", sizes=(0, 1, 2)),
               sample("f64[N,7,4]", "f64[3,2,4]", stride=2, padding="same", dilation=1, groups=2,
                      sizes=(0, 1, 2)),
               sample("f32[2,N,2]", "f32[2,2,2]", padding=(1, 2), dilation=2, sizes=(0, 1, 2))))

# ---------------------------------------------------------------------------- pooling


def _canon_pool(name: str, types: tuple[TensorType, ...], attrs: dict[str, Any]
                ) -> dict[str, Any]:
    x = types[0]
    require(name, FLOAT, x)
    if x.rank != 4:
        raise fail(name, types, "needs x [N,H,W,C]")
    window = _pair(name, "window", attrs["window"], 2)
    stride = window if attrs["stride"] is None else _pair(name, "stride", attrs["stride"], 2)
    pads = _pads(name, attrs["padding"], x.shape[1:3], window, stride)
    for d, (lo, hi), k, s in zip(x.shape[1:3], pads, window, stride):
        _out_len(name, d, lo, hi, k, s)
    return {"window": window, "stride": stride, "padding": pads}


def _pooled(name: str, how: str, x: Value, window: tuple, stride: tuple, padding: tuple
            ) -> Value:
    """Sum or max over each window: a reshape when the windows tile x, else stacked taps."""
    out_hw = tuple(_out_len(name, d, lo, hi, k, s) for d, (lo, hi), k, s in
                   zip(x.shape[1:3], padding, window, stride))
    tiles = stride == window and all(p == (0, 0) for p in padding) and \
        all(isinstance(o, int) for o in out_hw)
    if tiles:
        (oh, ow), (kh, kw) = out_hw, window
        n, h, w, c = x.shape
        if (h, w) != (oh * kh, ow * kw):
            x = make("slice", x, start=(0, 0, 0, 0), stop=(n, oh * kh, ow * kw, c))
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
      ref=lambda x, **a: pool_ref("max", x, **a), samples=POOL_SAMPLES)  # ties: tests/ops/test_conv.py
defop("avg_pool2d", COMPOSITE, ("x",), attrs=POOL_ATTRS,
      canon=lambda types, a: _canon_pool("avg_pool2d", types, a),
      decompose=lambda x, *, window, stride, padding: _pooled(
          "avg_pool2d", "sum", x, window, stride, padding) / (window[0] * window[1]),
      ref=lambda x, **a: pool_ref("sum", x, **a), samples=POOL_SAMPLES)

