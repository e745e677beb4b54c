"""Exact algebraic rewrites from a table: x*1, x+0, --x, layout-op chains, sum of a broadcast.
Keeps: types, locs, results up to float rounding, every NaN and Inf.

The rule for NaN and Inf: a rewrite may change only the rounding of a result or the sign of a zero
result (x + 0.0 gives +0.0 for x = -0.0); it never turns a NaN or an Inf into a number, nor a
number into a NaN. So ``x * 0`` folds to 0 only when ``x`` is provably finite (a finite constant,
an integer, a one_hot, or an op like sigmoid, where or reshape of finite values), because NaN * 0
and Inf * 0 are NaN; ``sum`` over a symbolic dim of a broadcast becomes a multiplication by that
dim under the same condition (the dim may be 0). ``exp(log(x))`` and ``log(exp(x))`` are not
exact (rounding, overflow, NaN for x < 0), so they are left alone.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphc.ir.core import Func, Value, const, make
from graphc.ir.ops import registry
from graphc.ir.ops.rules import reduced_shape
from graphc.ir.types import DimLike, DType, TensorType, dim_prod
from graphc.passes.rewrite import NoOptions, PassContext, has_grad, rewrite


@dataclass(slots=True)
class Facts:
    """What rules may ask about the function beyond a value's inputs."""
    finite: dict[int, tuple[Value, bool]] = field(default_factory=dict)  # keeps keys alive


RuleFn = Callable[[Value, Facts], "Value | None"]


def run(func: Func, ctx: PassContext | None = None, options: NoOptions | None = None) -> Func:
    if has_grad(func):
        return func
    facts = Facts()

    def simplify(v: Value) -> Value:
        for rule in RULES.get(v.op, ()) + KIND_RULES.get(registry.get(v.op).kind, ()):
            out = rule(v, facts)
            if out is not None:
                return out
        return v
    return rewrite(func, simplify, ctx and ctx.counter)

# ---------------------------------------------------------------------------- helpers


def splat(v: Value) -> Any:
    """The value of a splat constant, else None."""
    if v.op == "const" and not isinstance(v.attrs["value"], tuple):
        return v.attrs["value"]
    return None


def is_value(v: Value, x: float) -> bool:
    s = splat(v)
    return s is not None and not isinstance(s, bool) and s == x


def fit(x: Value, ty: TensorType) -> Value | None:
    """``x`` as a value of type ``ty``: itself, or broadcast to ``ty``'s shape."""
    if x.type == ty:
        return x
    if x.dtype is not ty.dtype:
        return None
    return make("broadcast_to", x, shape=ty.shape)


def negated(x: Value, ty: TensorType) -> Value | None:
    y = fit(x, ty)
    return None if y is None else make("neg", y)


def is_finite(v: Value, facts: Facts) -> bool:
    """True when ``v`` can hold no NaN or Inf whatever the function's arguments are."""
    memo = facts.finite
    stack = [v]
    while stack:
        w = stack[-1]
        if id(w) in memo:
            stack.pop()
            continue
        known = _finite_by_itself(w)
        pending = [i for i in w.inputs if id(i) not in memo] if known is None else []
        if pending:
            stack.extend(pending)
            continue
        if known is None:
            known = all(memo[id(i)][1] for i in w.inputs)
        memo[id(w)] = (w, known)
        stack.pop()
    return memo[id(v)][1]


def _finite_by_itself(v: Value) -> bool | None:
    """True / False when known from ``v`` alone, None when it depends on the inputs."""
    if not v.dtype.is_float or v.op in ("dim", "one_hot"):
        return True
    if v.op == "const":
        return bool(np.isfinite(np.asarray(v.attrs["value"], dtype=np.float64)).all())
    if v.op == "cast":
        src = v.inputs[0].dtype
        if not src.is_float:
            return True
        return None if v.dtype.itemsize >= src.itemsize else False
    # finite inputs give a finite result (not max/min reductions: over nothing they give -inf)
    return None if registry.has(v.op, registry.PRESERVES_FINITE) else False

# ---------------------------------------------------------------------------- arithmetic


def fold_add_zero(v: Value, facts: Facts) -> Value | None:
    """x + 0 -> x and 0 + x -> x (exact but for the sign of a zero)."""
    x, y = v.inputs
    if is_value(y, 0):
        return fit(x, v.type)
    if is_value(x, 0):
        return fit(y, v.type)
    return None


def fold_add_neg(v: Value, facts: Facts) -> Value | None:
    """x + -y -> x - y and -x + y -> y - x (exact)."""
    x, y = v.inputs
    if y.op == "neg":
        return make("sub", x, y.inputs[0])
    if x.op == "neg":
        return make("sub", y, x.inputs[0])
    return None


def fold_sub_zero(v: Value, facts: Facts) -> Value | None:
    """x - 0 -> x and 0 - x -> -x (exact but for the sign of a zero)."""
    x, y = v.inputs
    if is_value(y, 0):
        return fit(x, v.type)
    if is_value(x, 0):
        return negated(y, v.type)
    return None


def fold_sub_neg(v: Value, facts: Facts) -> Value | None:
    """x - -y -> x + y (exact)."""
    x, y = v.inputs
    return make("add", x, y.inputs[0]) if y.op == "neg" else None


def fold_mul_one(v: Value, facts: Facts) -> Value | None:
    """x * 1 -> x and x * -1 -> -x, either side (exact)."""
    x, y = v.inputs
    for a, b in ((x, y), (y, x)):
        if is_value(b, 1):
            return fit(a, v.type)
        if is_value(b, -1) and v.dtype is not DType.bool:
            return negated(a, v.type)
    return None


def fold_mul_zero(v: Value, facts: Facts) -> Value | None:
    """x * 0 -> 0 only when x is provably finite (NaN * 0 and Inf * 0 are NaN)."""
    x, y = v.inputs
    for a, b in ((x, y), (y, x)):
        if is_value(b, 0) and is_finite(a, facts):
            return const(0, v.dtype, v.shape)
    return None


def fold_div_one(v: Value, facts: Facts) -> Value | None:
    """x / 1 -> x and x / -1 -> -x (exact)."""
    x, y = v.inputs
    if is_value(y, 1):
        return fit(x, v.type)
    if is_value(y, -1):
        return negated(x, v.type)
    return None


def fold_div_power_of_two(v: Value, facts: Facts) -> Value | None:
    """x / 2^k -> x * 2^-k when 2^-k is exact in the dtype (then both round the same number)."""
    x, y = v.inputs
    c = splat(y)
    if not v.dtype.is_float or c is None or c == 0 or not np.isfinite(c):
        return None
    mantissa, _ = np.frexp(abs(c))
    with np.errstate(over="ignore"):
        inv = v.dtype.np.type(1.0 / c)          # 1/c is exact in f64 for a power of two
    if mantissa != 0.5 or not np.isfinite(inv) or inv * v.dtype.np.type(c) != 1:
        return None
    return make("mul", x, const(float(inv), v.dtype, y.shape))


def fold_neg_neg(v: Value, facts: Facts) -> Value | None:
    """--x -> x (exact)."""
    x, = v.inputs
    return x.inputs[0] if x.op == "neg" else None


def fold_pow_one(v: Value, facts: Facts) -> Value | None:
    """x ** 1 -> x (exact)."""
    x, y = v.inputs
    return fit(x, v.type) if is_value(y, 1) else None


def fold_pow_two(v: Value, facts: Facts) -> Value | None:
    """x ** 2 -> x * x (the language: an integral exponent is exact, x ** 2 is x*x)."""
    x, y = v.inputs
    if is_value(y, 2) and x.type == v.type:
        return make("mul", x, x)
    return None


def fold_same_operands(v: Value, facts: Facts) -> Value | None:
    """op(x, x) -> x for idempotent ops: maximum, minimum, logical_and, logical_or."""
    x, y = v.inputs
    return x if x is y else None


def fold_idempotent_unary(v: Value, facts: Facts) -> Value | None:
    """f(f(x)) -> f(x) for abs and relu."""
    x, = v.inputs
    return x if x.op == v.op else None


def fold_abs_neg(v: Value, facts: Facts) -> Value | None:
    """abs(-x) -> abs(x) (exact)."""
    x, = v.inputs
    return make("abs", x.inputs[0]) if x.op == "neg" else None


def fold_not_not(v: Value, facts: Facts) -> Value | None:
    """not not x -> x."""
    x, = v.inputs
    return x.inputs[0] if x.op == "logical_not" else None


def fold_stop_gradient(v: Value, facts: Facts) -> Value | None:
    """stop_gradient(x) -> x: the identity once every grad op is expanded."""
    return v.inputs[0]


def fold_where_same(v: Value, facts: Facts) -> Value | None:
    """where(c, a, a) -> a."""
    _, a, b = v.inputs
    return fit(a, v.type) if a is b else None


def fold_where_const(v: Value, facts: Facts) -> Value | None:
    """where(true, a, b) -> a and where(false, a, b) -> b, for a splat condition."""
    c, a, b = v.inputs
    s = splat(c)
    return None if s is None else fit(a if s else b, v.type)


def fold_noop(v: Value, facts: Facts) -> Value | None:
    """cast, reshape or broadcast_to of x to x's own type -> x."""
    x, = v.inputs
    return x if x.type == v.type else None


_LOSSLESS = {(DType.f32, DType.f64), (DType.i32, DType.i64), (DType.i32, DType.f64)}


def fold_cast_roundtrip(v: Value, facts: Facts) -> Value | None:
    """cast(cast(x, wider), dtype of x) -> x when the wider dtype holds every value of x."""
    x, = v.inputs
    if x.op != "cast":
        return None
    y = x.inputs[0]
    lossless = y.dtype is DType.bool or (y.dtype, x.dtype) in _LOSSLESS
    return y if lossless and y.type == v.type else None

# ---------------------------------------------------------------------------- movement


def fold_transpose_identity(v: Value, facts: Facts) -> Value | None:
    """transpose(x, [0, 1, ...]) -> x."""
    return v.inputs[0] if tuple(v.attrs["perm"]) == tuple(range(v.type.rank)) else None


def fold_transpose_transpose(v: Value, facts: Facts) -> Value | None:
    """transpose(transpose(x, p), q) -> transpose(x, p∘q); the identity folds away after."""
    x, = v.inputs
    if x.op != "transpose":
        return None
    inner, outer = x.attrs["perm"], v.attrs["perm"]
    return make("transpose", x.inputs[0], perm=tuple(inner[i] for i in outer))


def fold_chain(v: Value, facts: Facts) -> Value | None:
    """reshape(reshape(x)) -> reshape(x) and broadcast_to(broadcast_to(x)) -> broadcast_to(x)."""
    x, = v.inputs
    return make(v.op, x.inputs[0], shape=v.shape) if x.op == v.op else None


def fold_broadcast_of_reshape(v: Value, facts: Facts) -> Value | None:
    """broadcast_to(reshape(x, a), s) -> broadcast_to(x, s) when the reshape only adds or drops
    leading 1s (as autodiff's reshape of a scalar cotangent to [1, 1] does)."""
    r, = v.inputs
    if r.op != "reshape":
        return None
    x = r.inputs[0]
    if _strip_ones(x.shape) != _strip_ones(r.shape) or x.type.rank > v.type.rank:
        return None
    return make("broadcast_to", x, shape=v.shape)


def _strip_ones(shape: tuple[DimLike, ...]) -> tuple[DimLike, ...]:
    lead = next((i for i, d in enumerate(shape) if d != 1), len(shape))
    return tuple(shape[lead:])


def fold_implicit_broadcast(v: Value, facts: Facts) -> Value | None:
    """op(broadcast_to(x), y) -> op(x, y), and a splat constant operand becomes a scalar, for
    elementwise ops when the op's own broadcasting gives the same result type (the same elements
    are computed); f(broadcast_to(x)) for one operand."""
    if len(v.inputs) == 1:
        return fold_unary_of_broadcast(v, facts)
    ins = tuple(_unbroadcast(i) for i in v.inputs)
    if all(a is b for a, b in zip(ins, v.inputs)):
        return None
    out = make(v.op, *ins, **v.attrs.as_dict())
    return out if out.type == v.type else None


def fold_unary_of_broadcast(v: Value, facts: Facts) -> Value | None:
    """f(broadcast_to(x, s)) -> broadcast_to(f(x), s) for one-operand elementwise ops: the same
    values, computed once per element of x."""
    b, = v.inputs
    if b.op != "broadcast_to":
        return None
    return make("broadcast_to", make(v.op, b.inputs[0], **v.attrs.as_dict()), shape=v.shape)


def fold_reshape_of_broadcast(v: Value, facts: Facts) -> Value | None:
    """reshape(broadcast_to(x, a), b) -> broadcast_to(x, b) when x holds one element."""
    b, = v.inputs
    if b.op != "broadcast_to" or any(d != 1 for d in b.inputs[0].shape):
        return None
    return make("broadcast_to", make("reshape", b.inputs[0], shape=()), shape=v.shape)


def _unbroadcast(x: Value) -> Value:
    """The value ``x`` broadcasts: the input of a broadcast_to, a scalar for a splat constant."""
    if x.op == "broadcast_to":
        return x.inputs[0]
    s = splat(x)
    return const(s, x.dtype) if s is not None and x.type.rank else x


def fold_slice_identity(v: Value, facts: Facts) -> Value | None:
    """slice(x) taking every element in order -> x."""
    x, = v.inputs
    whole = all(a == 0 for a in v.attrs["start"]) and all(s == 1 for s in v.attrs["step"])
    return x if whole and x.type == v.type else None

# ---------------------------------------------------------------------------- reductions


def _axes(v: Value) -> tuple[int, ...]:
    axis = v.attrs["axis"]
    return tuple(range(v.inputs[0].type.rank)) if axis is None else tuple(axis)


def fold_reduce_unit(v: Value, facts: Facts) -> Value | None:
    """sum/max/min over no axes or axes of size 1 -> a reshape of x (exact)."""
    x, = v.inputs
    if x.dtype is not v.dtype or any(x.shape[a] != 1 for a in _axes(v)):
        return None
    return make("reshape", x, shape=v.shape)


def fold_reduce_broadcast(v: Value, facts: Facts) -> Value | None:
    """Reducing only axes that a broadcast created: sum -> x * count, max/min -> x, then the
    reshape/broadcast that gives the result's shape. A count of 0 gives sum's 0; a symbolic
    count needs a finite x (it may be 0 at run time, and 0 * Inf is NaN); max/min need a static
    count >= 1."""
    b, = v.inputs
    if b.op != "broadcast_to" or b.dtype is not v.dtype:
        return None
    x, axes = b.inputs[0], _axes(v)
    aligned = (1,) * (b.type.rank - x.type.rank) + tuple(x.shape)
    if any(aligned[a] != 1 for a in axes):
        return None
    n: DimLike = dim_prod(tuple(b.shape[a] for a in axes))
    y = x
    if v.op == "sum" and n == 0:
        return const(0, v.dtype, v.shape)
    if v.op == "sum" and n != 1:
        if isinstance(n, int):
            y = make("mul", x, const(n, x.dtype))
        elif v.dtype is not DType.bool and is_finite(x, facts):
            y = make("mul", x, make("dim", value=n, dtype=x.dtype))
        else:
            return None
    elif v.op != "sum" and not (isinstance(n, int) and n >= 1):
        return None
    shape = reduced_shape(aligned, axes, bool(v.attrs["keepdims"]))
    return fit(make("reshape", y, shape=shape), v.type)


RULES: dict[str, tuple[RuleFn, ...]] = {
    "add": (fold_add_zero, fold_add_neg),
    "sub": (fold_sub_zero, fold_sub_neg),
    "mul": (fold_mul_one, fold_mul_zero),
    "div": (fold_div_one, fold_div_power_of_two),
    "neg": (fold_neg_neg,),
    "pow": (fold_pow_one, fold_pow_two),
    "maximum": (fold_same_operands,),
    "minimum": (fold_same_operands,),
    "logical_and": (fold_same_operands,),
    "logical_or": (fold_same_operands,),
    "abs": (fold_idempotent_unary, fold_abs_neg),
    "relu": (fold_idempotent_unary,),
    "logical_not": (fold_not_not,),
    "stop_gradient": (fold_stop_gradient,),
    "where": (fold_where_same, fold_where_const),
    "cast": (fold_noop, fold_cast_roundtrip),
    "transpose": (fold_transpose_identity, fold_transpose_transpose),
    "reshape": (fold_noop, fold_chain, fold_reshape_of_broadcast),
    "broadcast_to": (fold_noop, fold_chain, fold_broadcast_of_reshape),
    "slice": (fold_slice_identity,),
    "sum": (fold_reduce_unit, fold_reduce_broadcast),
    "max": (fold_reduce_unit, fold_reduce_broadcast),
    "min": (fold_reduce_unit, fold_reduce_broadcast),
}

# rules for every op of a kind, tried after the op's own
KIND_RULES: dict[str, tuple[RuleFn, ...]] = {
    registry.ELEMENTWISE: (fold_implicit_broadcast,),
}
