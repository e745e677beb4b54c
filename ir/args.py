"""Turning a caller's array into the declared type of a parameter without changing any value:
a conversion that would wrap an integer (int64 label 2**32 into i32, uint64 2**64-1 into i64),
turn a finite float into Inf (f64 1e300 into f32) or drop a mask is an error, never a silently
different number. Both backends convert through here."""
from __future__ import annotations

from typing import Any

import numpy as np

from graphc.ir.errors import GraphCallError
from graphc.ir.types import TensorType


def convert_arg(name: str, given: Any, ty: TensorType) -> np.ndarray:
    """``given`` as a C-contiguous array of ``ty``'s dtype (the same object when it already
    is one), or a GraphCallError naming the argument."""
    want = ty.dtype.np
    if type(given) is np.ndarray and given.dtype == want and given.flags.c_contiguous:
        return given                            # the common case, first
    if isinstance(given, np.ma.MaskedArray):
        raise GraphCallError(f"argument '{name}' is a masked array; graphc would ignore its "
                             f"mask: pass np.ma.filled(a, value) or a.data explicitly")
    try:
        a = np.asarray(given)
    except (ValueError, TypeError) as e:       # ragged lists, odd objects
        raise GraphCallError(f"argument '{name}' is not an array: {e}") from None
    if a.dtype != want:
        if not np.can_cast(a.dtype, want, "same_kind"):
            raise GraphCallError(f"argument '{name}' must be {ty}, got a {a.dtype} array "
                                 f"(convert it explicitly)")
        a = _narrow(name, a, want, ty)
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _narrow(name: str, a: np.ndarray, want: np.dtype, ty: TensorType) -> np.ndarray:
    """``a.astype(want)``, checked to keep every value (only narrowing casts can fail)."""
    if a.size and a.dtype.kind in "iu" and want.kind in "iu":
        info = np.iinfo(want)
        lo, hi = a.min(), a.max()
        if lo < info.min or hi > info.max:
            bad = lo if lo < info.min else hi
            pos = np.unravel_index(int(np.argmax(a == bad)), a.shape)
            raise GraphCallError(f"argument '{name}' ({a.dtype}) holds {bad} at index "
                                 f"{tuple(int(i) for i in pos)}, which does not fit {ty.dtype} "
                                 f"[{info.min}, {info.max}]")
    with np.errstate(over="ignore", invalid="ignore"):
        out = a.astype(want)
    if a.size and a.dtype.kind in "fc" and want.kind in "fc" and want.itemsize < a.dtype.itemsize:
        overflow = np.isinf(out) & np.isfinite(a)
        if overflow.any():
            pos = np.unravel_index(int(np.argmax(overflow)), a.shape)
            raise GraphCallError(f"argument '{name}' ({a.dtype}) holds {a[pos].item()!r} at index "
                                 f"{tuple(int(i) for i in pos)}, which overflows {ty.dtype} "
                                 f"(max {np.finfo(want).max:g})")
    return out
