"""Elaborate a parsed .graph file into IR: each graph body's declarations (types, symbolic dims,
initializers), outputs and grad line, on the evaluator (evaluator.py), which resolves names and
consts, inlines fns, unrolls loops, types weak literals and resolves calls against the op
registry. Every error carries a Loc and, once it leaves ``elaborate_source``, the source line
with a caret."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graphc import ast as A
from graphc.calls import initializer
from graphc.errors import GraphError, GraphTypeError, Loc, attach_snippet
from graphc.evaluator import Evaluator, GraphState, Scope
from graphc.ir.core import Func, Value, make
from graphc.ir.errors import GraphArgumentTypeError
from graphc.ir.ops import registry
from graphc.ir.types import Dim, TensorType
from graphc.program import Decl, GradSpec, GraphDef, Init
from graphc.syntax import normalize_source, parse
from graphc.values import check_int, describe, static_binary, to_tensor


def elaborate_source(text: str, filename: str,
                     consts: Mapping[str, Any] | None = None) -> dict[str, GraphDef]:
    """Parse and elaborate every graph of a .graph file, by name, in source order. ``consts``
    overrides the file's ``const`` definitions by name (a number, a list, a dtype or its name)."""
    if consts is not None and not isinstance(consts, Mapping):
        raise GraphArgumentTypeError(f"consts must be a dict of const names to values, "
                                     f"got {type(consts).__name__}")
    text = normalize_source(text)
    try:
        try:
            module = parse(text, filename)
            return Elaborator(module, text, consts or {}).graphs()
        except RecursionError:           # a last resort: statements and consts say where
            raise GraphTypeError("the program nests too deeply to elaborate",
                                 Loc(filename, 1, 1)) from None
    except GraphError as e:
        raise attach_snippet(e, text)


class Elaborator(Evaluator):
    """Walks one module: the evaluator's consts, fns and expressions, plus each graph body's
    declarations, outputs and grad line."""

    def __init__(self, module: A.Module, source: str,
                 overrides: Mapping[str, Any] | None = None):
        self.source = source
        super().__init__(module, overrides)

    def graphs(self) -> dict[str, GraphDef]:
        return {d.name.id: self.graph(d) for d in self.defs.values()
                if isinstance(d, A.GraphBlock)}

    def graph(self, g: A.GraphBlock) -> GraphDef:
        gs = GraphState(g.name.id)
        scope = Scope({}, gs)
        for stmt in g.body:
            self.exec(stmt, scope)
        if not gs.outputs and gs.grad is None:
            raise GraphTypeError(f"graph '{gs.name}' has no 'output' and no 'grad' line",
                                 g.name.loc)
        forward = Func(f"{gs.name}.forward",
                       tuple(gs.args[d.name] for d in gs.inputs + gs.params),
                       tuple(v for _, v in gs.outputs), tuple(n for n, _ in gs.outputs))
        return GraphDef(gs.name, tuple(gs.inputs), tuple(gs.params), forward, gs.grad,
                        self.source, g.loc.file, tuple(self.consts.items()))

    # ---- the statements only a graph body holds ---------------------------------------------

    def exec_InputDecl(self, s: A.InputDecl, scope: Scope) -> None:
        self.declare(s.name, s.type, None, scope, is_param=False)

    def exec_ParamDecl(self, s: A.ParamDecl, scope: Scope) -> None:
        init = None if s.init is None else self.initializer(s.init, scope)
        self.declare(s.name, s.type, init, scope, is_param=True)

    def declare(self, name: A.Name, texpr: A.TypeExpr, init: Init | None, scope: Scope,
                is_param: bool) -> None:
        gs = scope.graph
        assert gs is not None
        if name.id in gs.args:
            first = next(d.loc for d in gs.inputs + gs.params if d.name == name.id)
            raise GraphTypeError(f"'{name.id}' is already declared at {first.line}:{first.col}",
                                 name.loc)
        if name.id in scope.names:
            raise GraphTypeError(f"'{name.id}' is already assigned; declare it before use",
                                 name.loc)
        ty = self.tensor_type(texpr, scope, allow_symbols=not is_param)
        self.check_free(name, scope, "declare")
        if is_param and not ty.dtype.is_float:
            raise GraphTypeError(f"param '{name.id}' must be float (f32 or f64), got {ty}",
                                 texpr.loc)
        decl = Decl(name.id, ty, name.loc, init)
        (gs.params if is_param else gs.inputs).append(decl)
        arg = make("arg", name=name.id, dtype=ty.dtype, shape=ty.shape, loc=name.loc)
        gs.args[name.id] = scope.names[name.id] = arg

    def tensor_type(self, t: A.TypeExpr, scope: Scope, allow_symbols: bool) -> TensorType:
        return TensorType(self.dtype(t.dtype),
                          tuple(self.dim(d, scope, allow_symbols) for d in t.dims))

    def dim(self, e: A.Expr, scope: Scope, allow_symbols: bool) -> Any:
        """A declared dim: an integer, a const, a symbol, or + - * of those."""
        gs = scope.graph
        assert gs is not None
        if isinstance(e, A.Name) and e.id not in self.defs and e.id not in scope.names:
            if not allow_symbols:
                raise GraphTypeError(f"a param's shape must be static; '{e.id}' is not a "
                                     f"const", e.loc)
            what = self.reserved(e.id, Scope({}))
            if what is not None:
                raise GraphTypeError(f"'{e.id}' cannot name a dim: it is {what}", e.loc)
            return gs.dims.setdefault(e.id, Dim.sym(e.id))
        if isinstance(e, A.Binary) and e.op in ("add", "sub", "mul"):
            value = static_binary(e.op, self.dim(e.left, scope, allow_symbols),
                                  self.dim(e.right, scope, allow_symbols), e.loc, "dim")
        else:
            value = check_int(self.eval(e, scope), e.loc, "dim")
        if isinstance(value, Dim) and (allow_symbols or not value.symbols):
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise GraphTypeError(f"a dim must be a non-negative integer, a const or a name; "
                                 f"got {describe(value)}", e.loc)
        return value

    def initializer(self, e: A.Expr, scope: Scope) -> Init:
        if isinstance(e, A.Name):
            return initializer(e, [], [], e.loc)
        if not isinstance(e, A.Call):
            raise GraphTypeError("an initializer is a name (glorot_uniform) or a call "
                                 "(normal(0.1))", e.loc)
        return initializer(e.func, *self.args(e, scope), e.loc)

    def exec_Output(self, s: A.Output, scope: Scope) -> None:
        gs = scope.graph
        assert gs is not None
        for name in s.names:
            if any(n == name.id for n, _ in gs.outputs):
                raise GraphTypeError(f"output '{name.id}' is named twice", name.loc)
            if s.value is not None:
                self.bind(name, self.eval(s.value, scope), scope)
            value = self.lookup(name, scope)
            gs.outputs.append((name.id, to_tensor(value, None, name.loc)))

    def exec_GradStmt(self, s: A.GradStmt, scope: Scope) -> None:
        gs = scope.graph
        assert gs is not None
        if gs.grad is not None:
            raise GraphTypeError(f"a graph has one 'grad' line; the first is at "
                                 f"{gs.grad.loc.line}:{gs.grad.loc.col}", s.loc)
        target = self.lookup(s.target, scope)
        if not isinstance(target, Value) or target.type.rank != 0 or \
                not target.dtype.is_float:
            raise GraphTypeError(f"grad needs a float scalar to differentiate; "
                                 f"'{s.target.id}' is {describe(target)}", s.target.loc)
        if s.wrt is None:
            wrt = tuple(d.name for d in gs.params)
            if not wrt:
                raise GraphTypeError(f"graph '{gs.name}' has no params; say what to "
                                     f"differentiate with: grad {s.target.id} wrt x", s.loc)
        else:
            wrt = tuple(n.id for n in s.wrt)
            for n in s.wrt:
                if n.id not in gs.args:
                    raise GraphTypeError(
                        f"'grad ... wrt' takes inputs and params; '{n.id}' is not one"
                        + registry.suggest(n.id, list(gs.args))
                        + (f" (for other values use grad({s.target.id}, {n.id}))"
                           if n.id in scope.names else ""), n.loc)
                if wrt.count(n.id) > 1:
                    raise GraphTypeError(f"'{n.id}' is listed twice", n.loc)
                if not gs.args[n.id].dtype.is_float:
                    raise GraphTypeError(f"cannot differentiate with respect to '{n.id}': "
                                         f"{gs.args[n.id].type} is not float", n.loc)
        gs.grad = GradSpec(target, wrt, s.loc)
