"""Expand every ``grad`` op into ordinary IR by reverse-mode differentiation (VJP rules from the op
table). Keeps: forward values (the backward reuses them), locs (backward ops carry the loc of the
forward op they differentiate, marked ``grad_of`` it: a NaN made there names the gradient). Nested
``grad`` works because inner ones are expanded first."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from graphc.ir.core import Func, Value, at, const, make, rebuild, toposort, transform
from graphc.ir.errors import GraphWarning, Loc, warn
from graphc.ir.ops import registry
from graphc.ir.types import TensorType
from graphc.passes.rewrite import NoOptions, PassContext


def sum_to(g: Value, ty: TensorType) -> Value:
    """Sum a broadcast gradient back to ``ty``'s shape: the one place that un-broadcasts."""
    if g.shape == ty.shape:
        return g
    lead = g.type.rank - ty.rank
    axes = list(range(lead))
    for i, d in enumerate(ty.shape):
        if d == 1 and g.shape[lead + i] != 1:
            axes.append(lead + i)
    if axes:
        g = make("sum", g, axis=tuple(axes), keepdims=False)
    if g.shape != ty.shape and g.type.rank != ty.rank:      # the summed unit axes come back
        kept = iter(g.shape)
        g = make("reshape", g, shape=tuple(1 if lead + i in axes else next(kept)
                                           for i in range(ty.rank)))
    if g.shape != ty.shape:
        # what is left are dims the forward assumed equal (N against 3*N: a symbolic dim meets
        # another only when equal, checked at call time), so the values already line up
        g = make("broadcast_to", g, shape=ty.shape)
    return g


def _depends_on(order: list[Value], xs: Sequence[Value]) -> set[int]:
    """Ids of float values whose value changes with some x: only they carry cotangents."""
    live = {id(x) for x in xs}
    for v in order:
        if v.dtype.is_float and any(id(i) in live for i in v.inputs) and \
                registry.get(v.op).differentiable:
            live.add(id(v))
    return live


def backward_loc(v: Value) -> Loc | None:
    """The loc of the ops that differentiate ``v``: ``v``'s own, marked as its gradient."""
    if v.loc is None:
        return None
    what = v.op if v.loc.grad_of is None else f"the gradient of {v.loc.grad_of}"
    return dataclasses.replace(v.loc, grad_of=what)


def grad_of(y: Value, xs: Sequence[Value]) -> list[Value | None]:
    """d y / d x for each x (None where y does not depend on x). ``y`` is a float scalar and its
    cone holds no ``grad`` ops (``run`` expands inner ones first)."""
    order = toposort([y])
    live = _depends_on(order, xs)
    cts: dict[int, Value] = {id(y): const(1.0, y.dtype, (), loc=y.loc)}
    for v in reversed(order):
        g = cts.get(id(v))
        if g is None or not v.inputs or id(v) not in live:
            continue
        opdef = registry.get(v.op)
        if opdef.vjp is None and opdef.expand is None:
            continue
        with at(backward_loc(v)):
            if opdef.expand is not None:     # a kernel: differentiate the ops it stands for
                gs = grad_of(make("sum", opdef.expand(v) * g), list(v.inputs))
            else:
                gs = opdef.vjp(g, v, *v.inputs, **v.attrs.as_dict())
            for x, gx in zip(v.inputs, gs):
                if gx is None or id(x) not in live:
                    continue
                gx = sum_to(gx, x.type)
                prev = cts.get(id(x))
                cts[id(x)] = gx if prev is None else make("add", prev, gx)
    return [cts.get(id(x)) for x in xs]


def _zero_grad(x: Value, where: Value) -> Value:
    """An exact zero for a gradient that does not depend on its target, with a warning that
    points at the ``grad`` that asked for it."""
    name = x.attrs["name"] if x.op == "arg" else f"the {x.op} value at {x.loc}"
    warn(GraphWarning(f"{where.loc or x.loc}: the gradient w.r.t. {name} is identically zero: "
                      f"{name} does not reach the differentiated value, or reaches it only "
                      f"through stop_gradient"))
    return const(0.0, x.dtype, x.shape, loc=x.loc)


def run(func: Func, ctx: PassContext | None = None, options: NoOptions | None = None) -> Func:
    """Replace each ``grad(y, x)`` op by the gradient it stands for; one sweep per distinct y."""
    order = func.values()
    if not any(v.op == "grad" for v in order):
        return func
    wanted: dict[int, list[Value]] = {}          # original y -> original xs asked for
    for v in order:
        if v.op == "grad":
            wanted.setdefault(id(v.inputs[0]), []).append(v.inputs[1])
    sweeps: dict[int, dict[int, Value | None]] = {}
    built: dict[int, Value] = {}                 # original value -> its replacement so far

    def expand(v: Value, ins: tuple[Value, ...]) -> Value:
        if v.op != "grad":
            built[id(v)] = rebuild(v, ins)
            return built[id(v)]
        y = v.inputs[0]
        if id(y) not in sweeps:
            # every x of this y that is already rebuilt; later ones cannot be in y's cone
            xs = [built[id(w)] for w in wanted[id(y)] if id(w) in built]
            sweeps[id(y)] = dict(zip(map(id, xs), grad_of(built[id(y)], xs)))
        gx = sweeps[id(y)].get(id(ins[1]))
        built[id(v)] = gx if gx is not None else _zero_grad(ins[1], v)
        return built[id(v)]

    return transform(func, expand)
