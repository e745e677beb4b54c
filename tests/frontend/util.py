"""Helpers for the front-end tests: elaborate a source, run its forward on the interpreter,
and render AST expressions as compact S-expressions so precedence reads at a glance."""
from __future__ import annotations

from typing import Any

import numpy as np

from graphc import ast as A
from graphc.elaborate import elaborate_source
from graphc.ir import interp
from graphc.program import GraphDef
from graphc.syntax import parse


def graph(src: str, name: str | None = None) -> GraphDef:
    graphs = elaborate_source(src, "t.graph")
    return graphs[name] if name else next(iter(graphs.values()))


def run(src: str, **arrays: Any) -> dict[str, np.ndarray]:
    g = graph(src)
    return dict(zip(g.forward.result_names, interp.run(g.forward, arrays)))


def sexpr(e: Any) -> str:
    """``a*b@c`` -> ``(matmul (mul a b) c)``."""
    if isinstance(e, (A.Int, A.Float)):
        return repr(e.value)
    if isinstance(e, A.Bool):
        return str(e.value).lower()
    if isinstance(e, A.Str):
        return f'"{e.value}"'
    if isinstance(e, A.Name):
        return e.id
    if isinstance(e, A.List):
        return "[" + " ".join(sexpr(i) for i in e.items) + "]"
    if isinstance(e, A.Unary):
        return f"({e.op} {sexpr(e.operand)})"
    if isinstance(e, A.Binary):
        return f"({e.op} {sexpr(e.left)} {sexpr(e.right)})"
    if isinstance(e, A.Attr):
        return f"(.{e.name} {sexpr(e.value)})"
    if isinstance(e, A.Call):
        parts = [sexpr(a) for a in e.args] + [f"{k.name}={sexpr(k.value)}" for k in e.kwargs]
        return f"({e.func.id}" + "".join(" " + p for p in parts) + ")"
    if isinstance(e, A.Index):
        return f"(index {sexpr(e.value)}" + "".join(" " + sexpr(i) for i in e.items) + ")"
    if isinstance(e, A.Slice):
        return ":".join("" if p is None else sexpr(p) for p in (e.start, e.stop, e.step))
    raise TypeError(e)


def expr(text: str) -> str:
    """The S-expression of one expression, parsed as the right side of an assignment."""
    (g,) = parse(f"graph g {{ y = {text} }}", "t.graph").defs
    (stmt,) = g.body
    return sexpr(stmt.value)
