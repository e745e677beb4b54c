"""Binding a call's evaluated arguments: to an op's operands and attributes (generically, from
its ``OpDef``), to a fn's parameters, or to a param initializer. Also the static name check of
fn bodies, so a typo in a fn is reported even if the fn is never called."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

from graphc import ast as A
from graphc.init import INITIALIZERS
from graphc.ir.core import Value, make
from graphc.ir.errors import GraphError, GraphTypeError, Loc
from graphc.ir.ops import registry
from graphc.program import Init
from graphc.values import (
    DTYPES,
    Weak,
    describe,
    tensors_like,
    to_attr,
    to_tensor,
    weak_apply,
    weakness,
)

Arg = tuple[Any, Loc]                    # an evaluated argument and where it was written
Kwarg = tuple[str, Any, Loc]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def bind(what: str, slots: list[str], pos: list[Arg], kws: list[Kwarg], loc: Loc
         ) -> dict[str, Arg]:
    """Positional arguments fill ``slots`` in order, then keywords by name."""
    if len(pos) > len(slots):
        raise GraphTypeError(f"{what} takes at most {_plural(len(slots), 'argument')} "
                             f"({', '.join(slots)}), got {len(pos)}", loc)
    bound = dict(zip(slots, pos))
    for name, value, kloc in kws:
        if name not in slots:
            raise GraphTypeError(f"{what} has no argument '{name}'"
                                 + registry.suggest(name, slots), kloc)
        if name in bound:
            raise GraphTypeError(f"{what} got argument '{name}' twice", kloc)
        bound[name] = (value, kloc)
    return bound


def call_op(opdef: registry.OpDef, pos: list[Arg], kws: list[Kwarg], loc: Loc) -> Value | Weak:
    """``name(a, b, k=v)``: operands are ``OpDef.inputs`` (a ``*xs`` input takes one list),
    then ``OpDef.attrs`` in order; literals among the operands are weakly typed."""
    inputs = [n.lstrip("*") for n in opdef.inputs]
    what = f"'{opdef.name}'"
    bound = bind(what, inputs + [a for a, _ in opdef.attrs], pos, kws, loc)
    missing = [n for n in inputs if n not in bound]
    if missing:
        raise GraphTypeError(f"{what} needs {_plural(len(inputs), 'tensor argument')} "
                             f"({', '.join(inputs)}); '{missing[0]}' is missing", loc)
    attrs = {k: to_attr(v, f"{what} argument '{k}'", kloc)
             for k, (v, kloc) in bound.items() if k not in inputs}
    if opdef.variadic:
        items, iloc = bound[inputs[0]]
        if not isinstance(items, tuple) or not items:
            raise GraphTypeError(f"{what} takes a non-empty list of tensors [a, b, ...], "
                                 f"got {describe(items)}", iloc)
        operands = tensors_like(list(items), iloc)
        return _guarded(what, loc, lambda: make(opdef.name, *operands, loc=loc, **attrs))
    values = [bound[n][0] for n in inputs]
    kinds = {weakness(v) for v in values}
    if _keeps_weak(opdef) and "weak" in kinds and "strong" not in kinds:
        # exp(1.0), sqrt(2), mean(where(c, 0.5, 1.0)): weakly typed, like the literals
        try:
            return weak_apply(lambda *xs: _guarded(
                what, loc, lambda: make(opdef.name, *xs, loc=loc, **attrs)), values, loc)
        except GraphTypeError:
            pass                         # e.g. integer labels as a list: typed as below
    try:
        operands = tensors_like(values, loc)
        return _guarded(what, loc, lambda: make(opdef.name, *operands, loc=loc, **attrs))
    except GraphTypeError as err:
        # operands of different dtypes (take's indices, a loss's labels): a literal or weak
        # value that could not adopt the other operand's dtype keeps its own; else the error
        if "weak" not in kinds:
            raise
        try:
            own = [to_tensor(v, None, loc) for v in values]
            return _guarded(what, loc, lambda: make(opdef.name, *own, loc=loc, **attrs))
        except GraphTypeError:
            raise err from None


def _keeps_weak(opdef: registry.OpDef) -> bool:
    """Ops whose result is as weak as their operands, as in JAX: elementwise ops (``where``
    with a bool tensor condition too), reductions, and one-operand movement (broadcast_to)."""
    return opdef.kind in (registry.ELEMENTWISE, registry.COMPOSITE, registry.REDUCE) or \
        opdef.kind == registry.MOVEMENT and len(opdef.inputs) == 1 and not opdef.variadic


def _guarded(what: str, loc: Loc, build: Callable[[], Value | Weak]) -> Value | Weak:
    try:
        return build()
    except GraphError:
        raise
    except (TypeError, ValueError, IndexError, KeyError, OverflowError,
            ZeroDivisionError) as err:   # a rule meeting an attribute of an unexpected kind
        raise GraphTypeError(f"invalid arguments to {what}: {err}", loc) from None


def bind_fn(fn: A.FnDef, pos: list[Arg], kws: list[Kwarg], loc: Loc) -> dict[str, Any]:
    params = [p.id for p in fn.params]
    bound = bind(f"fn '{fn.name.id}'", params, pos, kws, loc)
    missing = [p for p in params if p not in bound]
    if missing:
        raise GraphTypeError(f"fn '{fn.name.id}' is missing argument '{missing[0]}'", loc)
    return {k: v for k, (v, _) in bound.items()}


def initializer(name: A.Name, pos: list[Arg], kws: list[Kwarg], loc: Loc) -> Init:
    """``glorot_uniform``, ``normal(0.1)``, ``uniform(lo=-1, hi=1)``, ... as an ``Init``."""
    if name.id not in INITIALIZERS:
        raise GraphTypeError(f"unknown initializer '{name.id}'" +
                             (registry.suggest(name.id, list(INITIALIZERS))
                              or f"; use one of {', '.join(INITIALIZERS)}"), name.loc)
    want = list(INITIALIZERS[name.id].params)
    what = f"initializer '{name.id}'"
    bound = bind(what, want, pos, kws, loc)
    if len(bound) != len(want):
        raise GraphTypeError(f"{what} takes {_plural(len(want), 'argument')} "
                             f"({', '.join(want)}), got {len(bound)}", loc)
    for v, vloc in bound.values():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise GraphTypeError(f"an initializer argument must be a number, got "
                                 f"{describe(v)}", vloc)
    args = tuple(float(bound[k][0]) for k in want)
    why = INITIALIZERS[name.id].check(args)
    if why:
        raise GraphTypeError(f"{what}: {why}", loc)
    return Init(name.id, args)


def _names_in(e: Any) -> Iterator[A.Name]:
    """The Name nodes an expression reads (not the names of called fns and ops)."""
    if isinstance(e, A.Name):
        yield e
    elif isinstance(e, A.Call):
        for a in e.args + tuple(k.value for k in e.kwargs):
            yield from _names_in(a)
    elif isinstance(e, tuple):
        for i in e:
            yield from _names_in(i)
    elif dataclasses.is_dataclass(e) and not isinstance(e, Loc):
        for f in dataclasses.fields(e):
            yield from _names_in(getattr(e, f.name))


def check_fn_names(fn: A.FnDef, defs: dict[str, Any]) -> None:
    """A fn sees only its parameters, the names it assigns, consts and dtypes."""
    known: set[str] = set()
    for p in fn.params:
        if p.id in known:
            raise GraphTypeError(f"fn '{fn.name.id}' has two parameters named '{p.id}'", p.loc)
        known.add(p.id)

    def visit(body: tuple) -> None:
        for s in body:
            exprs = (s.start, s.stop) if isinstance(s, A.For) else \
                (s.value,) if isinstance(s, A.Assign) else s.values
            for name in _names_in(exprs):
                if name.id not in known and not isinstance(defs.get(name.id), A.ConstDef) \
                        and name.id not in DTYPES:
                    raise GraphTypeError(f"unknown name '{name.id}' (a fn sees only its "
                                         f"parameters, consts and other fns)"
                                         + registry.suggest(name.id, sorted(known)), name.loc)
            if isinstance(s, A.For):
                known.add(s.var.id)
                visit(s.body)
            elif isinstance(s, A.Assign):
                known.update(t.id for t in s.targets)

    visit(fn.body)
