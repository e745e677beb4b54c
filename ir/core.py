"""The one IR node type (``Value``), functions (``Func``), and ``make``, the only way to build a
typed node: it runs the op's shape rule, so no ill-typed value can exist."""
from __future__ import annotations

import contextlib
import contextvars
import gc
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphc.ir.errors import GraphError, GraphTypeError, Loc
from graphc.ir.types import DType, TensorType


@dataclass(frozen=True, slots=True)
class Attrs:
    """Frozen, key-sorted attributes, hashable so CSE can compare them."""
    items: tuple[tuple[str, Any], ...] = ()

    @staticmethod
    def of(d: Mapping[str, Any]) -> Attrs:
        return Attrs(tuple(sorted(d.items())))

    def __getitem__(self, key: str) -> Any:
        for k, v in self.items:
            if k == key:
                return v
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        for k, v in self.items:
            if k == key:
                return v
        return default

    def __contains__(self, key: str) -> bool:
        return any(k == key for k, _ in self.items)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.items)


@dataclass(frozen=True, eq=False, slots=True)
class Value:
    """An SSA value: the result of one op. Compared by identity; CSE is an explicit pass."""
    op: str
    inputs: tuple[Value, ...]
    type: TensorType
    attrs: Attrs = Attrs()
    loc: Loc | None = None

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def shape(self) -> tuple:
        return self.type.shape

    # Arithmetic reads like math in VJP rules and decompositions; each call goes through make().
    def __add__(self, o: Any) -> Value: return make("add", self, lift(o, self))
    def __radd__(self, o: Any) -> Value: return make("add", lift(o, self), self)
    def __sub__(self, o: Any) -> Value: return make("sub", self, lift(o, self))
    def __rsub__(self, o: Any) -> Value: return make("sub", lift(o, self), self)
    def __mul__(self, o: Any) -> Value: return make("mul", self, lift(o, self))
    def __rmul__(self, o: Any) -> Value: return make("mul", lift(o, self), self)
    def __truediv__(self, o: Any) -> Value: return make("div", self, lift(o, self))
    def __rtruediv__(self, o: Any) -> Value: return make("div", lift(o, self), self)
    def __pow__(self, o: Any) -> Value: return make("pow", self, lift(o, self))
    def __matmul__(self, o: Value) -> Value: return make("matmul", self, o)
    def __neg__(self) -> Value: return make("neg", self)

    def __repr__(self) -> str:
        return f"<{self.op} : {self.type}>"


@dataclass(frozen=True, slots=True)
class Func:
    """A function: argument values, result values (with optional names), in order."""
    name: str
    params: tuple[Value, ...]
    results: tuple[Value, ...]
    result_names: tuple[str, ...] = field(default=())
    # ``values()``'s order, made once: a Func and its values never change, and a pipeline asks
    # for it many times (every pass, its statistics, the plan, the cache key)
    _order: tuple[Value, ...] | None = field(default=None, init=False, repr=False,
                                             compare=False)

    def values(self) -> list[Value]:
        """Every value reachable from the results (and every param), topologically ordered."""
        if self._order is None:
            object.__setattr__(self, "_order", tuple(toposort(self.results, self.params)))
        return list(self._order)

    def __str__(self) -> str:
        from graphc.ir.text import print_func
        return print_func(self)


def toposort(roots: tuple[Value, ...] | list[Value], first: tuple[Value, ...] = ()) -> list[Value]:
    """Deterministic post-order: inputs before users, in input order; ``first`` leads."""
    order: list[Value] = list(first)
    seen = {id(v) for v in order}
    add, append = seen.add, order.append
    for root in roots:
        if id(root) in seen:
            continue
        stack = [(root, iter(root.inputs))]
        push, pop = stack.append, stack.pop
        while stack:
            v, it = stack[-1]
            for w in it:
                if id(w) not in seen:
                    push((w, iter(w.inputs)))
                    break
            else:
                pop()
                if id(v) not in seen:
                    add(id(v))
                    append(v)
    return order


_LOC: contextvars.ContextVar[Loc | None] = contextvars.ContextVar("graphc_loc", default=None)


class at:
    """``with at(loc):`` values made inside the block without an explicit loc get ``loc`` (used
    by autodiff and decompositions so that every derived op points at the source line it came
    from). A class, not a generator: a pass enters it once per value it rewrites."""
    __slots__ = ("loc", "token")

    def __init__(self, loc: Loc | None):
        self.loc = loc

    def __enter__(self) -> None:
        self.token = _LOC.set(self.loc)

    def __exit__(self, *exc: object) -> None:
        _LOC.reset(self.token)


_GC_LOCK = threading.Lock()
_GC_PAUSES = [0, False]         # nested pauses; whether the first one found the collector on


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block. Compiling allocates millions of small
    objects that live until the phase ends (IR values, LLVM IR builder objects); the collector's
    full sweeps over them cost ~10% of an unrolled loop's compile and free nothing. Collection
    resumes (if it was on) when the last of nested or concurrent pauses ends."""
    with _GC_LOCK:
        if _GC_PAUSES[0] == 0:
            _GC_PAUSES[1] = gc.isenabled()
            gc.disable()
        _GC_PAUSES[0] += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _GC_PAUSES[0] -= 1
            if _GC_PAUSES[0] == 0 and _GC_PAUSES[1]:
                gc.enable()


def current_loc() -> Loc | None:
    return _LOC.get()


def enter_loc(loc: Loc | None) -> contextvars.Token[Loc | None]:
    """``at(loc)``'s entry without the ``with`` (a pass's inner loop enters one per value):
    pass the token to ``exit_loc``."""
    return _LOC.set(loc)


def exit_loc(token: contextvars.Token[Loc | None]) -> None:
    _LOC.reset(token)


def make(op: str, *inputs: Value, loc: Loc | None = None, **attrs: Any) -> Value:
    """Build a value of registry op ``op``: checks arity and keywords, normalises attrs (``canon``),
    runs its shape rule. A COMPOSITE op returns what its ``decompose`` builds from primitives."""
    from graphc.ir.ops import registry
    loc = loc if loc is not None else _LOC.get()
    opdef = registry.get(op)
    try:
        full = opdef.check_attrs(len(inputs), attrs)
        if opdef.canon is not None:
            full = opdef.canon(tuple(v.type for v in inputs), full)
        if opdef.kind == registry.COMPOSITE:      # elaborates to primitives, never in the IR
            with at(loc):
                return opdef.decompose(*inputs, **full)
        ty = opdef.infer(*(v.type for v in inputs), **full)
    except GraphError as e:
        raise e.with_loc(loc)
    return Value(op, tuple(inputs), ty, Attrs.of(full), loc)


def const(value: Any, dtype: DType, shape: tuple = (), loc: Loc | None = None) -> Value:
    """A constant: a scalar (splat over ``shape``, which may be symbolic) or a flat tuple."""
    return make("const", loc=loc, value=normalize_scalar(value, dtype), dtype=dtype,
                shape=tuple(shape))


def normalize_scalar(value: Any, dtype: DType) -> Any:
    """Round a Python scalar (or flat tuple) to ``dtype`` so that printing reads back exactly."""
    if isinstance(value, tuple):
        return tuple(normalize_scalar(v, dtype) for v in value)
    arr = dtype.np.type(value)
    if dtype is DType.bool:
        return bool(arr)
    if dtype.is_int:
        return int(arr)
    return float(arr)


def lift(x: Any, like: Value) -> Value:
    """Turn a Python number into a scalar constant of ``like``'s dtype (weak typing)."""
    if isinstance(x, Value):
        return x
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise GraphTypeError(f"cannot use {x!r} as a {like.dtype} value")
    if isinstance(x, float) and not like.dtype.is_float and float(x) != int(x):
        raise GraphTypeError(f"float literal {x} used with {like.type}")
    return const(x, like.dtype)


def rebuild(v: Value, inputs: tuple[Value, ...]) -> Value:
    """``v`` over new inputs of the same types (``v`` itself when nothing changed)."""
    if all(a is b for a, b in zip(inputs, v.inputs)):
        return v
    return Value(v.op, inputs, v.type, v.attrs, v.loc)


def transform(func: Func, fn: Callable[[Value, tuple[Value, ...]], Value]) -> Func:
    """Map every value (params included) through ``fn(original, new_inputs)`` in topological
    order; the building block for whole-function changes that passes' ``rewrite`` does not
    cover (new param types, substitution keyed by the original value)."""
    new: dict[int, Value] = {}
    for v in func.values():
        new[id(v)] = fn(v, tuple(new[id(i)] for i in v.inputs))
    return Func(func.name, tuple(new[id(p)] for p in func.params),
                tuple(new[id(r)] for r in func.results), func.result_names)
