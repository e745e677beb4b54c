"""Graphviz DOT text of a compiled function (``graphc compile --emit dot|svg|png``,
``Model.to_dot``): each kernel of the fusion pass is a cluster holding its body's ops and labelled
with the ``.graph`` lines they come from; each edge is labelled with the type that flows on it.
``render`` runs Graphviz's ``dot`` program for SVG or PNG."""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from graphc.ir.core import Func, Value
from graphc.ir.errors import GraphCallError, GraphError, GraphFileError, Loc
from graphc.ir.ops.registry import suggest

FORMATS = ("dot", "svg", "png")


def model_to_dot(model: Any, func: str = "forward") -> str:
    """The optimised IR of entry point ``func`` of ``model`` (a graphc.Model) as DOT text."""
    names = list(model.optimized)
    if func not in names:
        raise GraphCallError(f"no function '{func}' to draw; {model.name} has "
                             f"{', '.join(names)}" + suggest(func, names))
    return to_dot(model.optimized[func])


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def where(loc: Loc | None) -> str:
    """``mlp.graph:16:14``, with the call site of an inlined fn: ``mlp.graph:5:14 <- 16:19``."""
    if loc is None:
        return ""
    s = f"{os.path.basename(loc.file)}:{loc.line}:{loc.col}"
    if loc.via is not None:
        via = where(loc.via)
        s += " <- " + (via.split(":", 1)[1] if via.startswith(os.path.basename(loc.file) + ":")
                       else via)
    return s


def _lines(values: list[Value]) -> str:
    """The distinct source lines of ``values``: ``mlp.graph:5,16,18``."""
    by_file: dict[str, list[int]] = {}
    for v in values:
        loc = v.loc
        while loc is not None:
            lines = by_file.setdefault(os.path.basename(loc.file), [])
            if loc.line not in lines:
                lines.append(loc.line)
            loc = loc.via
    return "; ".join(f"{f}:{','.join(map(str, sorted(ls)))}" for f, ls in by_file.items())


class _Dot:
    def __init__(self, func: Func):
        self.func = func
        self.lines = [f'digraph "{_esc(func.name)}" {{', "  rankdir=TB;",
                      '  node [fontname="monospace", fontsize=10];',
                      '  edge [fontname="monospace", fontsize=9];']
        self.src: dict[int, str] = {}       # value id -> the node its result leaves from
        self.count = 0

    def node(self, v: Value, label: str, shape: str, indent: str = "  ") -> str:
        name = f"n{self.count}"
        self.count += 1
        self.lines.append(f'{indent}{name} [label="{_esc(label)}", shape={shape}];')
        return name

    def edge(self, a: str, b: str, v: Value, indent: str = "  ") -> None:
        self.lines.append(f'{indent}{a} -> {b} [label="{_esc(str(v.type))}"];')

    def label(self, v: Value) -> tuple[str, str]:
        if v.op == "arg":
            return f"{v.attrs['name']}\n{v.type}", "ellipse"
        if v.op == "const":
            value = v.attrs["value"]
            text = repr(value) if not isinstance(value, tuple) or len(value) <= 4 else \
                f"({len(value)} values)"
            return f"const {text}\n{v.type}", "plaintext"
        return "\n".join(filter(None, (v.op, str(v.type), where(v.loc)))), "box"

    def value(self, v: Value) -> None:
        body = v.attrs.get("body") if v.op == "fused" else None
        if isinstance(body, Func):
            self.kernel(v, body)
            return
        label, shape = self.label(v)
        name = self.node(v, label, shape)
        self.src[id(v)] = name
        for i in v.inputs:
            self.edge(self.src[id(i)], name, i)

    def kernel(self, v: Value, body: Func) -> None:
        """A cluster: the body's ops as nodes, each body argument's uses fed by the outer
        operand it stands for."""
        step = v.attrs.get("step")
        ops = [b for b in body.values() if b.op != "arg"]
        head = f"kernel {step}: {body.name}" if step is not None else f"kernel {body.name}"
        k = self.count
        self.lines.append(f"  subgraph cluster_{k} {{")
        self.lines.append(f'    label="{_esc(head)}\\l{_esc(_lines(ops))}\\l"; labeljust=l; '
                          f'style="rounded,filled"; fillcolor="#f3f3fb";')
        inner: dict[int, str] = {}
        outer = dict(zip(map(id, body.params), v.inputs))
        for b in ops:
            label, shape = self.label(b)
            inner[id(b)] = self.node(b, label, shape, "    ")
        self.lines.append("  }")
        for b in ops:
            for i in b.inputs:
                if id(i) in inner:
                    self.edge(inner[id(i)], inner[id(b)], i)
                else:                                   # a body argument: the kernel's operand
                    x = outer[id(i)]
                    self.edge(self.src[id(x)], inner[id(b)], x)
        result = body.results[0]
        self.src[id(v)] = inner[id(result)] if id(result) in inner else \
            self.src[id(outer[id(result)])]

    def build(self) -> str:
        for v in self.func.values():
            self.value(v)
        f = self.func
        names = f.result_names or tuple(f"result{i}" for i in range(len(f.results)))
        for k, (name, r) in enumerate(zip(names, f.results)):
            self.lines.append(f'  out{k} [label="{_esc(name)}", shape=doubleoctagon];')
            self.edge(self.src[id(r)], f"out{k}", r)
        self.lines.append("}")
        return "\n".join(self.lines) + "\n"


def to_dot(func: Func) -> str:
    """DOT text of one Func (optimised or not: a Func without kernels draws op by op)."""
    return _Dot(func).build()


def check_graphviz(fmt: str) -> str:
    """The path of Graphviz's ``dot`` program; a GraphFileError naming the package if absent."""
    exe = shutil.which("dot")
    if exe is None:
        raise GraphFileError(f"{fmt} output needs Graphviz's 'dot' program, which is not on "
                             f"PATH: install Graphviz (e.g. 'apt install graphviz', 'brew "
                             f"install graphviz' or 'conda install graphviz'), or emit dot "
                             f"text (--emit dot) and render it elsewhere")
    return exe


def render(dot_text: str, fmt: str) -> bytes:
    """SVG or PNG bytes drawn by Graphviz's ``dot`` program; a GraphError when it is missing."""
    if fmt not in ("svg", "png"):
        raise GraphCallError(f"cannot render '{fmt}': choose one of svg, png")
    exe = check_graphviz(fmt)
    try:
        r = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode(), capture_output=True,
                           timeout=300, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        raise GraphFileError(f"running Graphviz's dot failed: {e}") from None
    if r.returncode != 0:
        msg = r.stderr.decode(errors="replace").strip()
        raise GraphError(f"Graphviz's dot failed (exit {r.returncode}): {msg[:500]}")
    return r.stdout
