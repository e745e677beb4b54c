"""Convolution, channels last as ``jax.lax`` defines them (NHWC input, HWIO kernel).

Composites, not primitives: a convolution is ``im2col`` (every kernel tap's window of the
padded input side by side on the channel axis), then one ``matmul`` against the kernel seen as a
``[KH*KW*Cin, Cout]`` matrix, so that its speed is the GEMM's and the bias and activation that
follow fuse into it as into any matmul. ``im2col`` and its transpose ``col2im`` (which sums the
windows back onto the input: the input's gradient) are primitives, each the other's VJP, so
that each is one gather kernel natively, not a pad, nine slices and a concat (or nine pads and a
nine-input add) as the same arithmetic composed of layout ops. A 3x3 convolution at stride 1
with 16 or more channels in and out takes Winograd's F(2x2, 3x3) or F(4x4, 3x3) instead
(``_winograd``): the same two primitives with a ``transform`` that writes linear combinations
of each window's taps as planes ([R, N, OH, OW, C], each plane one GEMM's operand), one
batched GEMM per plane, 16 products per 2x2 outputs (36 per 4x4) where im2col's takes 36
(144): its forward and both gradients' GEMMs do 2.25x (4x) less work. Pooling is in pool.py,
the window geometry both share in window.py."""
from __future__ import annotations

from typing import Any

import numpy as np

from graphc.ir.core import Value, const, make
from graphc.ir.errors import GraphTypeError
from graphc.ir.ops.registry import COMPOSITE, MOVEMENT, PRESERVES_FINITE, REQUIRED, defop
from graphc.ir.ops.rules import FLOAT, N, as_dim, as_int, fail, require, sample
from graphc.ir.ops.window import out_len, padding_pairs, pair
from graphc.ir.types import DimLike, TensorType, dim_str


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
    stride = pair(name, "stride", attrs["stride"], rank)
    dilation = pair(name, "dilation", attrs["dilation"], rank)
    spans = tuple((k - 1) * d + 1 for k, d in zip(w.shape[:rank], dilation))
    pads = padding_pairs(name, attrs["padding"], x.shape[1:-1], spans, stride)
    for d, (lo, hi), span, s in zip(x.shape[1:-1], pads, spans, stride):
        out_len(name, d, lo, hi, span, s)
    return {"stride": stride, "padding": pads, "dilation": dilation, "groups": groups}

def _conv2d(x: Value, w: Value, *, stride: tuple, padding: tuple, dilation: tuple,
            groups: int) -> Value:
    kh, kw, cg, cout = w.shape
    n = x.shape[0]
    spans = tuple((k - 1) * d + 1 for k, d in zip((kh, kw), dilation))
    out_hw = tuple(out_len("conv2d", d, lo, hi, span, s) for d, (lo, hi), span, s in
                   zip(x.shape[1:3], padding, spans, stride))
    m = _winograd_tile(w, stride, dilation, groups, out_hw)
    if m:
        return _winograd(x, w, padding, out_hw, m)
    patches = make("im2col", x, window=(kh, kw), stride=stride, dilation=dilation,
                   lo=tuple(p[0] for p in padding), hi=tuple(p[1] for p in padding))
    rows = n * out_hw[0] * out_hw[1]
    kk = kh * kw
    if groups == 1:     # [N,OH,OW,K] @ [K,Cout]: one GEMM natively, and already NHWC, so a
        # bias and activation after it fuse into the GEMM's epilogue
        return make("matmul", patches, make("reshape", w, shape=(kk * cg, cout)))
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


# ---------------------------------------------------------------------------- im2col / col2im

# Winograd's F(mxm, 3x3) (Lavin & Gray, 2016): an (m+2)x(m+2) tile d of the input and a 3x3
# kernel g give the tile's mxm outputs as A^T [(G g G^T) * (B^T d B)] A: (m+2)^2 products
# where the direct sum takes 9 m^2 (m = 2: 16 for 36; m = 4: 36 for 144, with larger
# rounding errors: about 10x the direct sum's in f32). Its three linear maps as im2col/col2im
# transforms and one small matmul. B, G and A per m (B and A exact in binary):
_BT = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_G = ((1, 0, 0), (.5, .5, .5), (.5, -.5, .5), (0, 0, 1))
_A = ((1, 0), (1, 1), (1, -1), (0, -1))
_BT4 = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0),
        (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1))
_G4 = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
       (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))
_A4 = ((1, 0, 0, 0), (1, 1, 1, 1), (1, -1, 1, -1), (1, 2, 4, 8), (1, -2, 4, -8), (0, 0, 0, 1))
# an im2col transform, as the factors (P, Q) of its matrix kron(P, Q): plane r = i*len(Q) + j
# of a window is sum over taps (a, b) of P[i][a] Q[j][b] tap(a, b). "winograd_in" is B^T d B
# per 4x4 tile; "winograd_out" is the output map's transpose A g A^T per 2x2 tile (col2im
# with it is A^T m A: a tile's outputs from its 16 planes); "winograd4_*" the same for m = 4
TRANSFORMS = {"winograd_in": (_BT, _BT), "winograd_out": (_A, _A),
              "winograd4_in": (_BT4, _BT4), "winograd4_out": (_A4, _A4)}
WINOGRAD = {2: ("winograd_in", "winograd_out", _G), 4: ("winograd4_in", "winograd4_out", _G4)}


def transform_matrix(name: str) -> np.ndarray:
    p, q = TRANSFORMS[name]
    return np.kron(np.array(p, np.float64), np.array(q, np.float64))


def _winograd(x: Value, w: Value, padding: tuple, out_hw: tuple[int, int], m: int) -> Value:
    """Stride 1, 3x3: im2col of (m+2)x(m+2) tiles at stride m into (m+2)^2 transformed planes,
    one batched GEMM per plane against the transformed kernel, col2im of the products into
    mxm outputs. Tiles past the output's edge read padding; their extra outputs are dropped."""
    n, h, wd, c = x.shape
    cout = w.shape[3]
    t_in, t_out, g = WINOGRAD[m]
    r = (m + 2) ** 2
    tiles = tuple(-(-o // m) for o in out_hw)
    hi = tuple(m * t + 2 - d - lo for t, d, (lo, _) in zip(tiles, (h, wd), padding))
    planes = make("im2col", x, window=(m + 2, m + 2), stride=(m, m),
                  lo=tuple(p[0] for p in padding), hi=hi, transform=t_in)
    gg = np.kron(np.array(g), np.array(g))                     # [R, 9]: G g G^T per plane
    wt = make("matmul", const(tuple(gg.flat), w.dtype, gg.shape),
              make("reshape", w, shape=(9, c * cout)))
    prod = make("matmul", make("reshape", planes, shape=(r, n * tiles[0] * tiles[1], c)),
                make("reshape", wt, shape=(r, c, cout)))
    prod = make("reshape", prod, shape=(r, n) + tiles + (cout,))
    return make("col2im", prod, window=(m, m), stride=(m, m),
                hi=tuple(m * t - o for t, o in zip(tiles, out_hw)), size=out_hw,
                transform=t_out)


def _winograd_tile(w: Value, stride: tuple, dilation: tuple, groups: int, out_hw: tuple
                   ) -> int:
    """Winograd's output tile m where it pays, else 0: 3x3, stride and dilation 1, one group,
    static sizes, and enough channels that the GEMMs' fewer products outweigh the transforms.
    Of m = 2 and 4, the one with fewer products over the tiles that cover the output (the
    more accurate m = 2 on a tie)."""
    kh, kw, cg, cout = w.shape
    if (kh, kw) != (3, 3) or stride != (1, 1) or dilation != (1, 1) or groups != 1 or \
            not all(isinstance(d, int) for d in out_hw) or cg < 16 or cout < 16:
        return 0
    return min(WINOGRAD, key=lambda m: ((-(-out_hw[0] // m)) * (-(-out_hw[1] // m)) *
                                        (m + 2) ** 2, m))


def _canon_cols(name: str, types: tuple[TensorType, ...], attrs: dict[str, Any]
                ) -> dict[str, Any]:
    x = types[0]
    require(name, FLOAT, x)
    planes = name == "col2im" and attrs.get("transform", "")
    if x.rank != (5 if planes else 4):
        raise fail(name, types, "needs [R,N,H,W,C] (R transformed taps)" if planes else
                   "needs [N,H,W,C]")
    out = {k: pair(name, k, attrs[k], 2) for k in ("window", "stride", "dilation")}
    for k in ("lo", "hi"):
        out[k] = tuple(as_int(name, k, v) for v in (
            attrs[k] if isinstance(attrs[k], (list, tuple)) else [attrs[k]] * 2))
        if len(out[k]) != 2 or min(out[k]) < 0:
            raise GraphTypeError(f"{name}: {k} needs 2 non-negative integers, got {attrs[k]!r}")
    transform = attrs.get("transform", "")
    if transform:
        if transform not in TRANSFORMS:
            raise GraphTypeError(f"{name}: transform must be one of {sorted(TRANSFORMS)}, "
                                 f"got {transform!r}")
        taps = tuple(len(f[0]) for f in TRANSFORMS[transform])
        if out["window"] != taps:
            raise GraphTypeError(f"{name}: transform {transform!r} needs a window of {taps}, "
                                 f"got {out['window']}")
    out["transform"] = transform
    if "size" in attrs:
        size = attrs["size"]
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise GraphTypeError(f"{name}: size needs [H, W], got {size!r}")
        out["size"] = tuple(as_dim(name, "size", d) for d in size)
    return out


def _col_hw(name: str, hw: tuple[DimLike, ...], *, window: tuple, stride: tuple,
            dilation: tuple, lo: tuple, hi: tuple) -> tuple[DimLike, ...]:
    return tuple(out_len(name, d, a, b, (k - 1) * dl + 1, s) for d, a, b, k, dl, s in
                 zip(hw, lo, hi, window, dilation, stride))


def _im2col_type(x: TensorType, *, transform: str, **a: Any) -> TensorType:
    n, h, w, c = x.shape
    if transform:       # plane-major: each plane a [windows, C] matrix of its own
        return x.with_shape((transform_matrix(transform).shape[0], n) +
                            _col_hw("im2col", (h, w), **a) + (c,))
    return x.with_shape((n,) + _col_hw("im2col", (h, w), **a) + (a["window"][0] *
                                                                 a["window"][1] * c,))


def _col2im_type(p: TensorType, *, size: tuple, transform: str, **a: Any) -> TensorType:
    if transform:
        r = transform_matrix(transform).shape[0]
        if p.shape[0] != r or p.shape[2:4] != _col_hw("col2im", size, **a):
            raise fail("col2im", (p,), f"needs [{r}, N, *windows, C] for transform "
                       f"{transform!r} over [{', '.join(map(dim_str, size))}]")
        return p.with_shape((p.shape[1],) + tuple(size) + (p.shape[4],))
    kk = a["window"][0] * a["window"][1]
    c = p.shape[3]
    if not isinstance(c, int) or c % kk:
        raise fail("col2im", (p,), f"its last dim must be {kk} (the window's taps) x channels")
    if p.shape[1:3] != _col_hw("col2im", size, **a):
        raise fail("col2im", (p,), f"windows over [{', '.join(map(dim_str, size))}] do not "
                   f"give {dim_str(p.shape[1])} x {dim_str(p.shape[2])} of them")
    return p.with_shape((p.shape[0],) + tuple(size) + (c // kk,))


def _taps(h: int, w: int, *, window: tuple, stride: tuple, dilation: tuple, lo: tuple,
          hi: tuple) -> list[tuple[slice, ...]]:
    """Per tap in row-major order, its window of the padded input (as [H, W] slices)."""
    outs = tuple((d + a + b - (k - 1) * dl - 1) // s + 1 for d, a, b, k, dl, s in
                 zip((h, w), lo, hi, window, dilation, stride))
    return [tuple(slice(t * dl, t * dl + (o - 1) * s + 1 if o else t * dl, s)
                  for t, dl, o, s in zip(tap, dilation, outs, stride))
            for tap in np.ndindex(*window)]


def im2col_ref(x: np.ndarray, *, transform: str = "", **a: Any) -> np.ndarray:
    """Tap (i, j)'s window of the zero-padded x is channel block i*KW + j; with a transform T,
    plane r is sum_k T[r, k] tap_k."""
    if transform:
        taps = im2col_ref(x, **a)
        taps = taps.reshape(taps.shape[:3] + (a["window"][0] * a["window"][1], x.shape[3]))
        return np.einsum("rk,nhwkc->rnhwc", transform_matrix(transform).astype(x.dtype), taps)
    xp = np.pad(x, ((0, 0), (a["lo"][0], a["hi"][0]), (a["lo"][1], a["hi"][1]), (0, 0)))
    taps = _taps(*x.shape[1:3], **a)
    return np.concatenate([xp[(slice(None),) + t] for t in taps], axis=3)


def col2im_ref(p: np.ndarray, *, size: tuple, transform: str = "", **a: Any) -> np.ndarray:
    """The transpose of im2col: every tap's block added back at its window, padding dropped
    (with a transform T, tap k is first sum_r T[r, k] plane_r)."""
    if transform:
        taps = np.einsum("rk,rnhwc->nhwkc", transform_matrix(transform).astype(p.dtype), p)
        return col2im_ref(taps.reshape(taps.shape[:3] + (taps.shape[3] * taps.shape[4],)),
                          size=size, **a)
    (lo_h, lo_w), (hi_h, hi_w) = a["lo"], a["hi"]
    kk = a["window"][0] * a["window"][1]
    c = p.shape[3] // kk
    out = np.zeros((p.shape[0], size[0] + lo_h + hi_h, size[1] + lo_w + hi_w, c), p.dtype)
    taps = _taps(*size, **a)
    for k, t in enumerate(taps):
        out[(slice(None),) + t] += p[..., k * c:(k + 1) * c]
    return out[:, lo_h:lo_h + size[0], lo_w:lo_w + size[1]]


COL_ATTRS = (("window", REQUIRED), ("stride", 1), ("dilation", 1), ("lo", 0), ("hi", 0))

defop("im2col", MOVEMENT, ("x",), attrs=COL_ATTRS + (("transform", ""),),
      canon=lambda types, a: _canon_cols("im2col", types, a), infer=_im2col_type,
      ref=im2col_ref, dsl=False,                    # conv2d's patches
      vjp=lambda g, out, x, **a: [make("col2im", g, size=x.shape[1:3], **a)],
      samples=(sample("f32[N,4,5,2]", window=(3, 2), sizes=(0, 1, 2)),
               sample("f64[N,5,5,2]", window=3, stride=2, lo=1, hi=1, sizes=(0, 1, 2)),
               sample("f32[N,5,4,3]", window=(2, 2), dilation=(2, 1), lo=(1, 2), hi=(0, 1),
                      sizes=(0, 1, 2)),
               sample("f64[N,6,5,1]", window=(2, 3), stride=(2, 3), lo=1, hi=1,
                      sizes=(0, 1, 2)),
               sample("f32[2,N,4,1]", window=3, lo=1, hi=1, sizes=(0, 1, 2)),
               sample("f64[N,5,3,2]", window=4, stride=2, lo=1, hi=(2, 3),
                      transform="winograd_in", sizes=(0, 1, 2)),
               sample("f32[N,3,4,1]", window=2, stride=2, hi=(1, 0), transform="winograd_out",
                      sizes=(0, 1, 2)),
               sample("f64[N,6,7,2]", window=6, stride=4, lo=1, hi=(1, 2),
                      transform="winograd4_in", sizes=(0, 1, 2)),
               sample("f32[N,5,8,1]", window=4, stride=4, hi=(3, 0), transform="winograd4_out",
                      sizes=(0, 1, 2))),
      traits=(PRESERVES_FINITE,))
defop("col2im", MOVEMENT, ("x",), attrs=COL_ATTRS + (("size", REQUIRED), ("transform", "")),
      canon=lambda types, a: _canon_cols("col2im", types, a), infer=_col2im_type,
      ref=col2im_ref, dsl=False,                    # im2col's gradient
      vjp=lambda g, out, p, *, size, **a: [make("im2col", g, **a)],
      samples=(sample("f32[N,2,4,12]", window=(3, 2), size=(4, 5), sizes=(0, 1, 2)),
               sample("f64[N,3,3,18]", window=3, stride=2, lo=1, hi=1, size=(5, 5),
                      sizes=(0, 1, 2)),
               sample("f32[N,4,6,12]", window=(2, 2), dilation=(2, 1), lo=(1, 2), hi=(0, 1),
                      size=(5, 4), sizes=(0, 1, 2)),
               sample("f64[N,4,2,6]", window=(2, 3), stride=(2, 3), lo=1, hi=1, size=(6, 5),
                      sizes=(0, 1, 2)),
               sample("f32[2,N,4,9]", window=3, lo=1, hi=1, size=(N, 4), sizes=(0, 1, 2)),
               sample("f64[16,N,3,2,2]", window=4, stride=2, lo=1, hi=(2, 3), size=(5, 3),
                      transform="winograd_in", sizes=(0, 1, 2)),
               sample("f32[16,N,2,2,1]", window=2, stride=2, hi=(1, 0), size=(3, 4),
                      transform="winograd_out", sizes=(0, 1, 2)),
               sample("f64[36,N,1,2,2]", window=6, stride=4, lo=1, hi=(1, 2), size=(6, 7),
                      transform="winograd4_in", sizes=(0, 1, 2)),
               sample("f32[36,N,2,2,1]", window=4, stride=4, hi=(3, 0), size=(5, 8),
                      transform="winograd4_out", sizes=(0, 1, 2))))


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
               sample("f32[N,3,3,4]", "f32[1,1,2,2]", groups=2, sizes=(0, 1, 2)),
               sample("f64[N,3,5,16]", "f64[3,3,16,16]", padding="same", sizes=(0, 1),
                      grad=False)))     # Winograd's (gradients: tests/ops/test_conv_winograd.py)
defop("conv1d", COMPOSITE, ("x", "w"), attrs=CONV_ATTRS,
      canon=lambda types, a: _canon_conv("conv1d", 1, types, a), decompose=_conv1d,
      ref=conv_ref, domain=DOM,
      samples=(sample("f32[N,6,2]", "f32[3,2,3]", sizes=(0, 1, 2)),
               sample("f64[N,7,4]", "f64[3,2,4]", stride=2, padding="same", dilation=1, groups=2,
                      sizes=(0, 1, 2)),
               sample("f32[2,N,2]", "f32[2,2,2]", padding=(1, 2), dilation=2, sizes=(0, 1, 2))))
