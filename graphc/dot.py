"""Graphviz DOT text of a function, for ``graphc compile --emit dot`` (render: ``dot -Tsvg``)."""
from __future__ import annotations

from graphc.ir.core import Func


def to_dot(func: Func) -> str:
    ids = {id(v): f"n{i}" for i, v in enumerate(func.values())}
    lines = [f'digraph "{func.name}" {{', "  rankdir=TB;", '  node [fontname="monospace"];']
    for v in func.values():
        if v.op == "arg":
            label, shape = f"{v.attrs['name']}\\n{v.type}", "ellipse"
        elif v.op == "const":
            label, shape = f"const {v.attrs['value']}\\n{v.type}", "plaintext"
        elif v.op == "fused":                  # a kernel: its body's name says what it computes
            label, shape = f"fused {v.attrs['body'].name}\\n{v.type}", "box3d"
        else:
            label, shape = f"{v.op}\\n{v.type}", "box"
        lines.append(f'  {ids[id(v)]} [label="{label}", shape={shape}];')
        for i in v.inputs:
            lines.append(f"  {ids[id(i)]} -> {ids[id(v)]};")
    names = func.result_names or tuple(f"result{i}" for i in range(len(func.results)))
    for k, (name, r) in enumerate(zip(names, func.results)):
        lines.append(f'  out{k} [label="{name}", shape=doubleoctagon];')
        lines.append(f"  {ids[id(r)]} -> out{k};")
    lines.append("}")
    return "\n".join(lines) + "\n"
