"""Plans a Func for code generation, without LLVM: which values are views of others (layout ops
cost nothing), which elementwise values are fused into their only consumer, which values own a
buffer, and which workspace slot each buffer shares. Strides are dim polynomials, so static
facts (unit stride, broadcast) are plain ints and everything else is computed at run time."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from ir.core import Func, Value
from ir.ops import registry
from ir.types import Dim, DimLike, DType, Shape, dim_mul

# error codes returned by generated code: kind << 24 | index
ERR_BOUNDS = 1
ERR_NUMERICS = 2
ERR_ARG_NUMERICS = 3
ERR_ALLOC = 4
ERR_INDEX = 5


@dataclass(frozen=True)
class View:
    """Elements of buffer ``buf`` at ``offset + sum(i_k * strides[k])``."""
    buf: int
    dtype: DType
    shape: Shape
    strides: Shape
    offset: DimLike = 0


@dataclass(frozen=True)
class Lazy:
    """An elementwise value computed where it is read; ``args`` are aligned to its shape."""
    value: Value
    args: tuple[Operand, ...]


Operand = Union[View, Lazy]


@dataclass
class Buffer:
    kind: str                  # "param" | "const" | "slot" | "result" | "output"
    dtype: DType
    size: DimLike              # elements
    index: int = 0             # param / result / output position
    value: Value | None = None


@dataclass
class Step:
    index: int
    value: Value
    kind: str                  # registry kind, or "copy" (materialise ``args[0]`` contiguously)
    out: View
    args: tuple[Operand, ...]


@dataclass
class Check:
    """A run-time condition ``lo <= x <= hi`` (no upper bound when ``hi`` is None), checked
    before any step runs; a failure is a GraphCallError naming ``value``."""
    value: Value
    x: DimLike
    lo: DimLike
    hi: DimLike | None


@dataclass
class Plan:
    func: Func
    symbols: tuple[str, ...]
    buffers: list[Buffer] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    operands: dict[int, Operand] = field(default_factory=dict)
    results: list[tuple[Operand, int | None]] = field(default_factory=list)  # (what, own buf)
    slots: list[list[int]] = field(default_factory=list)
    step_of: dict[int, Value] = field(default_factory=dict)   # error index -> value


def contiguous_strides(shape: Shape) -> Shape:
    out: list[DimLike] = []
    acc: DimLike = 1
    for d in reversed(shape):
        out.append(acc)
        acc = dim_mul(acc, d)
    return tuple(reversed(out))


def contiguous(buf: int, dtype: DType, shape: Shape, offset: DimLike = 0) -> View:
    return View(buf, dtype, tuple(shape), contiguous_strides(shape), offset)


def is_contiguous(v: View) -> bool:
    want = contiguous_strides(v.shape)
    return all(s == w for s, w, d in zip(v.strides, want, v.shape) if d != 1)


def broadcast_view(v: View, shape: Shape) -> View:
    """Align ``v`` to ``shape`` (NumPy rules): new leading axes and static-1 axes get stride 0."""
    pad = len(shape) - len(v.shape)
    strides = [0] * pad
    for d, s, want in zip(v.shape, v.strides, shape[pad:]):
        strides.append(0 if d == 1 and want != 1 else s)
    return View(v.buf, v.dtype, tuple(shape), tuple(strides), v.offset)


def symbols_of(func: Func) -> tuple[str, ...]:
    syms: set[str] = set()

    def walk(a: Any) -> None:
        if isinstance(a, Dim):
            syms.update(a.symbols)
        elif isinstance(a, tuple):
            for x in a:
                walk(x)
    for v in func.values():
        syms.update(v.type.symbols)
        for _, a in v.attrs.items:
            walk(a)
    return tuple(sorted(syms))


def uses(func: Func) -> dict[int, int]:
    n: dict[int, int] = {}
    for v in func.values():
        for i in v.inputs:
            n[id(i)] = n.get(id(i), 0) + 1
    for r in func.results:
        n[id(r)] = n.get(id(r), 0) + 1
    return n


def make_plan(func: Func, *, fuse: bool = True) -> Plan:
    from runtime import views
    plan = Plan(func, symbols_of(func))
    values = func.values()
    nuse = uses(func)
    results = {id(r) for r in func.results}
    consumer: dict[int, Value] = {}
    for v in values:
        for i in v.inputs:
            consumer[id(i)] = v
    for k, p in enumerate(func.params):
        plan.buffers.append(Buffer("param", p.dtype, p.type.size, k, p))
        plan.operands[id(p)] = contiguous(len(plan.buffers) - 1, p.dtype, p.shape)

    def fusable(v: Value) -> bool:
        user = consumer.get(id(v))
        if not fuse or user is None or nuse.get(id(v)) != 1 or id(v) in results:
            return False
        kind = registry.get(user.op).kind
        if kind == registry.ELEMENTWISE:
            return user.shape == v.shape
        return kind == registry.REDUCE

    for v in values:
        if id(v) in plan.operands:
            continue
        opdef = registry.get(v.op)
        if opdef.kind == registry.ELEMENTWISE:
            args = tuple(align(plan.operands[id(i)], v.shape) for i in v.inputs)
            if fusable(v):
                plan.operands[id(v)] = Lazy(v, args)
                continue
            add_step(plan, v, opdef.kind, args)
        elif v.op == "const":
            plan.operands[id(v)] = views.const_view(plan, v)
        elif opdef.kind == registry.MOVEMENT and views.is_view_op(plan, v):
            plan.operands[id(v)] = views.view_of(plan, v)
        elif v.op == "reshape":             # of strided data: materialise, then view
            add_step(plan, v, "copy", (plan.operands[id(v.inputs[0])],))
        else:
            if v.op == "pad":
                views.nonneg_checks(plan, v, v.attrs["lo"] + v.attrs["hi"])
            add_step(plan, v, opdef.kind, tuple(plan.operands[id(i)] for i in v.inputs))
    seen: set[int] = set()
    for k, r in enumerate(func.results):
        src = plan.operands[id(r)]
        own = None
        if isinstance(src, View) and id(r) not in seen \
                and plan.buffers[src.buf].kind == "slot" and plan.buffers[src.buf].value is r:
            plan.buffers[src.buf].kind = "result"
            plan.buffers[src.buf].index = k
            own = src.buf
        seen.add(id(r))
        plan.results.append((src, own))
    for k, r in enumerate(func.results):
        plan.buffers.append(Buffer("output", r.dtype, r.type.size, k, r))
    assign_slots(plan)
    return plan


def align(op: Operand, shape: Shape) -> Operand:
    if isinstance(op, Lazy):
        return op                       # fusion only inlines values of the consumer's shape
    return broadcast_view(op, shape)


def add_step(plan: Plan, v: Value, kind: str, args: tuple[Operand, ...],
             step_kind: str | None = None) -> View:
    plan.buffers.append(Buffer("slot", v.dtype, v.type.size, 0, v))
    out = contiguous(len(plan.buffers) - 1, v.dtype, v.shape)
    step = Step(len(plan.steps), v, step_kind or kind, out, args)
    plan.steps.append(step)
    plan.step_of[step.index] = v
    plan.operands[id(v)] = out
    return out


def buffers_read(op: Operand) -> list[int]:
    if isinstance(op, View):
        return [op.buf]
    return [b for a in op.args for b in buffers_read(a)]


def assign_slots(plan: Plan) -> None:
    """Greedy reuse: a slot buffer is free after the last step (or result) that reads it; a
    step's output never shares a slot with its own inputs."""
    last: dict[int, int] = {}
    for s in plan.steps:
        for a in s.args:
            for b in buffers_read(a):
                last[b] = s.index
    end = len(plan.steps)
    for src, _ in plan.results:
        for b in buffers_read(src):
            last[b] = end
    free: list[int] = []
    slot_of: dict[int, int] = {}
    for s in plan.steps:
        b = s.out.buf
        if plan.buffers[b].kind == "slot":
            size = plan.buffers[b].size
            pick = next((f for f in free if any(plan.buffers[m].size == size
                                                for m in plan.slots[f])), None)
            if pick is None and free:
                pick = free[0]
            if pick is None:
                plan.slots.append([])
                pick = len(plan.slots) - 1
            else:
                free.remove(pick)
            plan.slots[pick].append(b)
            slot_of[b] = pick
            if b not in last:
                last[b] = s.index
        for done in [x for x, t in last.items() if t == s.index and x in slot_of]:
            free.append(slot_of.pop(done))
            del last[done]

