"""What the runtime's planner produces and the code generator reads: buffers, the views of
them that operands are, the steps (one per kernel) and the run-time checks. Strides are dim
polynomials, so static facts (unit stride, broadcast) are plain ints and everything else is
computed at run time. Plain data and helpers on it: the planning itself is runtime/kernelplan.py."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from graphc.ir.core import Func, Value
from graphc.ir.ops.fused import body_symbols
from graphc.ir.types import DimLike, DType, Shape, dim_mul


@dataclass(frozen=True)
class View:
    """Elements of buffer ``buf`` at ``offset + sum(i_k * strides[k])``."""
    buf: int
    dtype: DType
    shape: Shape
    strides: Shape
    offset: DimLike = 0


@dataclass(frozen=True)
class Lazy:
    """An elementwise value computed where it is read; ``args`` are aligned to its shape."""
    value: Value
    args: tuple[Operand, ...]


@dataclass(frozen=True)
class Reg:
    """A per-row value held in a stack slot (a reduction of a row kernel): the same for every
    element of the row, so it ignores the index it is read at."""
    slot: Any
    dtype: DType


@dataclass(frozen=True)
class Acc:
    """The matmul result element (or vector) that a kernel's epilogue starts from."""
    dtype: DType


Operand = View | Lazy | Reg | Acc


@dataclass
class Buffer:
    kind: str                  # "param" | "const" | "slot" | "result" | "output"
    dtype: DType
    size: DimLike              # elements
    index: int = 0             # param / result / output position
    value: Value | None = None


@dataclass
class Step:
    index: int
    value: Value
    kind: str                  # registry kind, or "copy" (materialise ``args[0]`` contiguously)
    out: View
    args: tuple[Operand, ...]


@dataclass
class Check:
    """A run-time condition ``lo <= x <= hi`` (no upper bound when ``hi`` is None), checked
    before any step runs; a failure is a GraphCallError naming ``value``."""
    value: Value
    x: DimLike
    lo: DimLike
    hi: DimLike | None


@dataclass
class Plan:
    func: Func
    symbols: tuple[str, ...]
    buffers: list[Buffer] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    operands: dict[int, Operand] = field(default_factory=dict)
    results: list[tuple[Operand, int | None]] = field(default_factory=list)  # (what, own buf)
    step_of: dict[int, Value] = field(default_factory=dict)   # error index -> value
    offsets: dict[int, DimLike] = field(default_factory=dict)  # slot buffer -> arena offset
    peak: DimLike = 0                                           # arena bytes for intermediates
    stage: dict[int, DimLike] = field(default_factory=dict)    # result buffer -> staging offset
    stage_end: DimLike = 0                                      # arena bytes with staging
    stage_ends: dict[int, DimLike] = field(default_factory=dict)  # result -> its staging end
    arena_cache: dict[tuple, int] = field(default_factory=dict)
    shape_cache: dict[tuple, list] = field(default_factory=dict)  # dims -> result shapes
    inplace: dict[int, str] = field(default_factory=dict)     # result -> param it may overwrite
    binder: Any = None                                          # ir.args.Binder, made on demand


def contiguous_strides(shape: Shape) -> Shape:
    """Row-major strides of ``shape``."""
    return _strides(tuple(shape))


@functools.lru_cache(maxsize=4096)
def _strides(shape: Shape) -> Shape:
    """``contiguous_strides``, remembered: an unrolled loop's steps repeat a few shapes."""
    out: list[DimLike] = []
    acc: DimLike = 1
    for d in reversed(shape):
        out.append(acc)
        acc = dim_mul(acc, d)
    return tuple(reversed(out))


def contiguous(buf: int, dtype: DType, shape: Shape, offset: DimLike = 0) -> View:
    return View(buf, dtype, tuple(shape), contiguous_strides(shape), offset)


def is_contiguous(v: View) -> bool:
    want = contiguous_strides(v.shape)
    return all(s == w for s, w, d in zip(v.strides, want, v.shape) if d != 1)


def broadcast_view(v: View, shape: Shape) -> View:
    """Align ``v`` to ``shape`` (NumPy rules): new leading axes and static-1 axes get stride 0."""
    pad = len(shape) - len(v.shape)
    strides = [0] * pad
    for d, s, want in zip(v.shape, v.strides, shape[pad:]):
        strides.append(0 if d == 1 and want != 1 else s)
    return View(v.buf, v.dtype, tuple(shape), tuple(strides), v.offset)


def symbols_of(func: Func) -> tuple[str, ...]:
    """Every symbolic dim the function's types and attributes mention, sorted (the order of the
    run-time ``dims`` array)."""
    return tuple(sorted(body_symbols(func)))


def buffers_read(op: Operand) -> list[int]:
    if isinstance(op, View):
        return [op.buf]
    if isinstance(op, Lazy):
        return [b for a in op.args for b in buffers_read(a)]
    return []
