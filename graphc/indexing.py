"""Indexing and slicing (``x[i]``, ``x[1:, ::2]``, ``x[-1]``, ``x[T-1-t]``, ``x[5:1:-2]``) as
one ``slice`` op, plus a ``reshape`` when integer indices drop axes and a ``flip`` before it for
negative steps. Static axes are bounds-checked here and never clamped; symbolic axes get
polynomial bounds (``N-1``) that the runtime checks."""
from __future__ import annotations

from typing import Any

from graphc.ir.core import Value, make
from graphc.ir.errors import GraphTypeError, Loc
from graphc.ir.types import Dim, DimLike, TensorType
from graphc.values import describe

# An item is ("index", value, loc) or ("slice", (start, stop, step), loc) where each part is
# None or a (value, loc) pair.
Item = tuple[str, Any, Loc]


def _integer(v: Any, loc: Loc, what: str) -> DimLike:
    if isinstance(v, Dim) or isinstance(v, int) and not isinstance(v, bool):
        return v
    hint = "; to gather with a tensor use take(x, indices, axis=...)" \
        if isinstance(v, Value) else ""
    raise GraphTypeError(f"{what} must be a compile-time integer, got {describe(v)}{hint}",
                         loc)


def _position(i: DimLike, d: DimLike, axis: int, ty: TensorType, loc: Loc,
              is_index: bool) -> DimLike:
    """An index (or slice bound) counted from the start; negative ones count from the end."""
    if isinstance(i, Dim):
        return i
    if isinstance(d, int):
        hi = d - 1 if is_index else d
        if not -d <= i <= hi:
            what = "index" if is_index else "slice bound"
            raise GraphTypeError(f"{what} {i} is out of range for axis {axis} of {ty} "
                                 f"(size {d})", loc)
    return i if i >= 0 else d + i


def index(x: Value, items: list[Item], loc: Loc) -> Value:
    ty = x.type
    if len(items) > ty.rank:
        raise GraphTypeError(f"{len(items)} indices for {ty}, which has {ty.rank} "
                             f"ax{'is' if ty.rank == 1 else 'es'}", loc)
    start: list[DimLike] = []
    stop: list[DimLike] = []
    step: list[int] = []
    keep: list[int] = []
    flips: list[int] = []                 # axes walked backwards (negative steps)
    for axis, d in enumerate(ty.shape):
        kind, payload, iloc = items[axis] if axis < len(items) else ("slice", (None,) * 3, loc)
        if kind == "index":
            a = _position(_integer(payload, iloc, "an index"), d, axis, ty, iloc, True)
            start.append(a), stop.append(a + 1), step.append(1)
            continue
        keep.append(axis)
        lo, hi, by = payload
        s = 1 if by is None else _integer(*by, "a slice step")
        if isinstance(s, Dim) or s == 0:
            raise GraphTypeError(f"a slice step must be a non-zero integer, got {s}",
                                 by[1] if by else iloc)
        a = (0 if s > 0 else d - 1) if lo is None else \
            _position(_integer(*lo, "a slice bound"), d, axis, ty, lo[1], s < 0)
        b = d if hi is None else _position(_integer(*hi, "a slice bound"), d, axis, ty,
                                           hi[1], False)
        if s < 0:
            # x[a:b:-s] walks a, a-s, ... down to b (exclusive): in the flipped axis (i ->
            # d-1-i) that is the forward slice d-1-a : d-1-b : s
            flips.append(axis)
            a, b, s = d - 1 - a, (d if hi is None else d - 1 - b), -s
        if isinstance(a, int) and isinstance(b, int) and b < a:
            b = a                                  # an empty slice, as in NumPy
        start.append(a), stop.append(b), step.append(s)
    if flips:
        x = make("flip", x, axis=tuple(flips), loc=loc)
    if len(keep) == ty.rank and all(a == 0 and b == d and s == 1 for a, b, s, d in
                                    zip(start, stop, step, ty.shape)):
        return x
    out = make("slice", x, start=tuple(start), stop=tuple(stop), step=tuple(step), loc=loc)
    if len(keep) < ty.rank:
        out = make("reshape", out, shape=tuple(out.shape[i] for i in keep), loc=loc)
    return out
