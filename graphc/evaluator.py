"""The .graph language's evaluator: names, consts, expressions, op calls, fn inlining and loop
unrolling -- everything a const definition, a fn body or a loop body can hold. Apart from
elaborate.py, which adds what only a graph body holds (input and param declarations, symbolic
dims, outputs, the grad line) and builds each graph's forward Func."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphc import ast as A
from graphc.calls import Arg, Kwarg, bind_fn, call_op, check_fn_names
from graphc.errors import GraphError, GraphTypeError, Loc
from graphc.indexing import index
from graphc.ir.core import Value, make
from graphc.ir.ops import registry
from graphc.ir.types import Dim, DType
from graphc.program import Decl, GradSpec
from graphc.values import (
    DTYPES,
    Multi,
    Weak,
    check_int,
    describe,
    static_binary,
    static_neg,
    tensors_like,
    weak_apply,
)

MAX_UNROLL = 100_000
_UNSET = object()


def _too_deep(loc: Loc) -> GraphTypeError:
    """Python's recursion limit met while elaborating: a located error, not a RecursionError."""
    return GraphTypeError("this nests too deeply to elaborate (expressions, fn calls, loops "
                          "or consts nested about a thousand deep); split it with names", loc)


@dataclass
class GraphState:
    """What a graph body accumulates: declarations, symbolic dims, outputs, its grad line."""
    name: str
    inputs: list[Decl] = field(default_factory=list)
    params: list[Decl] = field(default_factory=list)
    args: dict[str, Value] = field(default_factory=dict)
    dims: dict[str, Dim] = field(default_factory=dict)
    outputs: list[tuple[str, Value]] = field(default_factory=list)
    grad: GradSpec | None = None


@dataclass
class Scope:
    """Local names of a graph body or of one inlined fn call (``via`` is its call site)."""
    names: dict[str, Any]
    graph: GraphState | None = None
    via: Loc | None = None
    stack: tuple[str, ...] = ()       # the fns being inlined, outermost first


class Evaluator:
    """Walks one module's consts, fns and expressions: consts are evaluated once, fns are inlined
    at each call. Statements dispatch on their class (``exec_Assign``), so a subclass adds the
    statements of the bodies it walks."""

    def __init__(self, module: A.Module, overrides: Mapping[str, Any] | None = None):
        self.streams = 0                 # the last random stream handed out (``eval_Call``)
        self.defs: dict[str, A.Definition] = {}
        for d in module.defs:
            self.define(d.name, d)
        self.consts: dict[str, Any] = {}
        self.evaluating: list[str] = []
        names = [n for n, d in self.defs.items() if isinstance(d, A.ConstDef)]
        for n in overrides or {}:
            if n not in names:
                raise GraphTypeError(f"consts: the file defines no const {n!r}"
                                     + registry.suggest(str(n), names))
        self.overrides = dict(overrides or {})
        for d in module.defs:
            if isinstance(d, A.FnDef):
                try:
                    check_fn_names(d, self.defs)
                except RecursionError:
                    raise _too_deep(d.name.loc) from None
                for p in d.params:
                    self.check_free(p, Scope({}))
        for d in module.defs:
            if isinstance(d, A.ConstDef):
                self.const(d.name.id, d.name.loc)

    def define(self, name: A.Name, d: A.Definition) -> None:
        if name.id in self.defs:
            first = self.defs[name.id].name.loc
            raise GraphTypeError(f"'{name.id}' is already defined at {first.line}:{first.col}",
                                 name.loc)
        if registry.lookup(name.id) is not None or name.id in DTYPES:
            what = "an op" if name.id not in DTYPES else "a dtype"
            raise GraphTypeError(f"'{name.id}' is {what} and cannot be redefined", name.loc)
        self.defs[name.id] = d

    # ---- consts ---------------------------------------------------------------------------

    def const(self, name: str, loc: Loc) -> Any:
        if name in self.consts:
            return self.consts[name]
        d = self.defs[name]
        assert isinstance(d, A.ConstDef)
        if name in self.evaluating:
            chain = " -> ".join(self.evaluating[self.evaluating.index(name):] + [name])
            raise GraphTypeError(f"const '{name}' depends on itself ({chain})", loc)
        self.evaluating.append(name)
        try:
            value = self.eval(d.value, Scope({}))
        except RecursionError:
            raise _too_deep(loc) from None
        self.evaluating.pop()
        if isinstance(value, (Value, Multi)) or isinstance(value, tuple) and any(
                isinstance(v, (Value, tuple)) for v in value):
            raise GraphTypeError(f"const '{name}' must be a compile-time number (or a list "
                                 f"of them), got {describe(value)}", d.value.loc)
        if name in self.overrides:
            value = override(name, self.overrides[name], value, d.name.loc)
        self.consts[name] = value
        return value

    def dtype(self, name: A.Name) -> DType:
        """A type's dtype: its name (``f32``) or a const that holds one (``const DT = f64``)."""
        if name.id in DTYPES:
            return DTYPES[name.id]
        d = self.defs.get(name.id)
        if isinstance(d, A.ConstDef):
            value = self.const(name.id, name.loc)
            if isinstance(value, DType):
                return value
            raise GraphTypeError(f"const '{name.id}' is {describe(value)}, not a dtype",
                                 name.loc)
        known = list(DTYPES) + [n for n, d in self.defs.items() if isinstance(d, A.ConstDef)
                                and isinstance(self.consts.get(n), DType)]
        raise GraphTypeError(f"unknown dtype '{name.id}'" + registry.suggest(name.id, known),
                             name.loc)
    def here(self, loc: Loc, scope: Scope) -> Loc:
        """A node's location; inside an inlined fn it also records the call site."""
        return loc if scope.via is None else dataclasses.replace(loc, via=scope.via)
    # ---- statements -----------------------------------------------------------------------

    def exec(self, stmt: A.Stmt, scope: Scope) -> None:
        try:
            getattr(self, "exec_" + type(stmt).__name__)(stmt, scope)
        except GraphError as e:
            raise e.with_loc(self.here(stmt.loc, scope))
        except RecursionError:
            raise _too_deep(self.here(stmt.loc, scope)) from None

    def bind(self, name: A.Name, value: Any, scope: Scope) -> None:
        self.check_free(name, scope)
        scope.names[name.id] = value

    def check_free(self, name: A.Name, scope: Scope, verb: str = "assign to") -> None:
        """Inputs, params, consts, fns, op names, dtypes and dims cannot be (re)bound."""
        what = self.reserved(name.id, scope)
        if what is not None:
            raise GraphTypeError(f"cannot {verb} '{name.id}': it is {what}", name.loc)

    def reserved(self, n: str, scope: Scope) -> str | None:
        gs = scope.graph
        d = self.defs.get(n)
        return ("an input" if gs and any(i.name == n for i in gs.inputs) else
                "a param" if gs and n in gs.args else
                "a symbolic dim" if gs and n in gs.dims else
                "a const" if isinstance(d, A.ConstDef) else
                "a fn" if isinstance(d, A.FnDef) else
                "an op" if registry.lookup(n) is not None else
                "a dtype" if n in DTYPES else None)

    def exec_Assign(self, s: A.Assign, scope: Scope) -> None:
        value = self.eval(s.value, scope)
        if len(s.targets) == 1:
            if isinstance(value, Multi):
                raise GraphTypeError(f"the right side gives {len(value.values)} values; "
                                     f"unpack them: a, b = ...", s.targets[0].loc)
            self.bind(s.targets[0], value, scope)
            return
        got = len(value.values) if isinstance(value, Multi) else 1
        if got != len(s.targets):
            raise GraphTypeError(f"cannot unpack {got} value{'s' * (got != 1)} into "
                                 f"{len(s.targets)} names", s.targets[0].loc)
        for name, v in zip(s.targets, value.values):
            self.bind(name, v, scope)

    def exec_For(self, s: A.For, scope: Scope) -> None:
        lo, hi = (self.static_int(e, scope, "a loop bound") for e in (s.start, s.stop))
        if hi - lo > MAX_UNROLL:
            raise GraphTypeError(f"a loop of {hi - lo} iterations is too long to unroll "
                                 f"(at most {MAX_UNROLL})", s.loc)
        self.check_free(s.var, scope)
        saved = scope.names.get(s.var.id, _UNSET)
        for t in range(lo, hi):
            scope.names[s.var.id] = t
            for stmt in s.body:
                self.exec(stmt, scope)
        if saved is _UNSET:
            scope.names.pop(s.var.id, None)
        else:
            scope.names[s.var.id] = saved
    # ---- expressions ----------------------------------------------------------------------

    def eval(self, e: A.Expr, scope: Scope) -> Any:
        return getattr(self, "eval_" + type(e).__name__)(e, scope)

    def eval_literal(self, e: A.Int | A.Float | A.Bool | A.Str, scope: Scope) -> Any:
        return e.value

    eval_Int = eval_Float = eval_Bool = eval_Str = eval_literal

    def eval_List(self, e: A.List, scope: Scope) -> tuple:
        return tuple(self.eval(i, scope) for i in e.items)

    def eval_Name(self, e: A.Name, scope: Scope) -> Any:
        return self.lookup(e, scope)

    def lookup(self, name: A.Name, scope: Scope) -> Any:
        n = name.id
        if n in scope.names:
            return scope.names[n]
        d = self.defs.get(n)
        if isinstance(d, A.ConstDef):
            return self.const(n, name.loc)
        if scope.graph is not None and n in scope.graph.dims:
            return scope.graph.dims[n]
        if n in DTYPES:
            return DTYPES[n]
        if isinstance(d, A.FnDef) or registry.lookup(n) is not None:
            kind = "a fn" if isinstance(d, A.FnDef) else "an op"
            raise GraphTypeError(f"'{n}' is {kind}; call it: {n}(...)",
                                 self.here(name.loc, scope))
        known = list(scope.names) + [k for k, v in self.defs.items()
                                     if isinstance(v, A.ConstDef)]
        if scope.graph is not None:
            known += list(scope.graph.dims)
        known += list(DTYPES)
        note = " (a fn sees only its parameters, consts and other fns)" if scope.via else ""
        raise GraphTypeError(f"unknown name '{n}'{note}" + registry.suggest(n, known),
                             self.here(name.loc, scope))

    def eval_Unary(self, e: A.Unary, scope: Scope) -> Any:
        x = self.eval(e.operand, scope)
        loc = self.here(e.loc, scope)
        if isinstance(x, Value):
            return make("neg", x, loc=loc)
        return static_neg(x, loc)

    def eval_Binary(self, e: A.Binary, scope: Scope) -> Any:
        # walk the left spine without recursion, so a sum of a thousand terms elaborates
        spine: list[A.Binary] = []
        left: A.Expr = e
        while isinstance(left, A.Binary):
            spine.append(left)
            left = left.left
        x = self.eval(left, scope)
        for node in reversed(spine):
            y = self.eval(node.right, scope)
            loc = self.here(node.loc, scope)
            if not isinstance(x, Value) and not isinstance(y, Value):
                x = static_binary(node.op, x, y, loc)
            else:
                x = make(node.op, *tensors_like([x, y], loc), loc=loc)
        return x

    def eval_Attr(self, e: A.Attr, scope: Scope) -> Value | Weak:
        x = self.tensor(e.value, scope, f"'.{e.name}'")
        loc = self.here(e.loc, scope)
        if isinstance(x, Weak):
            return weak_apply(lambda t: self.transpose(t, e.name, loc), [x], loc)
        return self.transpose(x, e.name, loc)

    def transpose(self, x: Value, name: str, loc: Loc) -> Value:
        perm = list(reversed(range(x.type.rank)))
        if name == "T" and x.type.rank < 2:
            return x                                  # as NumPy: .T of a vector is itself
        if name == "mT":
            if x.type.rank < 2:
                raise GraphTypeError(f"'.mT' needs at least 2 axes, got {x.type}", loc)
            perm = list(range(x.type.rank))
            perm[-2:] = perm[:-3:-1]
        return make("transpose", x, perm=tuple(perm), loc=loc)

    def tensor(self, e: A.Expr, scope: Scope, what: str) -> Value | Weak:
        """A tensor, or a weak value (which transposes and indexes as one, staying weak)."""
        x = self.eval(e, scope)
        if isinstance(x, Weak) and x.default.type.rank > 0:
            return x
        if not isinstance(x, Value):
            raise GraphTypeError(f"{what} needs a tensor, got {describe(x)}",
                                 self.here(e.loc, scope))
        return x

    def static_int(self, e: A.Expr, scope: Scope, what: str) -> int:
        v = self.eval(e, scope)
        if isinstance(v, bool) or not isinstance(v, int):
            raise GraphTypeError(f"{what} must be a compile-time integer, got {describe(v)}",
                                 self.here(e.loc, scope))
        return v

    def eval_Index(self, e: A.Index, scope: Scope) -> Value | Weak:
        x = self.tensor(e.value, scope, "indexing")
        items = []
        for item in e.items:
            if isinstance(item, A.Slice):
                parts = tuple(None if p is None else (self.eval(p, scope),
                                                      self.here(p.loc, scope))
                              for p in (item.start, item.stop, item.step))
                items.append(("slice", parts, self.here(item.loc, scope)))
            else:
                items.append(("index", self.eval(item, scope), self.here(item.loc, scope)))
        loc = self.here(e.loc, scope)
        if isinstance(x, Weak):
            return weak_apply(lambda t: index(t, items, loc), [x], loc)
        return index(x, items, loc)

    def eval_Call(self, e: A.Call, scope: Scope) -> Any:
        name = e.func.id
        d = self.defs.get(name)
        if isinstance(d, A.FnDef):
            return self.inline(d, e, scope)
        if name == "grad":
            self.check_grad_call(e, scope)
        opdef = registry.dsl_lookup(name, len(e.args))
        if opdef is None:
            what = f"'{name}' is not a fn" if name in scope.names or d is not None \
                else f"unknown fn or op '{name}'"
            fns = [k for k, v in self.defs.items() if isinstance(v, A.FnDef)]
            ops = [o.dsl_name for o in registry.all() if o.callable_from_dsl]
            raise GraphTypeError(what + registry.suggest(name, fns + ops),
                                 self.here(e.func.loc, scope))
        pos, kws = self.args(e, scope)
        loc = self.here(e.loc, scope)
        if any(a == "stream" for a, _ in opdef.attrs) and all(k != "stream" for k, _, _ in kws):
            # a random op: each call elaborated draws its own numbers (CSE never merges them)
            self.streams += 1
            kws.append(("stream", self.streams, loc))
        return call_op(opdef, pos, kws, loc)

    def check_grad_call(self, e: A.Call, scope: Scope) -> None:
        if len(e.args) == 2 and not e.kwargs and not isinstance(e.args[1], A.Name):
            raise GraphTypeError("grad(y, x) differentiates with respect to a named value; "
                                 "give the value a name first", self.here(e.args[1].loc, scope))

    def args(self, e: A.Call, scope: Scope) -> tuple[list[Arg], list[Kwarg]]:
        pos = [(self.eval(a, scope), self.here(a.loc, scope)) for a in e.args]
        kws = [(k.name, self.eval(k.value, scope), self.here(k.loc, scope)) for k in e.kwargs]
        return pos, kws

    def inline(self, fn: A.FnDef, e: A.Call, scope: Scope) -> Any:
        loc = self.here(e.loc, scope)
        if fn.name.id in scope.stack:
            chain = " -> ".join(scope.stack[scope.stack.index(fn.name.id):] + (fn.name.id,))
            raise GraphTypeError(f"fn '{fn.name.id}' calls itself ({chain}); fns are inlined, "
                                 f"so they cannot recurse", loc)
        inner = Scope(bind_fn(fn, *self.args(e, scope), loc), None, loc,
                      scope.stack + (fn.name.id,))
        *body, ret = fn.body
        for stmt in body:
            self.exec(stmt, inner)
        assert isinstance(ret, A.Return)
        values = tuple(self.eval(v, inner) for v in ret.values)
        return values[0] if len(values) == 1 else Multi(values)

def override(name: str, given: Any, declared: Any, loc: Loc) -> Any:
    """``compile(consts={name: given})``'s value for ``const name``, of the kind the file's
    ``declared`` value has (a dtype may be given by name: "f64"); ``loc``: the const's."""
    def fail(kind: str) -> GraphTypeError:
        return GraphTypeError(f"consts={{{name!r}: {given!r}}} does not fit: const '{name}' is "
                              f"{describe(declared)} in the file, so its value must be {kind}",
                              loc)

    def scalar(g: Any, like: Any) -> Any:
        g = g.item() if isinstance(g, np.generic) else g
        if isinstance(like, DType):
            if isinstance(g, DType):
                return g
            if isinstance(g, str) and g in DTYPES:
                return DTYPES[g]
            if isinstance(g, (type, np.dtype)):         # np.float64, np.dtype("f8")
                match = [d for d in DType if d.np == np.dtype(g)]
                if match:
                    return match[0]
            if isinstance(g, str):
                raise GraphTypeError(f"consts: unknown dtype {g!r} for const '{name}'"
                                     + registry.suggest(g, list(DTYPES)), loc)
            raise fail("a dtype (a name such as \"f64\")")
        if isinstance(like, (bool, str)):
            if type(g) is not type(like):
                raise fail("a bool" if isinstance(like, bool) else "a str")
            return g
        if isinstance(g, bool) or not isinstance(g, int if isinstance(like, int) else (int, float)):
            raise fail("an integer" if isinstance(like, int) else "a number")
        return check_int(g, loc, f"consts['{name}']") if isinstance(like, int) else float(g)

    if isinstance(declared, tuple):
        given = given.tolist() if isinstance(given, np.ndarray) and given.ndim == 1 else given
        if not isinstance(given, (list, tuple)):
            raise fail("a list")
        # each item of the kind of the file's item in its place (the last one's past the end)
        return tuple(scalar(g, declared[min(i, len(declared) - 1)] if declared else 0.0)
                     for i, g in enumerate(given))
    return scalar(given, declared)
