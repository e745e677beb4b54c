"""Ops that make tensors from shapes: one_hot, and the composites zeros, ones and full, which
become ``const`` splats (their shapes may be symbolic)."""
from __future__ import annotations

from typing import Any

import numpy as np

from graphc.ir.core import Value, const
from graphc.ir.errors import GraphCallError, GraphTypeError
from graphc.ir.ops.registry import COMPOSITE, CREATE, REQUIRED, defop
from graphc.ir.ops.rules import N, as_dim, as_dtype, as_shape, fail, no_grad, sample
from graphc.ir.ops.shape import first_true
from graphc.ir.types import DType, TensorType


def _canon_one_hot(types: tuple[TensorType, ...], attrs: dict[str, Any]) -> dict[str, Any]:
    depth = as_dim("one_hot", "depth", attrs["depth"])
    if isinstance(depth, int) and depth < 0:
        raise GraphTypeError(f"one_hot: negative depth {depth}")
    return dict(depth=depth, dtype=as_dtype(attrs["dtype"]), strict=bool(attrs["strict"]))


def _one_hot_type(labels: TensorType, *, depth: Any, dtype: DType, strict: bool) -> TensorType:
    if not labels.dtype.is_int:
        raise fail("one_hot", (labels,), f"labels must be integers, got {labels.dtype}")
    return TensorType(dtype, labels.shape + (depth,))


def _one_hot_ref(labels: np.ndarray, *, depth: int, dtype: DType, strict: bool) -> np.ndarray:
    if strict and labels.size and (labels.min() < 0 or labels.max() >= depth):
        at = first_true((labels < 0) | (labels >= depth))
        raise GraphCallError(f"a label is out of range [0, {depth}): {labels[at]} at "
                             f"labels{list(at)}")
    return (labels[..., None] == np.arange(depth)).astype(dtype.np)


defop("one_hot", CREATE, ("labels",),
      attrs=(("depth", REQUIRED), ("dtype", DType.f32), ("strict", False)),
      canon=_canon_one_hot, infer=_one_hot_type, vjp=no_grad, differentiable=False,
      # a label outside [0, depth) gives a row of zeros, as jax.nn.one_hot; with strict=true
      # (what the sparse losses use, so a bad label is never a silently wrong loss) it is a
      # GraphCallError
      ref=_one_hot_ref,
      samples=(sample("i64[N]", depth=4, domain=((-1, 5),)),
               sample("i32[N,2]", depth=3, dtype=DType.f64, domain=((0, 3),)),
               sample("i64[]", depth=N, dtype=DType.bool, domain=((0, 1),), sizes=(1, 3)),
               sample("i64[N]", depth=3, strict=True, domain=((0, 3),))))


def _canon_fill(types: tuple[TensorType, ...], attrs: dict[str, Any]) -> dict[str, Any]:
    return dict(attrs, shape=as_shape("shape", attrs["shape"]), dtype=as_dtype(attrs["dtype"]))


def _fill(value: Any, *, shape: tuple, dtype: DType) -> Value:
    if isinstance(value, bool) != (dtype is DType.bool) or not isinstance(value, (int, float)):
        raise GraphTypeError(f"cannot fill a {dtype} tensor with {value!r}")
    if isinstance(value, float) and not dtype.is_float and value != int(value):
        raise GraphTypeError(f"float literal {value} used with {TensorType(dtype, shape)}")
    return const(value, dtype, shape)


CREATE_SAMPLES = (sample(shape=(N, 3)), sample(shape=(), dtype=DType.f64),
                  sample(shape=(2, N), dtype=DType.i32), sample(shape=(N,), dtype=DType.bool))

defop("zeros", COMPOSITE, (), attrs=(("shape", REQUIRED), ("dtype", DType.f32)),
      canon=_canon_fill,
      decompose=lambda *, shape, dtype: _fill(False if dtype is DType.bool else 0, shape=shape,
                                              dtype=dtype),
      ref=lambda *, shape, dtype: np.zeros(shape, dtype.np), samples=CREATE_SAMPLES,
      differentiable=False)
defop("ones", COMPOSITE, (), attrs=(("shape", REQUIRED), ("dtype", DType.f32)),
      canon=_canon_fill,
      decompose=lambda *, shape, dtype: _fill(True if dtype is DType.bool else 1, shape=shape,
                                              dtype=dtype),
      ref=lambda *, shape, dtype: np.ones(shape, dtype.np), samples=CREATE_SAMPLES,
      differentiable=False)
defop("full", COMPOSITE, (), attrs=(("shape", REQUIRED), ("value", REQUIRED),
                                    ("dtype", DType.f32)),
      canon=_canon_fill, decompose=lambda *, shape, value, dtype: _fill(value, shape=shape,
                                                                        dtype=dtype),
      ref=lambda *, shape, value, dtype: np.full(shape, value, dtype.np), differentiable=False,
      samples=(sample(shape=(N, 3), value=2.5), sample(shape=(), value=-1, dtype=DType.i64),
               sample(shape=(N,), value=True, dtype=DType.bool),
               sample(shape=(2, N), value=3.0, dtype=DType.i32)))
