"""Plans a function the fusion pass partitioned: one step per ``fused`` kernel, in the memory
plan's order, each writing its arena slot (or the caller's array, for a result); layout ops stay
views and constants globals. ``unfuse`` turns kernels back into plain ops, for check_numerics
(which names the op that went wrong) and for bodies this backend has no single lowering for."""
from __future__ import annotations

from graphc.ir.core import Func, Value, rebuild
from graphc.ir.ops import registry
from graphc.ir.ops.fused import FUSED, Pattern, analyze, inline
from graphc.ir.slots import poly_max
from graphc.ir.types import DimLike, DType
from graphc.runtime import arena, views
from graphc.runtime.plan import (
    Buffer,
    Operand,
    Plan,
    Step,
    View,
    contiguous,
    finish_results,
    symbols_of,
)


def unfuse(func: Func) -> Func:
    new: dict[int, Value] = {}
    for v in func.values():
        ins = tuple(new[id(i)] for i in v.inputs)
        new[id(v)] = inline(v.attrs["body"], ins) if v.op == FUSED else rebuild(v, ins)
    return Func(func.name, tuple(new[id(p)] for p in func.params),
                tuple(new[id(r)] for r in func.results), func.result_names)


def body_pattern(v: Value) -> Pattern | str:
    body = v.attrs["body"]
    return analyze(body.results[0], lambda x: x.op != "arg")


def plan_kernels(func: Func) -> Plan | None:
    """The plan, or None when some value is neither a kernel nor free (a view or constant)."""
    plan = Plan(func, symbols_of(func))
    for k, p in enumerate(func.params):
        plan.buffers.append(Buffer("param", p.dtype, p.type.size, k, p))
        plan.operands[id(p)] = contiguous(len(plan.buffers) - 1, p.dtype, p.shape)
    slot_buf: dict[int, int] = {}
    offsets: dict[int, DimLike] = {}
    steps: list[tuple[int, Step]] = []
    planned = True
    for v in func.values():
        if id(v) in plan.operands:
            continue
        if v.op == "const":
            plan.operands[id(v)] = views.const_view(plan, v)
        elif registry.has(v.op, registry.VIEW) and views.is_view_op(plan, v):
            plan.operands[id(v)] = views.view_of(plan, v)
        elif v.op == FUSED:
            pattern = body_pattern(v)
            if isinstance(pattern, str):
                return None
            slot = v.attrs.get("slot")
            planned &= slot is not None or "out" in v.attrs
            buf = _buffer(plan, v, slot, slot_buf, offsets)
            kind, value, args = _step(plan, v, pattern)
            step = Step(0, value, kind, contiguous(buf, v.dtype, v.shape), args)
            plan.operands[id(v)] = step.out
            steps.append((v.attrs.get("step", len(steps)), step))
        else:
            return None
    for n, (_, step) in enumerate(sorted(steps, key=lambda s: s[0])):
        step.index = n
        plan.steps.append(step)
        plan.step_of[n] = step.value
    finish_results(plan)
    plan.inplace = {v.attrs["out"]: v.attrs["inplace"] for v in func.values()
                    if v.op == FUSED and "inplace" in v.attrs}
    arena.lay_out(plan, offsets if planned else None)
    return plan


def _buffer(plan: Plan, v: Value, slot: int | None, slot_buf: dict[int, int],
            offsets: dict[int, DimLike]) -> int:
    """The buffer ``v`` writes: one per memory-plan slot (sized in bytes by its largest member,
    so kernels that share a slot, in place or one after another, share it), else its own."""
    if slot is None:
        plan.buffers.append(Buffer("slot", v.dtype, v.type.size, 0, v))
        return len(plan.buffers) - 1
    size = v.type.size * v.dtype.itemsize
    if slot in slot_buf:
        b = plan.buffers[slot_buf[slot]]
        b.size = poly_max([b.size, size])
        return slot_buf[slot]
    plan.buffers.append(Buffer("slot", DType.bool, size, 0, v))     # bool: one byte an element
    slot_buf[slot] = len(plan.buffers) - 1
    offsets[slot_buf[slot]] = v.attrs["offset"]
    return slot_buf[slot]


def _step(plan: Plan, v: Value, pattern: Pattern) -> tuple[str, Value, tuple[Operand, ...]]:
    """(step kind, the value it computes, its operands): a kernel, or for a lone op its own
    lowering (so errors name that op)."""
    body = v.attrs["body"]
    for c in body.values():
        if c.op == "const" and id(c) not in plan.operands:
            plan.operands[id(c)] = views.const_view(plan, c)
    args = tuple(plan.operands[id(i)] for i in v.inputs)
    if pattern.kind != "single":
        return FUSED, v, args
    leaf = {id(p): a for p, a in zip(body.params, args)}
    op = pattern.anchor
    assert op is not None
    if op.op == "arg":
        return "copy", op, (leaf[id(op)],)
    ins = [leaf.get(id(i)) or plan.operands[id(i)] for i in op.inputs]
    if registry.has(op.op, registry.VIEW):
        for i, a in zip(op.inputs, ins):
            plan.operands[id(i)] = a
        src = views.view_of(plan, op) if views.is_view_op(plan, op) else ins[0]
        assert isinstance(src, View)
        return "copy", op, (src,)
    if op.op == "pad":
        views.nonneg_checks(plan, op, op.attrs["lo"] + op.attrs["hi"])
    return registry.get(op.op).kind, op, tuple(ins)
