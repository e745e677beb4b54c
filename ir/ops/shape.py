"""Movement ops (no arithmetic): reshape, transpose, broadcast_to, slice, pad, concat, take and
scatter_add, and the composites expand_dims, squeeze and stack. Shapes may be symbolic; bounds
that can only be checked at run time raise GraphCallError in ``ref``, never clamp."""
from __future__ import annotations

from typing import Any

import numpy as np

from graphc.ir.core import Value, const, make
from graphc.ir.errors import GraphCallError, GraphTypeError
from graphc.ir.ops.registry import (
    CHEAP,
    COMPOSITE,
    MOVEMENT,
    PRESERVES_FINITE,
    REQUIRED,
    VIEW,
    defop,
)
from graphc.ir.ops.rules import (
    ANY,
    NUMERIC,
    N,
    as_dim,
    as_int,
    as_shape,
    broadcast_to_shape,
    dim_sum,
    fail,
    norm_axes,
    norm_axis,
    require,
    resolve_reshape,
    sample,
)
from graphc.ir.types import DimLike, TensorType, dim_div, dim_str

# ---------------------------------------------------------------------------- reshape, transpose

defop("reshape", MOVEMENT, ("x",), attrs=(("shape", REQUIRED),),
      canon=lambda types, a: dict(shape=resolve_reshape("reshape", types[0], a["shape"])),
      infer=lambda x, *, shape: x.with_shape(shape),
      ref=lambda x, *, shape: np.reshape(x, shape),
      vjp=lambda g, out, x, *, shape: [make("reshape", g, shape=x.shape)],
      samples=(sample("f32[N,4,3]", shape=(-1,)), sample("f32[N,4,3]", shape=(N, -1)),
               sample("f64[N,4,3]", shape=(2, -1, N)), sample("f32[2,6]", shape=(3, -1)),
               sample("f32[]", shape=(1, 1)), sample("f32[1,1]", shape=()),
               sample("i32[N,2]", shape=(2, N))), traits=(CHEAP, PRESERVES_FINITE, VIEW))


def _canon_perm(types: tuple[TensorType, ...], attrs: dict[str, Any]) -> dict[str, Any]:
    rank, perm = types[0].rank, attrs["perm"]
    if perm is None:
        return dict(perm=tuple(reversed(range(rank))))
    items = list(perm) if isinstance(perm, (list, tuple)) else [perm]
    out = tuple(norm_axis("transpose", p, rank) for p in items)
    if sorted(out) != list(range(rank)):
        raise GraphTypeError(f"transpose: {list(perm)} is not a permutation of the axes of "
                             f"{types[0]}")
    return dict(perm=out)


defop("transpose", MOVEMENT, ("x",), attrs=(("perm", None),), canon=_canon_perm,
      infer=lambda x, *, perm: x.with_shape(tuple(x.shape[p] for p in perm)),
      ref=lambda x, *, perm: np.transpose(x, perm),
      vjp=lambda g, out, x, *, perm: [make("transpose", g, perm=tuple(np.argsort(perm)))],
      samples=(sample("f32[N,3]"), sample("f32[2,N,3]", perm=(1, 2, 0)),
               sample("f64[2,N,3]", perm=(0, -1, 1)), sample("f32[]"), sample("i64[N,2]")),
               traits=(PRESERVES_FINITE, VIEW))


def _broadcast_type(x: TensorType, *, shape: tuple[DimLike, ...]) -> TensorType:
    broadcast_to_shape("broadcast_to", x, shape)
    return x.with_shape(shape)


defop("broadcast_to", MOVEMENT, ("x",), attrs=(("shape", REQUIRED),),
      canon=lambda types, a: dict(shape=as_shape("broadcast_to", a["shape"])),
      infer=_broadcast_type, ref=lambda x, *, shape: np.broadcast_to(x, shape).copy(),
      vjp=lambda g, out, x, *, shape: [g],      # autodiff sums g back to x's shape
      samples=(sample("f32[3]", shape=(N, 3)), sample("f32[N,1]", shape=(2, N, 4)),
               sample("f64[]", shape=(N,)), sample("i32[1,N]", shape=(3, N))),
               traits=(CHEAP, PRESERVES_FINITE, VIEW))

# ---------------------------------------------------------------------------- slice, pad


def _per_axis(name: str, what: str, v: Any, rank: int) -> list[Any]:
    items = [] if v is None else list(v) if isinstance(v, (list, tuple)) else [v]
    if len(items) > rank:
        raise GraphTypeError(f"{name}: {len(items)} {what} values for rank {rank}")
    return items + [None] * (rank - len(items))


def slice_len(start: DimLike, stop: DimLike, step: int) -> DimLike:
    """ceil((stop - start) / step), exactly, also for symbolic bounds."""
    diff = stop - start
    if isinstance(diff, int):
        return -(-diff // step)
    n = dim_div(diff, step)
    n = n if n is not None else dim_div(diff + (step - 1), step)
    if n is None:
        raise GraphTypeError(f"slice: the length of {dim_str(start)}:{dim_str(stop)}:{step} "
                             f"is not an exact polynomial of the symbolic dims")
    return n


def _canon_slice(types: tuple[TensorType, ...], attrs: dict[str, Any]) -> dict[str, Any]:
    x = types[0]
    per = {k: _per_axis("slice", k, attrs[k], x.rank) for k in ("start", "stop", "step")}
    start, stop, step = [], [], []
    for i, d in enumerate(x.shape):
        s = 1 if per["step"][i] is None else as_int("slice", "step", per["step"][i])
        a = 0 if per["start"][i] is None else as_dim("slice", "start", per["start"][i])
        b = d if per["stop"][i] is None else as_dim("slice", "stop", per["stop"][i])
        a, b = (d + a if isinstance(a, int) and a < 0 else a), \
            (d + b if isinstance(b, int) and b < 0 else b)
        diff = b - a
        bad = (isinstance(diff, int) and diff < 0) or s < 1 or (
            isinstance(a, int) and isinstance(b, int) and isinstance(d, int)
            and not 0 <= a <= b <= d)
        if bad:
            raise GraphTypeError(f"slice: {dim_str(a)}:{dim_str(b)}:{s} is out of range for axis "
                                 f"{i} of {x}" + (" (the step must be positive)" if s < 1 else ""))
        slice_len(a, b, s)
        start.append(a), stop.append(b), step.append(s)
    return dict(start=tuple(start), stop=tuple(stop), step=tuple(step))


def _slice_type(x: TensorType, *, start: tuple, stop: tuple, step: tuple) -> TensorType:
    return x.with_shape(tuple(slice_len(a, b, s) for a, b, s in zip(start, stop, step)))


def _slice_ref(x: np.ndarray, *, start: tuple, stop: tuple, step: tuple) -> np.ndarray:
    for i, (a, b, n) in enumerate(zip(start, stop, x.shape)):
        if not 0 <= a <= b <= n:
            raise GraphCallError(f"slice {a}:{b} is out of range for axis {i} of size {n}")
    return x[tuple(slice(a, b, s) for a, b, s in zip(start, stop, step))]


def _slice_vjp(g: Value, out: Value, x: Value, *, start: tuple, stop: tuple, step: tuple
               ) -> list[Value]:
    # scatter g back with zeros around (lo, hi) and between (interior) the taken elements
    hi = tuple(d - a - n - (n - 1) * (s - 1)
               for d, a, n, s in zip(x.shape, start, out.shape, step))
    return [make("pad", g, lo=start, hi=hi, interior=tuple(s - 1 for s in step))]


defop("slice", MOVEMENT, ("x",), attrs=(("start", None), ("stop", None), ("step", None)),
      canon=_canon_slice, infer=_slice_type, ref=_slice_ref, vjp=_slice_vjp,
      dsl=False,                                     # written as indexing: x[1:, 2:5]
      samples=(sample("f32[N,5]", start=(0, 1), stop=(None, 4)),
               sample("f32[N,5]", start=(1,), sizes=(1, 3)),
               sample("f64[N,5]", start=(-1, -3), stop=(None, -1), sizes=(1, 4)),
               sample("f32[N,6]", start=(0, 1), step=(1, 2)),
               sample("f32[7,N]", start=(1, 0), step=(3, 1)),
               sample("f32[2,N]", start=(0, 2), stop=(2, 2), sizes=(3,)),
               sample("i32[N,4]", start=(0, 1), stop=(None, 3))), traits=(PRESERVES_FINITE, VIEW))


def _canon_pad(types: tuple[TensorType, ...], attrs: dict[str, Any]) -> dict[str, Any]:
    x, out = types[0], {}
    for k in ("lo", "hi", "interior"):
        raw = attrs[k]
        items = [0] * x.rank if raw is None else list(raw) if isinstance(raw, (list, tuple)) \
            else [raw]
        if len(items) != x.rank:
            raise GraphTypeError(f"pad: {k} needs one value per axis of {x}, got {raw!r}")
        out[k] = tuple(as_dim("pad", k, v) for v in items)
        if any(isinstance(v, int) and v < 0 for v in out[k]):
            raise GraphTypeError(f"pad: negative {k} {list(out[k])}")
    return out


def pad_len(n: DimLike, lo: DimLike, hi: DimLike, interior: DimLike) -> DimLike:
    """lo + n + (n - 1) * interior + hi: ``interior`` zeros go between neighbouring elements."""
    return lo + hi + n + (n - 1) * interior if interior != 0 else lo + hi + n


def _pad_type(x: TensorType, *, lo: tuple, hi: tuple, interior: tuple) -> TensorType:
    shape = tuple(pad_len(*t) for t in zip(x.shape, lo, hi, interior))
    if any(isinstance(d, int) and d < 0 for d in shape):
        raise GraphTypeError(f"pad: {x} with interior padding {list(interior)} has no elements "
                             f"to pad between")
    return x.with_shape(shape)


def _pad_ref(x: np.ndarray, *, lo: tuple, hi: tuple, interior: tuple, out_shape: tuple,
             out_dtype: np.dtype) -> np.ndarray:
    if min(lo + hi + out_shape, default=0) < 0:
        raise GraphCallError(f"pad of shape {x.shape} by lo={lo}, hi={hi}, interior={interior} "
                             f"is out of range")
    out = np.zeros(out_shape, out_dtype)
    out[tuple(slice(a, a + (n - 1) * (i + 1) + 1, i + 1) if n else slice(0, 0)
              for a, n, i in zip(lo, x.shape, interior))] = x
    return out


def _pad_vjp(g: Value, out: Value, x: Value, *, lo: tuple, hi: tuple, interior: tuple
             ) -> list[Value]:
    stop = tuple(a if n == 0 else a + (n - 1) * (i + 1) + 1
                 for a, n, i in zip(lo, x.shape, interior))
    return [make("slice", g, start=lo, stop=stop, step=tuple(i + 1 for i in interior))]


defop("pad", MOVEMENT, ("x",), attrs=(("lo", REQUIRED), ("hi", REQUIRED), ("interior", None)),
      canon=_canon_pad, infer=_pad_type, ref=_pad_ref, vjp=_pad_vjp, wants_out=True,
      dsl=False,                                     # slice's gradient
      samples=(sample("f32[N,3]", lo=(1, 0), hi=(0, 2)),
               sample("f64[N,3]", lo=(0, 2), hi=(N, 1), interior=(0, 2)),
               sample("f32[N]", lo=(1,), hi=(1,), interior=(1,), sizes=(1, 3)),
               sample("i32[2,N]", lo=(0, 1), hi=(1, 0))), traits=(PRESERVES_FINITE,))

# ---------------------------------------------------------------------------- concat


def _canon_concat(types: tuple[TensorType, ...], attrs: dict[str, Any]) -> dict[str, Any]:
    if not types:
        raise GraphTypeError("concat needs at least one tensor")
    return dict(axis=norm_axis("concat", attrs["axis"], types[0].rank))


def _concat_type(*xs: TensorType, axis: int) -> TensorType:
    dt = require("concat", ANY, *xs)
    for t in xs[1:]:
        if t.rank != xs[0].rank or any(a != b for i, (a, b) in enumerate(zip(t.shape, xs[0].shape))
                                       if i != axis):
            raise fail("concat", xs, f"shapes differ off axis {axis}")
    shape = list(xs[0].shape)
    shape[axis] = dim_sum([t.shape[axis] for t in xs])
    return TensorType(dt, tuple(shape))


def _concat_vjp(g: Value, out: Value, *xs: Value, axis: int) -> list[Value]:
    grads, offset = [], 0
    for x in xs:
        end = offset + x.shape[axis]
        grads.append(make("slice", g, start=tuple(offset if i == axis else 0
                                                  for i in range(g.type.rank)),
                          stop=tuple(end if i == axis else d for i, d in enumerate(g.shape))))
        offset = end
    return grads


defop("concat", MOVEMENT, ("*xs",), attrs=(("axis", 0),), canon=_canon_concat,
      infer=_concat_type, ref=lambda *xs, axis: np.concatenate(xs, axis=axis), vjp=_concat_vjp,
      samples=(sample("f32[N,3]", "f32[4,3]"), sample("f32[N,3]", "f32[N,1]", "f32[N,2]", axis=-1),
               sample("f64[2]"), sample("i32[N]", "i32[N]")), traits=(PRESERVES_FINITE,))

# ---------------------------------------------------------------------------- gather / scatter


def _check_indices(name: str, x: TensorType, idx: TensorType) -> None:
    if not idx.dtype.is_int:
        raise fail(name, (x, idx), f"indices must be integers, got {idx.dtype}")


def _take_type(x: TensorType, idx: TensorType, *, axis: int) -> TensorType:
    _check_indices("take", x, idx)
    return x.with_shape(x.shape[:axis] + idx.shape + x.shape[axis + 1:])


def _in_range(name: str, idx: np.ndarray, n: int) -> np.ndarray:
    """NumPy's negative indices wrap once; anything else out of range is an error, not a clamp."""
    if idx.size and (idx.min() < -n or idx.max() >= n):
        at = first_true((idx < -n) | (idx >= n))
        raise GraphCallError(f"{name}: index {idx[at]} is out of range for an axis of size {n} "
                             f"at indices{list(at)}")
    return idx


def first_true(mask: np.ndarray) -> tuple[int, ...]:
    """The index of the first True of ``mask`` in row-major order (as native code scans)."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def _canon_axis(name: str) -> Any:
    return lambda types, a: dict(axis=norm_axis(name, a["axis"], types[0].rank))


defop("take", MOVEMENT, ("x", "indices"), attrs=(("axis", 0),), canon=_canon_axis("take"),
      infer=_take_type,
      ref=lambda x, idx, *, axis: np.take(x, _in_range("take", idx, x.shape[axis]), axis=axis),
      vjp=lambda g, out, x, idx, *, axis: [
          make("scatter_add", const(0, x.dtype, x.shape), idx, g, axis=axis), None],
      samples=(sample("f32[N,3]", "i64[5]", domain=(None, (0, "N")), sizes=(1, 3)),
               sample("f64[4,N]", "i32[N,2]", axis=0, domain=(None, (-4, 4))),
               sample("f32[2,3,N]", "i64[]", axis=1, domain=(None, (0, 3))),
               sample("f32[2,N]", "i64[2,2]", axis=-1, domain=(None, (-1, "N")), sizes=(1, 3)),
               sample("i32[5]", "i64[N]", domain=(None, (0, 5)))), traits=(PRESERVES_FINITE,))


def _scatter_type(x: TensorType, idx: TensorType, upd: TensorType, *, axis: int
                  ) -> TensorType:
    require("scatter_add", NUMERIC, x, upd)
    _check_indices("scatter_add", x, idx)
    want = x.shape[:axis] + idx.shape + x.shape[axis + 1:]
    if upd.shape != want:
        raise fail("scatter_add", (x, idx, upd), f"updates must have shape "
                   f"[{','.join(dim_str(d) for d in want)}]")
    return x


def _scatter_ref(x: np.ndarray, idx: np.ndarray, upd: np.ndarray, *, axis: int) -> np.ndarray:
    out = x.copy()
    np.add.at(out, (slice(None),) * axis + (_in_range("scatter_add", idx, x.shape[axis]),), upd)
    return out


defop("scatter_add", MOVEMENT, ("x", "indices", "updates"), attrs=(("axis", 0),),
      canon=_canon_axis("scatter_add"), infer=_scatter_type, ref=_scatter_ref, dsl=False,
      vjp=lambda g, out, x, idx, upd, *, axis: [g, None, make("take", g, idx, axis=axis)],
      samples=(sample("f32[N,3]", "i64[5]", "f32[5,3]", domain=(None, (0, "N")), sizes=(1, 3)),
               sample("f64[2,4]", "i32[N,2]", "f64[2,N,2]", axis=1, domain=(None, (-4, 4))),
               sample("i32[4]", "i64[N]", "i32[N]", domain=(None, (0, 4)))))

# ---------------------------------------------------------------------------- composites


def _canon_expand(types: tuple[TensorType, ...], attrs: dict[str, Any]) -> dict[str, Any]:
    axis = attrs["axis"]
    n = len(axis) if isinstance(axis, (list, tuple)) else 1
    return dict(axis=norm_axes("expand_dims", axis, types[0].rank + n))


def _expand_dims(x: Value, *, axis: tuple[int, ...]) -> Value:
    dims = iter(x.shape)
    return make("reshape", x, shape=tuple(1 if i in axis else next(dims)
                                          for i in range(x.type.rank + len(axis))))


defop("expand_dims", COMPOSITE, ("x",), attrs=(("axis", REQUIRED),), canon=_canon_expand,
      decompose=_expand_dims, ref=lambda x, *, axis: np.expand_dims(x, axis),
      samples=(sample("f32[N,3]", axis=0), sample("f32[N,3]", axis=-1),
               sample("f64[N]", axis=(0, 2)), sample("i32[]", axis=0)))


def _canon_squeeze(types: tuple[TensorType, ...], attrs: dict[str, Any]) -> dict[str, Any]:
    x = types[0]
    if attrs["axis"] is None:
        return dict(axis=tuple(i for i, d in enumerate(x.shape) if d == 1))
    axes = norm_axes("squeeze", attrs["axis"], x.rank)
    for a in axes:
        if x.shape[a] != 1:
            raise GraphTypeError(f"squeeze: axis {a} of {x} has size {dim_str(x.shape[a])}, "
                                 f"not 1")
    return dict(axis=axes)


defop("squeeze", COMPOSITE, ("x",), attrs=(("axis", None),), canon=_canon_squeeze,
      decompose=lambda x, *, axis: make("reshape", x, shape=tuple(
          d for i, d in enumerate(x.shape) if i not in axis)),
      ref=lambda x, *, axis: np.squeeze(x, axis),
      samples=(sample("f32[1,N,1]"), sample("f32[1,N,1]", axis=-1), sample("f64[N,1]", axis=1),
               sample("i64[1]")))


def _canon_stack(types: tuple[TensorType, ...], attrs: dict[str, Any]) -> dict[str, Any]:
    if not types:
        raise GraphTypeError("stack needs at least one tensor")
    require("stack", ANY, *types)
    if any(t.shape != types[0].shape for t in types):
        raise fail("stack", types, "shapes differ")
    return dict(axis=norm_axis("stack", attrs["axis"], types[0].rank + 1))


defop("stack", COMPOSITE, ("*xs",), attrs=(("axis", 0),), canon=_canon_stack,
      decompose=lambda *xs, axis: make("concat", *(make("expand_dims", x, axis=axis)
                                                   for x in xs), axis=axis),
      ref=lambda *xs, axis: np.stack(xs, axis=axis),
      samples=(sample("f32[N,3]", "f32[N,3]"), sample("f64[N,3]", "f64[N,3]", "f64[N,3]", axis=-1),
               sample("f32[]", "f32[]"), sample("i32[N]", axis=1)))
