"""The op reference (docs/ops.md, ``graphc ops [NAME]``) generated from the op registry: the
signature, dtypes, shape rule and typed examples come from each declaration; the prose that
OpDef's ``doc`` does not yet carry comes from opprose.py (tests/docs keeps both complete)."""
from __future__ import annotations

import re
from typing import Any

from graphc.ir.core import make
from graphc.ir.errors import GraphError
from graphc.ir.ops import registry
from graphc.ir.ops.registry import (
    COMPOSITE,
    CREATE,
    ELEMENTWISE,
    MATMUL,
    MOVEMENT,
    REDUCE,
    REQUIRED,
    SPECIAL,
    OpDef,
)
from graphc.ir.ops.rules import OPERATOR
from graphc.ir.text import parse_type
from graphc.ir.types import DType
from graphc.opprose import REDUCED, prose

_NO_GRAD = "none: not differentiable (the gradient is an exact zero)"

GROUPS = (("Elementwise", ELEMENTWISE), ("Reductions", REDUCE), ("Linear algebra", MATMUL),
          ("Layout and indexing", MOVEMENT), ("Creation and random", CREATE),
          ("Composite (built from primitives)", COMPOSITE), ("Autodiff and IR-internal", SPECIAL))


def render(name: str | None = None) -> str:
    """The op reference as markdown (also fine as plain text in a terminal): a table of every op
    and one entry per op, or only the entry of op ``name`` (its .graph or IR name)."""
    if name is not None:
        return _entry(find(name))
    lines = ["# Operations", "",
             "Generated from the op registry by `graphc.opdoc` (`graphc ops`, `graphc ops NAME`);",
             "tests/docs checks that this file is its output. Types below are each op's",
             "declared test samples run through its shape rule. The language itself is",
             "described in [language.md](language.md).", "",
             "| op | signature | dtypes | gradient |", "| --- | --- | --- | --- |"]
    for _, kind in GROUPS:
        for op in _ops(kind):
            lines.append(f"| [`{op.dsl_name}`](#{_anchor(op)}) | `{_signature(op)}` | "
                         f"{_dtypes(op)} | {_grad(op) if op.differentiable else 'none'} |")
    for title, kind in GROUPS:
        lines += ["", f"## {title}"]
        for op in _ops(kind):
            lines += ["", _entry(op)]
    return "\n".join(lines) + "\n"


def find(name: str) -> OpDef:
    """The op ``.graph`` calls ``name`` (or whose IR name it is); else a GraphError with a
    suggestion."""
    for op in sorted(registry.all(), key=lambda o: not dsl_visible(o)):   # .graph names first
        if name in (op.dsl_name, op.name):
            return op
    names = sorted({op.dsl_name for op in registry.all()} | {op.name for op in registry.all()})
    raise GraphError(f"unknown op '{name}'" + registry.suggest(name, names))


def _ops(kind: str) -> list[OpDef]:
    return [op for op in registry.all() if op.kind == kind
            or (kind == SPECIAL and op.kind not in {k for _, k in GROUPS})]


# words the grammar reserves: an op by such a name cannot be called from .graph (``const``)
KEYWORDS = ("const", "input", "param", "output", "grad", "wrt", "fn", "graph", "for", "in",
            "return", "true", "false")


def dsl_visible(op: OpDef) -> bool:
    """Whether ``.graph`` code can call the op by name (``grad`` is a keyword that is a call)."""
    return op.callable_from_dsl and op.kind != "fused" and (
        op.name == "grad" or op.dsl_name not in KEYWORDS)


def _heading(op: OpDef) -> str:
    if not dsl_visible(op):
        return f"{op.name} (IR only)"
    return op.dsl_name + (f" (IR: {op.name})" if op.dsl_name != op.name else "")


def _anchor(op: OpDef) -> str:
    """GitHub's anchor of the op's heading."""
    return re.sub(r"[^\w\- ]", "", _heading(op).lower()).replace(" ", "-")


def _entry(op: OpDef) -> str:
    p = prose(op)
    where = "`.graph` and IR" if dsl_visible(op) else "IR only"
    lines = [f"### {_heading(op)}", "", f"`{_signature(op)}` — {p.line or '(undocumented)'}", "",
             f"- kind: {op.kind} ({where})" + (f"; written `x{OPERATOR[op.name]}y`"
                                               if op.name in OPERATOR else ""),
             f"- dtypes: {_dtypes(op)}",
             f"- shape: {_shape(op)}",
             f"- gradient: {_grad(op)}"]
    typed = _typed(op)
    if typed:
        lines.append("- types: " + "; ".join(f"`{t}`" for t in typed))
    if p.example:
        lines.append(f"- example: `{p.example}`")
    return "\n".join(lines)


def _value(v: Any) -> str:
    if v is REQUIRED:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if v is None:
        return "none"
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_value(e) for e in v) + "]"
    return str(v)


def _signature(op: OpDef) -> str:
    ins = [f"[{i[1:]}, ...]" if i.startswith("*") else i for i in op.inputs]
    # an attribute whose default is None is optional with no value to write: [axis]
    attrs = [k if v is REQUIRED else f"[{k}]" if v is None else f"{k}={_value(v)}"
             for k, v in op.attrs if k not in _HIDDEN.get(op.name, ())]
    return f"{op.dsl_name}({', '.join(ins + attrs)})"


# attributes that the front end fills in itself (never written in .graph)
_HIDDEN = {"one_hot": ("strict",), "random_uniform": ("dist", "counter"),
           "random_normal": ("dist", "counter")}


def _shape(op: OpDef) -> str:
    p = prose(op)
    if p.shape:
        return p.shape
    if op.kind == ELEMENTWISE:
        return "the shape of x" if len(op.inputs) == 1 else \
            "the inputs broadcast (NumPy; a symbolic dim only against a static 1)"
    if op.kind == REDUCE:
        return REDUCED
    return "(see the types)"


def _grad(op: OpDef) -> str:
    p = prose(op)
    if not op.differentiable:
        return _NO_GRAD
    if p.grad:
        return p.grad
    if op.kind == COMPOSITE:
        return "through the primitives it is built from"
    return "(undocumented)"


def _args(types: list[Any]) -> list[Any]:
    return [make("arg", name=f"x{i}", dtype=t.dtype, shape=t.shape) for i, t in enumerate(types)]


def _typed(op: OpDef) -> list[str]:
    """``name(f32[N,3], f32[3]) -> f32[N,3]`` for each declared sample the shape rule accepts."""
    out = []
    for s in op.samples[:3] if op.kind != "fused" else ():
        types = [parse_type(t) for t in s.types]
        attrs = dict(s.attrs)
        try:
            res = make(op.name, *_args(types), **attrs)
        except GraphError:
            continue
        shown = ", ".join([str(t) for t in types]
                          + [f"{k}={_value(v)}" for k, v in s.attrs])
        out.append(f"{op.dsl_name}({shown}) -> {res.type}")
    return out


def _dtypes(op: OpDef) -> str:
    """The dtypes each group of operands accepts, found by running the shape rule on the first
    sample with every dtype in place of the group's (operands sharing a dtype form a group)."""
    if not op.samples or op.kind == "fused":
        return "any" if op.kind in (SPECIAL, "fused") else "-"
    s = op.samples[0]
    types = [parse_type(t) for t in s.types]
    attrs = dict(s.attrs)
    parts = []
    groups: dict[DType, list[int]] = {}
    for i, t in enumerate(types):
        groups.setdefault(t.dtype, []).append(i)
    for idx in groups.values():
        ok = [d.value for d in DType if _accepts(op, [t.with_dtype(d) if i in idx else t
                                                      for i, t in enumerate(types)], attrs)]
        names = [op.inputs[0][1:]] if op.variadic else [op.inputs[i] for i in idx]
        parts.append(f"{', '.join(names)}: {' '.join(ok)}")
    if "dtype" in attrs or any(k == "dtype" for k, _ in op.attrs):
        ok = [d.value for d in DType if any(
            _accepts(op, [parse_type(t) for t in x.types], {**dict(x.attrs), "dtype": d})
            for x in op.samples)]
        parts.append(f"dtype= {' '.join(ok)}")
    return "; ".join(parts)


def _accepts(op: OpDef, types: list[Any], attrs: dict[str, Any]) -> bool:
    try:
        make(op.name, *_args(types), **attrs)
    except GraphError:
        return False
    return True


if __name__ == "__main__":
    print(render(), end="")
