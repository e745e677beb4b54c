"""Plans a Func for code generation, without LLVM: which values are views of others (layout ops
cost nothing), which values own a buffer, and where in the arena each buffer lives. A function
the fusion pass partitioned runs exactly its ``fused`` kernels, in the memory plan's order and at
its offsets; any other function gets the runtime's own simple fusion (single-use elementwise
values computed in their consumer) and slot assignment. Strides are dim polynomials, so static
facts (unit stride, broadcast) are plain ints and everything else is computed at run time."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

from graphc.ir.core import Func, Value
from graphc.ir.ops import registry
from graphc.ir.ops.fused import body_symbols
from graphc.ir.types import DimLike, DType, Shape, dim_mul

# error codes returned by generated code: kind << 24 | index
ERR_BOUNDS = 1
ERR_NUMERICS = 2
ERR_ARG_NUMERICS = 3
ERR_ALLOC = 4
ERR_INDEX = 5
# A debug build's code for an access outside its buffer: index = the step (< len(steps)), else
# len(steps) + r for the copy of result r, else len(steps) + len(results) + k for the check of
# param k. Details: (element index, buffer number, buffer bytes, access bytes).
ERR_DEBUG_BOUNDS = 6
# i64 words after the run-time dims where a failing kernel describes its error. ERR_INDEX:
# (bad value, its flat position in the index/label array, the bound).
DETAIL_WORDS = 4


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


@dataclass(frozen=True)
class Reg:
    """A per-row value held in a stack slot (a reduction of a row kernel): the same for every
    element of the row, so it ignores the index it is read at."""
    slot: Any
    dtype: DType


@dataclass(frozen=True)
class Acc:
    """The matmul result element (or vector) that a kernel's epilogue starts from."""
    dtype: DType


Operand = Union[View, Lazy, Reg, Acc]


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
    step_of: dict[int, Value] = field(default_factory=dict)   # error index -> value
    offsets: dict[int, DimLike] = field(default_factory=dict)  # slot buffer -> arena offset
    peak: DimLike = 0                                           # arena bytes for intermediates
    stage: dict[int, DimLike] = field(default_factory=dict)    # result buffer -> staging offset
    stage_end: DimLike = 0                                      # arena bytes with staging
    stage_ends: dict[int, DimLike] = field(default_factory=dict)  # result -> its staging end
    arena_cache: dict[tuple, int] = field(default_factory=dict)
    shape_cache: dict[tuple, list] = field(default_factory=dict)  # dims -> result shapes
    inplace: dict[int, str] = field(default_factory=dict)     # result -> param it may overwrite
    binder: Any = None                                          # ir.args.Binder, made on demand


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
    """Every symbolic dim the function's types and attributes mention, sorted (the order of the
    run-time ``dims`` array)."""
    return tuple(sorted(body_symbols(func)))


def uses(func: Func) -> dict[int, int]:
    n: dict[int, int] = {}
    for v in func.values():
        for i in v.inputs:
            n[id(i)] = n.get(id(i), 0) + 1
    for r in func.results:
        n[id(r)] = n.get(id(r), 0) + 1
    return n


def make_plan(func: Func, *, fuse: bool = True) -> Plan:
    """``fuse=False`` gives one kernel per op (what check_numerics needs to name the op)."""
    from graphc.runtime import kernelplan
    if any(v.op == "fused" for v in func.values()):
        planned = kernelplan.plan_kernels(func) if fuse else None
        if planned is not None:
            return planned
        func = kernelplan.unfuse(func)
    return plan_ops(func, fuse)


def plan_ops(func: Func, fuse: bool) -> Plan:
    from graphc.runtime import arena, views
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
    finish_results(plan)
    arena.lay_out(plan)
    return plan


def finish_results(plan: Plan) -> None:
    """A result computed by a step writes the caller's array directly (its buffer becomes a
    "result" buffer); any other result is copied there at the end."""
    seen: set[int] = set()
    for k, r in enumerate(plan.func.results):
        src = plan.operands[id(r)]
        own = None
        if isinstance(src, View) and id(r) not in seen \
                and plan.buffers[src.buf].kind == "slot" and plan.buffers[src.buf].value is r:
            plan.buffers[src.buf].kind = "result"
            plan.buffers[src.buf].index = k
            own = src.buf
        seen.add(id(r))
        plan.results.append((src, own))
    for k, r in enumerate(plan.func.results):
        plan.buffers.append(Buffer("output", r.dtype, r.type.size, k, r))


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
    if isinstance(op, Lazy):
        return [b for a in op.args for b in buffers_read(a)]
    return []
