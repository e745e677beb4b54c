"""Identical kernels share one LLVM function. An unrolled loop plans the same kernel once per
step, differing only in which buffers it touches and at which offsets into them. A kernel's
buffers are already its function's arguments; here each view offset (other than 0) becomes a
symbolic dim ``@offN`` that the function takes as an i64 argument, and the step, so abstracted,
gets a structural key: op, attrs (a fused body printed structurally), types, kinds, dtypes,
shapes, strides, which argument each view reads, which arguments may alias, const contents.
Steps with equal keys emit identical code, so the code generator emits the first and calls it
for the rest with their own buffers and offsets: LLVM's work grows with the distinct kernels,
not with the steps. Error codes carry no step index inside a shared function: the driver adds
it (``kind << 24 | 0`` becomes ``kind << 24 | index``)."""
from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from graphc.ir.core import Func, Value
from graphc.ir.ops.fused import PLAN_ATTRS
from graphc.ir.types import Dim, DimLike
from graphc.runtime.plantypes import Lazy, Operand, Plan, Step, View

OFFSET = "@off"                   # symbol prefix of an offset argument (no .graph name has @)


@functools.cache
def offset_dim(n: int) -> Dim:
    """The symbol ``@off<n>`` as a dim (made once: Dim construction is not cheap)."""
    return Dim.sym(f"{OFFSET}{n}")


def symbolize(s: Step) -> tuple[Step, list[DimLike]]:
    """``s`` with index 0 and every non-zero view offset replaced by a symbol ``@offN``, and
    the offsets in N order (one symbol per distinct offset)."""
    offsets: list[DimLike] = []
    number: dict[DimLike, int] = {}
    memo: dict[int, Operand] = {}

    def view(v: View) -> View:
        if isinstance(v.offset, int) and v.offset == 0:
            return v
        if v.offset not in number:
            number[v.offset] = len(offsets)
            offsets.append(v.offset)
        return View(v.buf, v.dtype, v.shape, v.strides, offset_dim(number[v.offset]))

    def op(x: Operand) -> Operand:
        if isinstance(x, View):
            return view(x)
        if not isinstance(x, Lazy):
            return x
        if id(x) not in memo:
            memo[id(x)] = Lazy(x.value, tuple(op(a) for a in x.args))
        return memo[id(x)]

    out = view(s.out)
    args = tuple(op(a) for a in s.args)
    return Step(0, s.value, s.kind, out, args), offsets


class KeyMaker:
    """Structural keys of symbolized steps of one plan; fused bodies are keyed once each."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self._bodies: dict[int, Hashable] = {}

    def key(self, s: Step, bufs: Sequence[int], shared: set[int]) -> Hashable:
        pos = {b: i for i, b in enumerate(bufs)}
        memo: dict[int, Hashable] = {}

        def buf(b: int) -> Hashable:
            if b in pos:
                return pos[b]
            bf = self.plan.buffers[b]       # a const: its contents are in the code
            return ("const", bf.dtype, repr(bf.value.attrs["value"]) if bf.value else None)

        def operand(x: Operand) -> Hashable:
            if isinstance(x, View):
                return ("V", buf(x.buf), x.dtype, x.shape, x.strides, x.offset)
            if isinstance(x, Lazy):
                if id(x) not in memo:
                    memo[id(x)] = ("L", self.value(x.value), tuple(operand(a) for a in x.args))
                return memo[id(x)]
            return (type(x).__name__, repr(x))

        consts: tuple = ()
        body = s.value.attrs.get("body")
        if isinstance(body, Func):      # a fused body's consts are read through the plan
            consts = tuple(operand(self.plan.operands[id(v)]) for v in body.values()
                           if v.op == "const" and id(v) in self.plan.operands)
        return (s.kind, self.value(s.value), tuple(i.type for i in s.value.inputs),
                operand(s.out), tuple(operand(a) for a in s.args), consts,
                tuple(self.plan.buffers[b].dtype for b in bufs),
                tuple(sorted(pos[b] for b in shared)))

    def value(self, v: Value) -> Hashable:
        # the memory plan's placement attrs shape no code: buffers and offsets are arguments
        items = [(k, x) for k, x in v.attrs.items if k not in PLAN_ATTRS]
        return (v.op, attrs_key(items, self.body), v.type)

    def body(self, f: Func) -> Hashable:
        if id(f) not in self._bodies:
            self._bodies[id(f)] = func_key(f, self.body)
        return self._bodies[id(f)]


def attrs_key(items: Sequence[tuple[str, Any]], body: Callable[[Func], Hashable]
              ) -> Hashable:
    """Attribute values by ``repr`` (so 0.0 and -0.0, 1 and True stay apart), a Func by
    structure."""
    return tuple((k, body(x) if isinstance(x, Func) else repr(x)) for k, x in items)


def func_key(f: Func, body: Callable[[Func], Hashable]) -> Hashable:
    """A Func's structure without its name or source locations: params' types, then each value
    as (op, input positions, attrs (a param: its position), type), then the results'
    positions."""
    ids: dict[int, int] = {}
    rows: list[Hashable] = []
    params = {id(p): n for n, p in enumerate(f.params)}
    for k, v in enumerate(f.values()):
        ids[id(v)] = k
        # a param is its position and type: its name shapes no code
        attrs = params.get(id(v), -1) if v.op == "arg" else attrs_key(v.attrs.items, body)
        rows.append((v.op, tuple(ids[id(i)] for i in v.inputs), attrs, v.type))
    return (tuple(p.type for p in f.params), tuple(rows),
            tuple(ids[id(r)] for r in f.results))
