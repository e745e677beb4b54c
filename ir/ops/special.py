"""The ops every function needs whatever it computes: arguments, constants, symbolic-dim values,
and the ``grad`` placeholder that the autodiff pass replaces."""
from __future__ import annotations

from typing import Any

import numpy as np

from graphc.ir.errors import GraphTypeError
from graphc.ir.ops.registry import CHEAP, CREATE, REQUIRED, SPECIAL, defop
from graphc.ir.types import DType, TensorType, dim_prod


def _arg_type(*, name: str, dtype: DType, shape: tuple) -> TensorType:
    return TensorType(dtype, tuple(shape))


defop("arg", SPECIAL, inputs=(), attrs=(("name", REQUIRED), ("dtype", REQUIRED),
                                         ("shape", REQUIRED)),
      infer=_arg_type, differentiable=False, doc="a function argument")


def _const_type(*, value: Any, dtype: DType, shape: tuple) -> TensorType:
    if isinstance(value, tuple):
        n = dim_prod(tuple(shape))
        if not isinstance(n, int) or n != len(value):
            raise GraphTypeError(f"constant of {len(value)} elements cannot have shape "
                                 f"{TensorType(dtype, tuple(shape))}")
    return TensorType(dtype, tuple(shape))


def _const_ref(*, value: Any, dtype: DType, shape: tuple, out_shape: tuple,
               out_dtype: np.dtype) -> np.ndarray:
    if isinstance(value, tuple):
        return np.array(value, dtype=out_dtype).reshape(out_shape)
    return np.full(out_shape, value, dtype=out_dtype)


defop("const", CREATE, inputs=(), attrs=(("value", REQUIRED), ("dtype", REQUIRED),
                                          ("shape", ())),
      infer=_const_type, ref=_const_ref, wants_out=True, differentiable=False,
      doc="a scalar splat over a (possibly symbolic) shape, or a flat tuple of elements")


def _dim_type(*, value: Any, dtype: DType) -> TensorType:
    if dtype is DType.bool:
        raise GraphTypeError("a dim value cannot be bool")
    return TensorType(dtype, ())


defop("dim", CREATE, inputs=(), attrs=(("value", REQUIRED), ("dtype", DType.i64)),
      infer=_dim_type, ref=lambda *, value, dtype: np.array(value, dtype=dtype.np),
      differentiable=False, dsl=False,
      doc="the run-time value of a dim polynomial (e.g. the count in mean over N)", traits=(CHEAP,))


def _grad_type(y: TensorType, x: TensorType) -> TensorType:
    if y.rank != 0:
        raise GraphTypeError(f"grad needs a scalar to differentiate, got {y}")
    if not y.dtype.is_float:
        raise GraphTypeError(f"grad needs a float scalar, got {y}")
    if not x.dtype.is_float:
        raise GraphTypeError(f"cannot differentiate with respect to a {x} value")
    return x


defop("grad", SPECIAL, inputs=("y", "x"), infer=_grad_type,
      doc="d y / d x, expanded into ordinary ops by the autodiff pass")
