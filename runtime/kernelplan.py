"""Plans a Func for code generation, without LLVM: the runtime lowers exactly the kernels the IR
holds and plans nothing of its own. Each ``fused`` op is one step, in the memory plan's order
and at its arena offset (or writing the caller's array, for a result); a plain op outside any
kernel (a pipeline without the fusion pass, or a kernel opt-bisect cut) is one step of its own;
layout ops the fusion pass left outside kernels are views and constants are globals. A kernel
this backend has no lowering for is a compiler error here: the fusion pass never forms one
(``ir.ops.kernelshape.analyze`` is the contract both sides read). The siblings of a multi-result
kernel that the memory plan put in one step are one step: it writes the first sibling's buffer
(``out``) and, after its inputs in ``args``, the others'; its value's body holds the results
written, in that order."""
from __future__ import annotations

import functools

from graphc.ir.core import Func, Value, make
from graphc.ir.errors import GraphError
from graphc.ir.ops import registry
from graphc.ir.ops.fused import FUSED, Body, body_patterns, is_sibling, kernel_of
from graphc.ir.slots import poly_max
from graphc.ir.types import DimLike, DType, TensorType, dim_mul
from graphc.runtime import arena, views
from graphc.runtime.plantypes import (
    Buffer,
    Operand,
    Plan,
    Step,
    View,
    broadcast_view,
    contiguous,
    symbols_of,
)


def make_plan(func: Func) -> Plan:
    """The plan of ``func``'s kernels: each ``fused`` op one step, as the IR shows them."""
    return plan_func(func)


def plan_kernels(func: Func) -> Plan | None:
    """The plan of a function the fusion pass partitioned completely, or None when some op is
    outside every kernel (tests use it to check that fusion left nothing behind)."""
    for v in func.values():
        if v.op not in ("arg", "const", FUSED) and not registry.has(v.op, registry.VIEW):
            return None
    return plan_func(func)


def plan_func(func: Func) -> Plan:
    plan = Plan(func, symbols_of(func))
    for k, p in enumerate(func.params):
        plan.buffers.append(Buffer("param", p.dtype, p.type.size, k, p))
        plan.operands[id(p)] = contiguous(len(plan.buffers) - 1, p.dtype, p.shape)
    slot_buf: dict[int, int] = {}
    offsets: dict[int, DimLike] = {}
    steps: list[tuple[int, Step]] = []
    planned = ordered = True                # every kernel has its memory plan / its step
    groups: dict[tuple, list[Step]] = {}    # siblings' steps, to merge once all are planned
    for v in func.values():
        if id(v) in plan.operands:
            continue
        if v.op == "const":
            plan.operands[id(v)] = views.const_view(plan, v)
        elif registry.has(v.op, registry.VIEW) and views.is_view_op(plan, v):
            plan.operands[id(v)] = views.view_of(plan, v)
        elif v.op == FUSED:
            slot = v.attrs.get("slot")
            planned &= slot is not None or "out" in v.attrs
            ordered &= "step" in v.attrs
            buf = _buffer(plan, v, slot, slot_buf, offsets)
            kind, value, args = _kernel_step(plan, v)
            step = Step(0, value, kind, contiguous(buf, v.dtype, v.shape), args)
            plan.operands[id(v)] = step.out
            steps.append((v.attrs.get("step", len(steps)), step))
            if is_sibling(v) and "step" in v.attrs:
                groups.setdefault((v.attrs["step"],) + kernel_of(v), []).append(step)
        else:
            planned = ordered = False
            plan.buffers.append(Buffer("slot", v.dtype, v.type.size, 0, v))
            kind, args = _op_step(plan, v, plan.operands)
            step = Step(0, v, kind, contiguous(len(plan.buffers) - 1, v.dtype, v.shape), args)
            plan.operands[id(v)] = step.out
            steps.append((len(steps), step))
    if ordered:
        steps = _merge_siblings(steps, groups)
        steps.sort(key=lambda s: s[0])
    for n, (_, step) in enumerate(steps):
        step.index = n
        plan.steps.append(step)
        plan.step_of[n] = _named(step.value)
    finish_results(plan)
    plan.inplace = {v.attrs["out"]: v.attrs["inplace"] for v in func.values()
                    if v.op == FUSED and "inplace" in v.attrs}
    arena.lay_out(plan, offsets if planned else None)
    return plan


def _merge_siblings(steps: list[tuple[int, Step]], groups: dict[tuple, list[Step]]
                    ) -> list[tuple[int, Step]]:
    """One step per set of siblings scheduled together: it writes all their buffers."""
    into: dict[int, Step] = {}
    for group in groups.values():
        if len(group) < 2:
            continue
        first = group[0].value
        body = first.attrs["body"]
        results = tuple(body.results[s.value.attrs.get("result", 0)] for s in group)
        written = Body(body.name, body.params, results)
        value = make(FUSED, *first.inputs, body=written, loc=first.loc)
        merged = Step(0, value, FUSED, group[0].out,
                      group[0].args + tuple(s.out for s in group[1:]))
        for s in group:
            into[id(s)] = merged
    out, seen = [], set()
    for t, s in steps:
        m = into.get(id(s), s)
        if id(m) not in seen:
            seen.add(id(m))
            out.append((t, m))
    return out


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


def _buffer(plan: Plan, v: Value, slot: int | None, slot_buf: dict[int, int],
            offsets: dict[int, DimLike]) -> int:
    """The buffer ``v`` writes: one per memory-plan slot (sized in bytes by its largest member,
    so kernels that share a slot, in place or one after another, share it), else its own."""
    if slot is None:
        plan.buffers.append(Buffer("slot", v.dtype, v.type.size, 0, v))
        return len(plan.buffers) - 1
    size = _nbytes(v.type)
    if slot in slot_buf:
        b = plan.buffers[slot_buf[slot]]
        if b.size != size:
            b.size = poly_max([b.size, size])
        return slot_buf[slot]
    plan.buffers.append(Buffer("slot", DType.bool, size, 0, v))     # bool: one byte an element
    slot_buf[slot] = len(plan.buffers) - 1
    offsets[slot_buf[slot]] = v.attrs["offset"]
    return slot_buf[slot]


@functools.lru_cache(maxsize=4096)
def _nbytes(ty: TensorType) -> DimLike:
    """A value's bytes (remembered: an unrolled loop's steps repeat a few types)."""
    return dim_mul(ty.size, ty.dtype.itemsize)


def _named(v: Value) -> Value:
    """The value a step's errors name: for a kernel of one op (``fusion{policy=single}``), that
    op, with its own line (check_numerics names the op that produced a NaN)."""
    return (_lone(v) or v) if v.op == FUSED else v


def _lone(v: Value) -> Value | None:
    """The one op a kernel computes (its body's root, all else args and constants), if so."""
    body = v.attrs["body"]
    root = body.results[0]
    if all(x.op in ("arg", "const") for x in body.values() if x is not root):
        return root
    return None


def _kernel_step(plan: Plan, v: Value) -> tuple[str, Value, tuple[Operand, ...]]:
    """(step kind, the value it computes, its operands): a kernel by its pattern, or one that
    ``analyze`` calls "single" (an op lowered on its own) by that op's own lowering."""
    body = v.attrs["body"]
    pats = body_patterns(body)
    pattern = pats if isinstance(pats, str) else pats[v.attrs.get("result", 0)]
    if isinstance(pattern, str):
        raise GraphError(f"the backend cannot lower kernel {body.name}: {pattern} (the fusion "
                         f"pass never forms such a kernel; this IR was made elsewhere)", v.loc)
    for c in body.values():
        if c.op == "const" and id(c) not in plan.operands:
            plan.operands[id(c)] = views.const_view(plan, c)
    args = tuple(plan.operands[id(i)] for i in v.inputs)
    if pattern.kind != "single":
        return FUSED, v, args
    op = pattern.anchor
    assert op is not None
    table = dict(plan.operands)
    table.update({id(p): a for p, a in zip(body.params, args)})
    if op.op == "arg":
        return "copy", op, (table[id(op)],)
    kind, ins = _op_step(plan, op, table)
    return kind, op, ins


def _view_in(plan: Plan, op: Value, table: dict[int, Operand]) -> Operand:
    """What a layout op alone in a kernel copies: its input seen through the op when that is a
    view of it, else the input itself (a reshape of strided data: copied in row-major order)."""
    saved = {id(i): plan.operands.get(id(i)) for i in op.inputs}
    for i in op.inputs:
        plan.operands[id(i)] = table[id(i)]
    try:
        return views.view_of(plan, op) if views.is_view_op(plan, op) else table[id(op.inputs[0])]
    finally:
        for i in op.inputs:
            if saved[id(i)] is None:
                del plan.operands[id(i)]
            else:
                plan.operands[id(i)] = saved[id(i)]  # type: ignore[assignment]


def _op_step(plan: Plan, v: Value, table: dict[int, Operand]) -> tuple[str, tuple[Operand, ...]]:
    """(step kind, operands) of op ``v`` lowered on its own, its inputs' operands in ``table``."""
    opdef = registry.get(v.op)
    ins = tuple(table[id(i)] for i in v.inputs)
    if opdef.kind == registry.ELEMENTWISE:
        return opdef.kind, tuple(broadcast_view(a, v.shape) if isinstance(a, View) else a
                                 for a in ins)
    if registry.has(v.op, registry.VIEW):      # a layout op copied: its input seen through it
        return "copy", (_view_in(plan, v, table),)
    if v.op == "pad":
        views.nonneg_checks(plan, v, v.attrs["lo"] + v.attrs["hi"])
    return opdef.kind, ins
