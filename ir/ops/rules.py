"""Shape, dtype and attribute rules shared by many ops, plus the format of the test cases
(``Sample``) every op declares. Each rule raises ``GraphTypeError`` naming the types involved."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from graphc.ir.errors import GraphTypeError
from graphc.ir.types import (
    Dim,
    DimLike,
    DType,
    Shape,
    TensorType,
    dim_add,
    dim_div,
    dim_prod,
    dim_str,
)

# ---------------------------------------------------------------------------- test cases


@dataclass(frozen=True, slots=True)
class Sample:
    """One test case of an op: input types as text, attributes, and the sizes that the symbolic
    dims of the types (all of them together) are bound to, e.g. ``types=("f32[N,4]", "f32[4]")``
    run with N = 0, 1 and 3. ``domain`` overrides the op's per-input (lo, hi) value range; a bound
    may name a symbol ("N") to draw indices in [0, N). ``grad=False`` skips the VJP check."""
    types: tuple[str, ...]
    attrs: tuple[tuple[str, Any], ...] = ()
    sizes: tuple[int, ...] = (0, 1, 3)
    domain: tuple[Any, ...] = ()
    grad: bool = True


def sample(*types: str, sizes: tuple[int, ...] = (0, 1, 3), domain: tuple[Any, ...] = (),
           grad: bool = True, **attrs: Any) -> Sample:
    return Sample(tuple(types), tuple(attrs.items()), sizes, domain, grad)


N = Dim.sym("N")          # the symbolic dim most samples use

# ---------------------------------------------------------------------------- formatting


def types_str(types: tuple[TensorType, ...] | list[TensorType], sep: str = ", ") -> str:
    return sep.join(str(t) for t in types)


def fail(name: str, types: tuple[TensorType, ...] | list[TensorType], why: str,
         sep: str = ", ") -> GraphTypeError:
    """``name: f32[3] @ f32[4]: why`` (binary operators) or ``name(f32[3], i32[]): why``."""
    if sep != ", ":
        return GraphTypeError(f"{name}: {types_str(types, sep)}: {why}")
    return GraphTypeError(f"{name}({types_str(types)}): {why}")


OPERATOR = {"add": " + ", "sub": " - ", "mul": " * ", "div": " / ", "pow": " ** ",
            "matmul": " @ ", "lt": " < ", "le": " <= ", "gt": " > ", "ge": " >= ",
            "eq": " == ", "ne": " != "}

# ---------------------------------------------------------------------------- dtypes

FLOAT = "float"
NUMERIC = "numeric"
BOOL = "bool"
ANY = "any"

_KIND_OK: dict[str, Callable[[DType], bool]] = {
    FLOAT: lambda d: d.is_float, NUMERIC: lambda d: d.is_numeric,
    BOOL: lambda d: d is DType.bool, ANY: lambda d: True}
_KIND_WORD = {FLOAT: "a float", NUMERIC: "a numeric", BOOL: "a bool", ANY: "any"}


def require(name: str, kind: str, *types: TensorType, sep: str = ", ") -> DType:
    """All ``types`` share one dtype of ``kind``; returns it."""
    dt = types[0].dtype
    for t in types[1:]:
        if t.dtype is not dt:
            raise fail(name, types, f"dtypes {dt} and {t.dtype} differ (use cast)", sep)
    if not _KIND_OK[kind](dt):
        raise fail(name, types, f"needs {_KIND_WORD[kind]} dtype, got {dt}", sep)
    return dt


def as_dtype(d: Any) -> DType:
    if isinstance(d, DType):
        return d
    try:
        return DType(str(d))
    except ValueError:
        raise GraphTypeError(f"unknown dtype {d!r}; expected one of "
                             f"{', '.join(t.value for t in DType)}") from None

# ---------------------------------------------------------------------------- broadcasting


def broadcast_shapes(name: str, *types: TensorType, sep: str = ", ") -> Shape:
    """NumPy broadcasting with PyTensor's rule: only a static 1 broadcasts, so un-broadcasting
    gradients is static. Two different static dims are an error; a symbolic dim against any
    other dim (``N`` vs ``5`` or ``M``) must be equal, which ``ir.shapecheck`` checks at call
    time; the result takes the static one, else the first."""
    rank = max(t.rank for t in types)
    out: list[DimLike] = []
    for i in range(rank):
        dims = [t.shape[i - rank + t.rank] for t in types if i - rank + t.rank >= 0]
        big = [d for d in dims if d != 1]
        static = [d for d in big if isinstance(d, int)]
        for d in static[1:]:
            if d != static[0]:
                raise fail(name, types, f"shapes do not broadcast: dims {dim_str(static[0])} "
                           f"and {dim_str(d)} differ", sep)
        out.append(static[0] if static else big[0] if big else 1)
    return tuple(out)


def broadcast_to_shape(name: str, ty: TensorType, shape: Shape) -> None:
    """``ty`` broadcasts to exactly ``shape`` (NumPy's broadcast_to, static-1 rule; a symbolic
    dim meeting another dim is checked at call time by ir.shapecheck)."""
    if ty.rank > len(shape) or any(d != 1 and d != t and isinstance(d, int) and isinstance(t, int)
                                   for d, t in zip(ty.shape[::-1], shape[::-1])):
        raise GraphTypeError(f"{name}: cannot broadcast {ty} to "
                             f"[{','.join(dim_str(d) for d in shape)}]")


def unary(kind: str, name: str, x: TensorType, **_: Any) -> TensorType:
    require(name, kind, x)
    return x


def to_bool(kind: str, name: str, x: TensorType, **_: Any) -> TensorType:
    require(name, kind, x)
    return x.with_dtype(DType.bool)


def binary(kind: str, name: str, x: TensorType, y: TensorType, *, out: DType | None = None
           ) -> TensorType:
    sep = OPERATOR.get(name, ", ")
    dt = require(name, kind, x, y, sep=sep)
    return TensorType(out or dt, broadcast_shapes(name, x, y, sep=sep))


# ---------------------------------------------------------------------------- attributes


def as_int(name: str, what: str, v: Any) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise GraphTypeError(f"{name}: {what} must be an integer, got {v!r}")
    return int(v)


def as_float(name: str, what: str, v: Any) -> float:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise GraphTypeError(f"{name}: {what} must be a number, got {v!r}")
    return float(v)


def norm_axis(name: str, axis: Any, rank: int) -> int:
    a = as_int(name, "axis", axis)
    if not -rank <= a < rank:
        raise GraphTypeError(f"{name}: axis {a} is out of range for rank {rank}")
    return a % rank


def norm_axes(name: str, axis: Any, rank: int) -> tuple[int, ...]:
    """None means every axis; an int or a list of them (negative allowed) -> sorted tuple."""
    if axis is None:
        return tuple(range(rank))
    items = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    out = sorted(norm_axis(name, a, rank) for a in items)
    if len(set(out)) != len(out):
        raise GraphTypeError(f"{name}: repeated axis in {axis!r}")
    return tuple(out)


def as_dim(name: str, what: str, d: Any) -> DimLike:
    return d if isinstance(d, Dim) else as_int(name, what, d)


def as_shape(name: str, shape: Any) -> Shape:
    """A shape attribute: a list of ints and symbolic dims; ints must be non-negative."""
    items = list(shape) if isinstance(shape, (list, tuple)) else [shape]
    out = tuple(as_dim(name, "a shape entry", d) for d in items)
    if any(isinstance(d, int) and d < 0 for d in out):
        raise GraphTypeError(f"{name}: negative dim in shape {list(shape)}")
    return out


def reduced_shape(shape: Shape, axes: tuple[int, ...], keepdims: bool) -> Shape:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def canon_reduce(name: str, types: tuple[TensorType, ...], attrs: dict[str, Any]
                 ) -> dict[str, Any]:
    keepdims = attrs["keepdims"]
    if not isinstance(keepdims, (bool, np.bool_)):
        raise GraphTypeError(f"{name}: keepdims must be true or false, got {keepdims!r}")
    return dict(attrs, axis=norm_axes(name, attrs["axis"], types[0].rank),
                keepdims=bool(keepdims))


def count(shape: Shape, axes: tuple[int, ...]) -> DimLike:
    return dim_prod(tuple(shape[a] for a in axes))


def resolve_reshape(name: str, ty: TensorType, shape: Any) -> Shape:
    """Resolve one ``-1`` exactly (symbolic dims included) and check the element count."""
    items = list(shape) if isinstance(shape, (list, tuple)) else [shape]
    dims = [as_dim(name, "a shape entry", d) for d in items]
    holes = [i for i, d in enumerate(dims) if isinstance(d, int) and d == -1]
    target = f"[{','.join(dim_str(d) for d in dims)}]"
    if len(holes) > 1:
        raise GraphTypeError(f"{name}: {ty} to {target}: more than one -1")
    if any(isinstance(d, int) and d < -1 for d in dims):
        raise GraphTypeError(f"{name}: {ty} to {target}: negative dim")
    if holes:
        rest = dim_prod(tuple(d for i, d in enumerate(dims) if i != holes[0]))
        hole = dim_div(ty.size, rest)
        if hole is None or (isinstance(hole, int) and hole < 0):
            raise GraphTypeError(f"{name}: {ty} to {target}: the -1 does not resolve exactly "
                                 f"({dim_str(ty.size)} elements / {dim_str(rest)})")
        dims[holes[0]] = hole
    size = dim_prod(tuple(dims))
    if size != ty.size and not _may_agree(size, ty.size):
        raise GraphTypeError(f"{name}: cannot reshape {ty} ({dim_str(ty.size)} elements) to "
                             f"[{','.join(dim_str(d) for d in dims)}] "
                             f"({dim_str(dim_prod(tuple(dims)))} elements)")
    return tuple(dims)


def _may_agree(a: DimLike, b: DimLike) -> bool:
    """Whether two different element counts can be equal for some binding: never over the same
    symbols ([N,4] vs [N,5]) nor when a constant is not a multiple of the other side's common
    factor (784*N vs 49); otherwise ([N] vs [5], [N*M] vs [K]) ir.shapecheck decides at call
    time."""
    sa = a.symbols if isinstance(a, Dim) else ()
    sb = b.symbols if isinstance(b, Dim) else ()
    if sa == sb:
        return False
    for c, p in ((a, b), (b, a)):
        if isinstance(c, int) and isinstance(p, Dim):
            g = math.gcd(*(k for _, k in p.terms))
            if c % g:
                return False
    return True


def dim_sum(dims: list[DimLike]) -> DimLike:
    out: DimLike = 0
    for d in dims:
        out = dim_add(out, d)
    return out

# ---------------------------------------------------------------------------- reductions


def reduce_identity(identity: Any, dtype: DType) -> Any:
    """The fold's start value in ``dtype``: ±inf become the integer dtype's min / max."""
    if dtype.is_float or not isinstance(identity, float) or np.isfinite(identity):
        return dtype.np.type(identity).item()
    info = np.iinfo(dtype.np)
    return int(info.min if identity < 0 else info.max)

# ---------------------------------------------------------------------------- building rules


def call(name: str, *xs: Any, **attrs: Any) -> Any:
    """``make`` with Python numbers lifted to the dtype of the first non-bool operand, so that
    VJP rules read like math: ``call("where", x > 0, g, 0)``."""
    from graphc.ir.core import Value, lift, make
    values = [x for x in xs if isinstance(x, Value)]
    like = next((v for v in values if v.dtype is not DType.bool), values[0])
    return make(name, *(lift(x, like) for x in xs), **attrs)


def no_grad(g: Any, out: Any, *xs: Any, **_: Any) -> list[None]:
    return [None] * len(xs)
