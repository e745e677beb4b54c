"""Compile-time values of the .graph language (weakly typed int/float/bool literals, symbolic
dims, strings, dtypes, lists) and how they fold, become op attributes, or become IR tensors."""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from graphc.ir.core import Value, const, make
from graphc.ir.errors import GraphTypeError, Loc
from graphc.ir.types import Dim, DType, dim_prod

DTYPES = {d.value: d for d in DType}

SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/", "pow": "**", "matmul": "@",
          "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
ARITH: dict[str, Callable[[Any, Any], Any]] = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv,
    "pow": operator.pow}
COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "lt": operator.lt, "le": operator.le, "gt": operator.gt, "ge": operator.ge,
    "eq": operator.eq, "ne": operator.ne}


@dataclass(frozen=True, slots=True)
class Multi:
    """The several results of a fn that does ``return a, b``; only unpacking may take them."""
    values: tuple[Any, ...]


def describe(v: Any) -> str:
    """A compile-time value (or tensor) in words, for error messages."""
    if isinstance(v, Value):
        return f"a tensor {v.type}"
    if isinstance(v, bool):
        return f"the bool {str(v).lower()}"
    if isinstance(v, int):
        return f"the integer {int_str(v)}"
    if isinstance(v, float):
        return f"the number {v!r}"
    if isinstance(v, str):
        return f'the string "{v}"'
    if isinstance(v, DType):
        return f"the dtype {v}"
    if isinstance(v, Dim):
        return f"the symbolic dim {v}"
    if isinstance(v, tuple):
        return f"a list of {len(v)}"
    if isinstance(v, Multi):
        return f"{len(v.values)} values (unpack them: a, b = ...)"
    if isinstance(v, Weak):
        ty = v.default.type
        return "a number computed at run time" if ty.rank == 0 else \
            f"a weakly typed tensor {ty}"
    return repr(v)


INT_MAX = 2 ** 63 - 1          # compile-time integers are int64, as JAX's x64 ints


def int_str(n: int) -> str:
    """``str(n)``, except that an integer too long for Python to print says so."""
    return str(n) if n.bit_length() < 10_000 else f"<an integer of {n.bit_length()} bits>"


def check_int(n: Any, loc: Loc, what: str = "integer") -> Any:
    """``n`` if it is not an int, or an int in int64 range; a ``Dim`` needs int64
    coefficients. Python ints are unbounded; graphc's compile-time integers are int64."""
    if isinstance(n, Dim):
        if any(abs(c) > INT_MAX for _, c in n.terms):
            raise GraphTypeError(f"{what} too large: a coefficient of a dim polynomial does "
                                 f"not fit in int64", loc)
    elif isinstance(n, int) and not isinstance(n, bool) and not -INT_MAX - 1 <= n <= INT_MAX:
        raise GraphTypeError(f"{what} too large: {int_str(n)} does not fit in int64 "
                             f"(at most 2**63-1 in magnitude)", loc)
    return n


class Weak:
    """A value computed only from literals, symbolic dims and other weak values, plus bool
    tensors as conditions (``1.0 / N``, ``exp(1.0)``, ``mean(where(c, 0.5, 1.0))``): like a
    literal, it adopts the dtype of the tensor it meets, as in JAX; alone it is f32
    (``is_float``) or i64. ``fn`` builds it from its operands made tensors of one dtype; each
    dtype is built once, children first and without recursion, so long chains stay cheap."""
    __slots__ = ("fn", "operands", "loc", "is_float", "built")

    def __init__(self, fn: Callable[..., Value], operands: tuple[Any, ...], loc: Loc,
                 is_float: bool):
        self.fn, self.operands, self.loc, self.is_float = fn, operands, loc, is_float
        self.built: dict[DType, Value] = {}

    @property
    def default(self) -> Value:
        """The value alone: its literals f32 (``is_float``) or i64."""
        return self.built[DType.f32 if self.is_float else DType.i64]

    @property
    def follows(self) -> bool:
        """False for a weak bool (``N > 2``), whose operands keep their own default dtype."""
        return self.default.dtype is not DType.bool

    def at(self, dtype: DType, like: Value | None, loc: Loc) -> Value:
        if not self.follows:
            return self.default
        if self.is_float and not dtype.is_float:
            other = f"a tensor {like.type}" if like is not None else dtype
            raise GraphTypeError(f"a float value computed from literals cannot be used with "
                                 f"{other} (an integer dtype); cast it first", loc)
        return _materialize(self, dtype)


def _materialize(root: Weak, dtype: DType) -> Value:
    stack = [root]
    while stack:
        w = stack[-1]
        if dtype in w.built:
            stack.pop()
            continue
        todo = [x for x in w.operands
                if isinstance(x, Weak) and x.follows and dtype not in x.built]
        if todo:
            stack.extend(todo)
            continue
        stack.pop()
        w.built[dtype] = w.fn(*(x.built[dtype] if isinstance(x, Weak) and x.follows else
                                x.default if isinstance(x, Weak) else
                                to_tensor(x, None, w.loc, dtype) for x in w.operands))
    return root.built[dtype]


def weak_apply(fn: Callable[..., Value], operands: list[Any], loc: Loc) -> Weak | Value:
    """``fn`` over weak operands (see ``Weak``), typed later by what it meets. A result whose
    dtype does not follow its operands' (``argmax``, ``cast``) is a strong tensor."""
    floaty = any(isinstance(x, float) or isinstance(x, tuple) and _holds_float(x)
                 or isinstance(x, Weak) and x.follows and x.is_float for x in operands)
    w = Weak(fn, tuple(operands), loc, floaty)
    if not floaty:
        try:
            _materialize(w, DType.i64)
        except GraphTypeError:           # float-only ops (sqrt(2), 1 / N, mean) make a float
            w.is_float = True
    if w.is_float:
        _materialize(w, DType.f32)
    own = DType.f32 if w.is_float else DType.i64
    return w if w.default.dtype in (own, DType.bool) else w.default


def weak(op: str, operands: list[Any], loc: Loc, **attrs: Any) -> Weak | Value:
    """``op`` over literals, dims and weak values, typed later by what it meets."""
    return weak_apply(lambda *xs: make(op, *xs, loc=loc, **attrs), operands, loc)


def _holds_float(x: Any) -> bool:
    return any(_holds_float(i) for i in x) if isinstance(x, tuple) else isinstance(x, float)


def weakness(v: Any) -> str:
    """How an operand types a call: "weak" (numbers, dims, numeric lists, weak values: typed by
    what they meet), "neutral" (bools, bool tensors) or "strong" (any other tensor or value)."""
    if isinstance(v, Weak) or _is_number(v):
        return "weak"
    if isinstance(v, bool) or isinstance(v, Value) and v.dtype is DType.bool:
        return "neutral"
    if isinstance(v, tuple) and v:
        kinds = {weakness(i) for i in v}
        if kinds == {"weak"} and not any(isinstance(i, (Weak, Dim)) for i in v):
            return "weak"
        if kinds == {"neutral"} and not any(isinstance(i, Value) for i in v):
            return "neutral"
    return "strong"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, Dim)) and not isinstance(v, bool)


# ---- literals to tensors --------------------------------------------------------------------

def _check_range(x: int, dtype: DType, loc: Loc) -> None:
    if dtype.is_int:
        info = np.iinfo(dtype.np)
        if not info.min <= x <= info.max:
            raise GraphTypeError(f"the integer {int_str(x)} does not fit in {dtype}", loc)
    else:
        check_int(x, loc)


def _flatten(x: Any, loc: Loc) -> tuple[tuple[int, ...], list[Any]]:
    if not isinstance(x, tuple):
        if not isinstance(x, (bool, int, float)):
            raise GraphTypeError(f"a list used as a tensor may hold only numbers, got "
                                 f"{describe(x)}", loc)
        return (), [x]
    parts = [_flatten(i, loc) for i in x]
    if any(p[0] != parts[0][0] for p in parts):
        raise GraphTypeError("a nested list used as a tensor must be rectangular", loc)
    inner = parts[0][0] if parts else ()
    return (len(x),) + inner, [v for p in parts for v in p[1]]


def _list_tensor(x: tuple, like: Value | None, loc: Loc, want: DType | None) -> Value:
    shape, flat = _flatten(x, loc)
    bools = [isinstance(v, bool) for v in flat]
    if any(bools) and not all(bools):
        raise GraphTypeError("a list used as a tensor cannot mix bools and numbers", loc)
    if like is not None and not all(bools):
        dtype = like.dtype
    elif want is not None and not all(bools):
        dtype = want
    else:
        dtype = (DType.bool if flat and all(bools) else
                 DType.f32 if any(isinstance(v, float) for v in flat) else DType.i64)
    for v in flat:
        _scalar_dtype_ok(v, dtype, like, loc)
        if isinstance(v, int) and not isinstance(v, bool):
            _check_range(v, dtype, loc)
    return const(tuple(flat), dtype, shape, loc=loc)


def _scalar_dtype_ok(x: Any, dtype: DType, like: Value | None, loc: Loc) -> None:
    other = f"a tensor {like.type}" if like is not None else dtype
    if dtype is DType.bool and not isinstance(x, bool):
        raise GraphTypeError(f"{describe(x)} cannot be used with {other} (bool)", loc)
    if isinstance(x, float) and not dtype.is_float:
        raise GraphTypeError(f"the float literal {x!r} cannot be used with {other} "
                             f"(an integer dtype); cast it first", loc)


def to_tensor(x: Any, like: Value | None, loc: Loc, dtype: DType | None = None) -> Value:
    """A tensor from ``x``: a weak literal (or ``Weak`` value) adopts ``like``'s dtype (or
    ``dtype``; int: any numeric dtype; float: any float dtype); without one, ints are i64 and
    floats f32. Dims become ``dim``."""
    if isinstance(x, Value):
        return x
    if isinstance(x, tuple):
        return _list_tensor(x, like, loc, dtype)
    if isinstance(x, bool):
        return const(x, DType.bool, loc=loc)
    dtype = like.dtype if like is not None else dtype
    if isinstance(x, Weak):
        return x.at(dtype or (DType.f32 if x.is_float else DType.i64), like, loc)
    if not _is_number(x):
        raise GraphTypeError(f"expected a tensor or a number, got {describe(x)}", loc)
    if dtype is None:
        dtype = DType.f32 if isinstance(x, float) else DType.i64
    _scalar_dtype_ok(x, dtype, like, loc)
    if isinstance(x, Dim):
        return make("dim", value=x, dtype=dtype, loc=loc)
    if isinstance(x, int):
        _check_range(x, dtype, loc)
    return const(x, dtype, loc=loc)


def tensors_like(items: list[Any], loc: Loc) -> list[Value]:
    """Operands of one op: each literal adopts the dtype of the first non-bool tensor among
    them (``2 * x``, ``where(c, x, 0.0)``); bool literals stay bool."""
    like = next((v for v in items if isinstance(v, Value) and v.dtype is not DType.bool), None)
    return [to_tensor(x, None if isinstance(x, bool) else like, loc) for x in items]


def to_attr(v: Any, what: str, loc: Loc) -> Any:
    """An op attribute: a compile-time value, lists as tuples."""
    if isinstance(v, (Value, Multi, Weak)):
        raise GraphTypeError(f"{what} must be known at compile time, got {describe(v)}", loc)
    if isinstance(v, tuple):
        return tuple(to_attr(i, what, loc) for i in v)
    return v


# ---- compile-time arithmetic ----------------------------------------------------------------

def static_neg(x: Any, loc: Loc) -> Any:
    if isinstance(x, Weak):
        return weak("neg", [x], loc)
    if not _is_number(x):
        raise GraphTypeError(f"cannot negate {describe(x)}", loc)
    return check_int(-x, loc)


def _dims_as_tensors(op: str, x: Any, y: Any, loc: Loc) -> Weak:
    """A symbolic dim in arithmetic that dims cannot express (``1.0 / N``, ``N > 3``) is read
    at run time with the ``dim`` op, weakly typed like a literal."""
    return weak(op, [x, y], loc)


def static_binary(op: str, x: Any, y: Any, loc: Loc, what: str = "integer") -> Any:
    """Fold ``x op y`` for compile-time values; ints stay ints except ``/`` and negative
    powers, as in Python. Symbolic dims stay polynomials under + - * and int powers."""
    if isinstance(x, Weak) or isinstance(y, Weak):
        if not all(_is_number(v) or isinstance(v, Weak) for v in (x, y)):
            raise GraphTypeError(f"cannot compute {describe(x)} {SYMBOL[op]} {describe(y)}",
                                 loc)
        return weak(op, [x, y], loc)
    if not (_is_number(x) and _is_number(y)):
        same = type(x) is type(y) and isinstance(x, (bool, str, DType))
        if op in ("eq", "ne") and same:
            return COMPARE[op](x, y)
        raise GraphTypeError(f"cannot compute {describe(x)} {SYMBOL[op]} {describe(y)}", loc)
    if op == "matmul":
        raise GraphTypeError(f"'@' needs tensors, got {describe(x)} and {describe(y)}", loc)
    if isinstance(x, Dim) or isinstance(y, Dim):
        if op in ("add", "sub", "mul") and not isinstance(x, float) \
                and not isinstance(y, float):
            return check_int(ARITH[op](x, y), loc, "dim")
        if op == "pow" and isinstance(x, Dim) and isinstance(y, int) and 0 <= y <= 64:
            return check_int(dim_prod([x] * y), loc, "dim")
        return _dims_as_tensors(op, x, y, loc)
    if op in COMPARE:
        return COMPARE[op](x, y)
    if op == "pow" and isinstance(x, int) and isinstance(y, int):
        if y < 0:
            x = float(x)
        elif abs(x) > 1 and y > 63:
            raise GraphTypeError(f"integer too large: {x} ** {y} does not fit in int64", loc)
    try:
        out = ARITH[op](x, y)
    except ZeroDivisionError:
        raise GraphTypeError("division by zero in a compile-time expression", loc) from None
    except OverflowError:
        raise GraphTypeError("a compile-time number overflows", loc) from None
    if isinstance(out, complex):
        raise GraphTypeError(f"{x!r} ** {y!r} is not a real number", loc)
    return check_int(out, loc, what)
