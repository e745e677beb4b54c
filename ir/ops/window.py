"""Window geometry shared by convolution and pooling (channels last): attribute pairs, output
lengths, ``padding`` in its spellings, padding with a value, and one slice per window tap."""
from __future__ import annotations

from typing import Any

from graphc.ir.core import Value, const, make
from graphc.ir.errors import GraphTypeError
from graphc.ir.ops.rules import as_int, call
from graphc.ir.types import DimLike, DType, dim_str


def pair(name: str, what: str, v: Any, n: int) -> tuple[int, ...]:
    items = list(v) if isinstance(v, (list, tuple)) else [v] * n
    if len(items) != n:
        raise GraphTypeError(f"{name}: {what} needs 1 or {n} integers, got {v!r}")
    out = tuple(as_int(name, what, i) for i in items)
    if any(i < 1 for i in out):
        raise GraphTypeError(f"{name}: {what} must be positive, got {v!r}")
    return out


def out_len(name: str, d: DimLike, lo: int, hi: int, span: int, stride: int) -> DimLike:
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


def padding_pairs(name: str, padding: Any, dims: tuple[DimLike, ...], spans: tuple[int, ...],
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
