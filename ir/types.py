"""Dtypes, dims and tensor types: the static facts every IR value carries.

A dim is an ``int`` or a ``Dim``: an integer polynomial of symbolic dims (``N``, ``N+4``,
``12*N``), so shapes stay exact through reshape and concat and one compile serves every binding.
"""
from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass
from typing import Mapping, Union

import numpy as np

from graphc.ir.errors import GraphTypeError


class DType(enum.Enum):
    f32 = "f32"
    f64 = "f64"
    i32 = "i32"
    i64 = "i64"
    bool = "bool"

    @property
    def np(self) -> np.dtype:
        return _NP[self]

    @property
    def is_float(self) -> bool:
        return self in (DType.f32, DType.f64)

    @property
    def is_int(self) -> bool:
        return self in (DType.i32, DType.i64)

    @property
    def is_numeric(self) -> bool:
        return self is not DType.bool

    @property
    def itemsize(self) -> int:
        return int(_NP[self].itemsize)

    def __str__(self) -> str:
        return self.value

    __repr__ = __str__

    @staticmethod
    def from_np(dt: np.dtype) -> DType:
        for k, v in _NP.items():
            if v == dt:
                return k
        raise GraphTypeError(f"no graphc dtype for numpy dtype {dt}")


_NP = {DType.f32: np.dtype(np.float32), DType.f64: np.dtype(np.float64),
       DType.i32: np.dtype(np.int32), DType.i64: np.dtype(np.int64),
       DType.bool: np.dtype(np.bool_)}

Monomial = tuple[str, ...]          # sorted symbol names, repeated for powers: ("M", "N", "N")


@dataclass(frozen=True, slots=True)
class Dim:
    """A non-constant integer polynomial in symbolic dims; constants are plain ``int``s."""
    terms: tuple[tuple[Monomial, int], ...]   # sorted, no zero coefficients

    @staticmethod
    def sym(name: str) -> Dim:
        return Dim(((((name,)), 1),))

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(sorted({s for m, _ in self.terms for s in m}))

    def __add__(self, other: DimLike) -> DimLike:
        return dim_add(self, other)

    __radd__ = __add__

    def __sub__(self, other: DimLike) -> DimLike:
        return dim_add(self, dim_mul(-1, other))

    def __rsub__(self, other: DimLike) -> DimLike:
        return dim_add(other, dim_mul(-1, self))

    def __mul__(self, other: DimLike) -> DimLike:
        return dim_mul(self, other)

    __rmul__ = __mul__

    def __neg__(self) -> DimLike:
        return dim_mul(-1, self)

    def __str__(self) -> str:
        return dim_str(self)

    def __repr__(self) -> str:
        return f"Dim({dim_str(self)})"


DimLike = Union[int, Dim]


def _poly(d: DimLike) -> dict[Monomial, int]:
    if isinstance(d, Dim):
        return dict(d.terms)
    return {(): int(d)} if d else {}


def _make(p: dict[Monomial, int]) -> DimLike:
    p = {m: c for m, c in p.items() if c}
    if not p:
        return 0
    if list(p) == [()]:
        return p[()]
    return Dim(tuple(sorted(p.items(), key=lambda mc: (-len(mc[0]), mc[0]))))


def dim_add(a: DimLike, b: DimLike) -> DimLike:
    p = _poly(a)
    for m, c in _poly(b).items():
        p[m] = p.get(m, 0) + c
    return _make(p)


def dim_mul(a: DimLike, b: DimLike) -> DimLike:
    p: dict[Monomial, int] = {}
    for ma, ca in _poly(a).items():
        for mb, cb in _poly(b).items():
            m = tuple(sorted(ma + mb))
            p[m] = p.get(m, 0) + ca * cb
    return _make(p)


def dim_prod(dims: tuple[DimLike, ...] | list[DimLike]) -> DimLike:
    out: DimLike = 1
    for d in dims:
        out = dim_mul(out, d)
    return out


def dim_div(a: DimLike, b: DimLike) -> DimLike | None:
    """Exact ``a / b`` when ``b`` is a monomial that divides every term of ``a``, else None."""
    pb = _poly(b)
    if len(pb) != 1:
        return None
    (mb, cb), = pb.items()
    out: dict[Monomial, int] = {}
    for ma, ca in _poly(a).items():
        rest = list(ma)
        for s in mb:
            if s not in rest:
                return None
            rest.remove(s)
        if ca % cb:
            return None
        out[tuple(rest)] = ca // cb
    return _make(out)


def dim_eval(d: DimLike, env: Mapping[str, int]) -> int:
    if isinstance(d, int):
        return d
    return sum(c * math.prod(env[s] for s in m) for m, c in d.terms)


DIM_MAX = 2 ** 63 - 1       # dims and their polynomials' coefficients are int64


def _int_str(n: int) -> str:
    """``str(n)``, but never Python's ValueError for an integer of over 4,300 digits."""
    return str(n) if n.bit_length() < 10_000 else f"<{n.bit_length()}-bit integer>"


def dim_str(d: DimLike) -> str:
    """``N+4``, ``2*M*N-N+3``: the text ir.lark reads back. Never raises."""
    if isinstance(d, int):
        return _int_str(d)
    return _dim_str(d)


@functools.lru_cache(maxsize=8192)
def _dim_str(d: Dim) -> str:
    out = ""
    for m, c in d.terms:
        body = "*".join(m)
        if not m:
            body = _int_str(abs(c))
        elif abs(c) != 1:
            body = f"{_int_str(abs(c))}*{body}"
        if not out:
            out = ("-" if c < 0 else "") + body
        else:
            out += ("-" if c < 0 else "+") + body
    return out


def is_static(d: DimLike) -> bool:
    return isinstance(d, int)


Shape = tuple[DimLike, ...]


@dataclass(frozen=True, slots=True)
class TensorType:
    dtype: DType
    shape: Shape = ()

    def __post_init__(self) -> None:
        for d in self.shape:
            big = abs(d) > DIM_MAX if isinstance(d, int) else \
                any(abs(c) > DIM_MAX for _, c in d.terms)
            if big:
                raise GraphTypeError(f"dim too large: {dim_str(d)} does not fit in int64")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def size(self) -> DimLike:
        return dim_prod(self.shape)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(sorted({s for d in self.shape if isinstance(d, Dim) for s in d.symbols}))

    def with_shape(self, shape: Shape) -> TensorType:
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: DType) -> TensorType:
        return TensorType(dtype, self.shape)

    def concrete(self, env: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(dim_eval(d, env) for d in self.shape)

    def __str__(self) -> str:
        return _type_str(self.dtype, self.shape)

    __repr__ = __str__


@functools.lru_cache(maxsize=8192)
def _type_str(dtype: DType, shape: Shape) -> str:
    """A type's text, remembered: cache keys and dumps print the same few types thousands of
    times (an unrolled loop's), and building the text was 40% of a model's cache key."""
    return f"{dtype}[{','.join(dim_str(d) for d in shape)}]"
