"""``flip`` (reverse axes; what negative slice steps are made of) and ``pad_constant`` (pad with
any value, symbolic widths allowed). ``flip`` is a primitive because no other op can reverse a
symbolic axis; a backend may later see it as a view with negative strides."""
from __future__ import annotations

from typing import Any

import numpy as np

from graphc.ir.core import Value, make
from graphc.ir.errors import GraphTypeError
from graphc.ir.ops.registry import COMPOSITE, MOVEMENT, PRESERVES_FINITE, REQUIRED, defop
from graphc.ir.ops.rules import N, as_dim, as_float, norm_axes, sample
from graphc.ir.ops.window import pad_value
from graphc.ir.types import DType, TensorType

defop("flip", MOVEMENT, ("x",), attrs=(("axis", None),),
      canon=lambda types, a: {"axis": norm_axes("flip", a["axis"], types[0].rank)},
      infer=lambda x, *, axis: x,
      ref=lambda x, *, axis: np.flip(x, axis).copy(),
      vjp=lambda g, out, x, *, axis: [make("flip", g, axis=axis)],
      samples=(sample("f32[N,3]"), sample("f64[N,3]", axis=0), sample("f32[2,N,3]", axis=(1, 2)),
               sample("f32[]"), sample("i32[N,2]", axis=-1), sample("f64[3,2]", axis=())),
      traits=(PRESERVES_FINITE,))


def _canon_pad(types: tuple[TensorType, ...], attrs: dict[str, Any]) -> dict[str, Any]:
    x = types[0]
    raw = attrs["pads"]
    items = list(raw) if isinstance(raw, (list, tuple)) else None
    if items is None or len(items) != x.rank or not all(
            isinstance(p, (list, tuple)) and len(p) == 2 for p in items):
        raise GraphTypeError(f"pad_constant: pads needs one [lo, hi] per axis of {x}, got "
                             f"{raw!r}")
    pads = tuple(tuple(as_dim("pad_constant", "a pad width", v) for v in p) for p in items)
    if any(isinstance(v, int) and v < 0 for p in pads for v in p):
        raise GraphTypeError(f"pad_constant: negative pad width in {raw!r}")
    value = attrs["value"]
    if x.dtype is DType.bool:
        if not isinstance(value, bool) and value not in (0, 1):
            raise GraphTypeError(f"pad_constant: cannot pad {x} with {value!r}")
        value = bool(value)
    elif x.dtype.is_int:
        if isinstance(value, bool) or float(as_float("pad_constant", "value", value)) != \
                int(value):
            raise GraphTypeError(f"pad_constant: cannot pad {x} with {value!r}")
        value = int(value)
    else:
        value = as_float("pad_constant", "value", value)
    return {"pads": pads, "value": value}


def _pad_ref(x: np.ndarray, *, pads: tuple, value: Any) -> np.ndarray:
    if x.ndim == 0:
        return x.copy()
    return np.pad(x, np.asarray(pads, np.int64), constant_values=value)


def _pad(x: Value, *, pads: tuple, value: Any) -> Value:
    return pad_value(x, pads, value)


defop("pad_constant", COMPOSITE, ("x",), attrs=(("pads", REQUIRED), ("value", 0)),
      spelling="pad", canon=_canon_pad, decompose=_pad, ref=_pad_ref,
      samples=(sample("f32[N,3]", pads=((1, 0), (2, 1))),
               sample("f64[N,2]", pads=((0, N), (1, 1)), value=-1.5),
               sample("f32[N]", pads=((2, 2),), value=float("-inf"), grad=False),
               sample("i32[2,N]", pads=((1, 1), (0, 2)), value=7),
               sample("f32[]", pads=(), value=3.0)))
