"""Lowers one ``fused`` kernel as the IR shows it: a loop kernel is one loop nest over its result;
a row kernel loops over the kept axes and, per row, runs one inner loop per reduction (results in
registers) and a last one for a whole-row result (softmax, cross-entropy and their gradients); a
reduction over leading axes accumulates, then applies its epilogue; a matmul applies its epilogue
to each output tile (vectors of accumulators) before storing it. Body values become expression
trees whose leaves are the inputs' views aligned to the iteration space.

A multi-result kernel (horizontal fusion) runs its results' loops as one: a loop kernel loads
what every result needs at an element, then stores each result there; a row kernel folds
independent reductions in one inner loop. A result written in place over a param (an
optimiser's state) is read through the output's own pointer when the two are the same array,
so every pointer stays ``noalias``."""
from __future__ import annotations

import llvmlite.ir as ll

from graphc.ir.core import Value
from graphc.ir.ops import registry
from graphc.ir.ops.fused import body_patterns
from graphc.ir.ops.kernelshape import Pattern, analyze
from graphc.ir.ops.rules import reduce_identity
from graphc.ir.types import DimLike, dim_prod
from graphc.runtime import pool
from graphc.runtime.emit import reg_type
from graphc.runtime.kernel import Kernel
from graphc.runtime.kernels import emit_reduce
from graphc.runtime.lowering import coalesce, combine, emit_map, leaves, map_views, outlinable
from graphc.runtime.matmul_kernels import emit_matmul
from graphc.runtime.plantypes import Acc, Lazy, Operand, Reg, Step, View, broadcast_view


class Trees:
    """Body values as operand trees over given shapes; ``leaves`` maps body params (and, while
    lowering, reductions and the matmul result) to what stands for them."""

    def __init__(self, k: Kernel, leaves: dict[int, Operand]):
        self.k = k
        self.leaves = leaves
        self.memo: dict[tuple[int, tuple[DimLike, ...]], Operand] = {}

    def at(self, v: Value, shape: tuple[DimLike, ...]) -> Operand:
        """``v`` broadcast to ``shape`` (NumPy rules): an operand loadable at any index of it.
        A value used twice is one shared subtree, so it is computed once per element."""
        key = (id(v), tuple(shape))
        if key not in self.memo or id(v) in self.leaves:
            self.memo[key] = self._at(v, tuple(shape))
        return self.memo[key]

    def _at(self, v: Value, shape: tuple[DimLike, ...]) -> Operand:
        leaf = self.leaves.get(id(v))
        if leaf is not None:
            return widen(leaf, shape)
        if v.op == "const":
            return widen(self.k.cg.plan.operands[id(v)], shape)
        if v.op == "dim":
            return Lazy(v, ())
        if v.op == "broadcast_to":
            return self.at(v.inputs[0], shape)
        if v.op == "reshape":           # adds or drops unit axes only (ir.ops.kernelshape.role)
            x = v.inputs[0]
            return widen(reshaped(self.at(x, x.shape), v.shape), shape)
        return Lazy(v, tuple(self.at(x, shape) for x in v.inputs))


def widen(op: Operand, shape: tuple[DimLike, ...]) -> Operand:
    if isinstance(op, View):
        return broadcast_view(op, shape)
    if isinstance(op, Lazy):
        return Lazy(op.value, tuple(widen(a, shape) for a in op.args))
    return op


def reshaped(op: Operand, shape: tuple[DimLike, ...]) -> Operand:
    """``op`` seen with unit axes added or dropped."""
    if isinstance(op, View):
        kept = iter([s for d, s in zip(op.shape, op.strides) if d != 1])
        strides = tuple(0 if d == 1 else next(kept) for d in shape)
        return View(op.buf, op.dtype, tuple(shape), strides, op.offset)
    if isinstance(op, Lazy):
        return Lazy(op.value, tuple(reshaped(a, shape) for a in op.args))
    return op


def emit(k: Kernel, s: Step) -> None:
    body = s.value.attrs["body"]
    if len(body.results) > 1:
        emit_siblings(k, s)
        return
    pattern = analyze(body.results[0], lambda x: x.op != "arg")
    assert isinstance(pattern, Pattern), pattern
    trees = Trees(k, {id(p): a for p, a in zip(body.params, s.args)})
    root = pattern.root
    if pattern.kind == "loop":
        emit_map(k, s.out, trees.at(root, root.shape))
    elif pattern.kind == "row":
        emit_rows(k, s, pattern, trees)
    elif pattern.kind == "reduce":
        emit_leading(k, s, pattern, trees)
    else:
        emit_gemm(k, s, pattern, trees)


def emit_rows(k: Kernel, s: Step, pattern: Pattern, trees: Trees) -> None:
    em = k.em
    space, n = pattern.space, len(pattern.space) - pattern.inner
    # an empty result needs no rows, however many there are (2**60 rows of 0 elements)
    with k.unless_empty(s.out.shape), em.loop_nest([k.dim(d) for d in space[:n]], "row") as outer:
        for f in pattern.reductions:
            x = trees.at(f.inputs[0], space)
            opdef = registry.get(f.op)
            start = em.const(reduce_identity(opdef.identity, f.dtype), reg_type(f.dtype))
            slot = em.alloca_entry(start.type, f"{f.op}.acc")
            k.b.store(start, slot)
            with em.loop_nest([k.dim(d) for d in space[n:]], f"{f.op}.") as inner:
                v = k.load(x, list(outer) + list(inner))
                k.b.store(combine(k, opdef.combine, k.b.load(slot, typ=start.type), v), slot)
            trees.leaves[id(f)] = Reg(slot, f.dtype)
        root = pattern.root
        if root.shape == space:
            tree = trees.at(root, space)
            with em.loop_nest([k.dim(d) for d in space[n:]], "out.") as inner:
                idx = list(outer) + list(inner)
                k.store(k.load(tree, idx), s.out, idx)
        else:
            idx = list(outer) + [ll.Constant(ll.IntType(64), 0)] * (root.type.rank - n)
            k.store(k.load(trees.at(root, root.shape), idx), s.out, idx)


def emit_leading(k: Kernel, s: Step, pattern: Pattern, trees: Trees) -> None:
    """A reduction over leading axes (its own loop order, accumulating in the output), then the
    epilogue over the output, read and written in place."""
    red = pattern.anchor
    assert red is not None
    x = trees.at(red.inputs[0], red.inputs[0].shape)
    opdef = registry.get(red.op)
    emit_reduce(k, Step(s.index, red, registry.REDUCE, s.out, (x,)), opdef.combine,
                opdef.identity)
    if pattern.root is not red:
        trees.leaves[id(red)] = s.out
        emit_map(k, s.out, trees.at(pattern.root, pattern.root.shape))


def emit_gemm(k: Kernel, s: Step, pattern: Pattern, trees: Trees) -> None:
    mm = pattern.anchor
    assert mm is not None
    a, b = (trees.at(x, x.shape) for x in mm.inputs)
    epi = None
    if pattern.root is not mm:
        trees.leaves[id(mm)] = Acc(mm.dtype)
        epi = trees.at(pattern.root, pattern.root.shape)
    emit_matmul(k, Step(s.index, mm, registry.MATMUL, s.out, (a, b)), epi)


# ---------------------------------------------------------------------------- several results


def emit_siblings(k: Kernel, s: Step) -> None:
    """A body of several results: the step writes ``s.out`` and the views after the inputs in
    ``s.args`` (all of them), or only its own result (a sibling scheduled alone)."""
    body = s.value.attrs["body"]
    pats = body_patterns(body)
    assert not isinstance(pats, str), pats
    n_in = len(body.params)
    outs = [s.out] + [a for a in s.args[n_in:] if isinstance(a, View)]
    if len(outs) != len(body.results):
        pats = (pats[s.value.attrs.get("result", 0)],)
    k.written.update(o.buf for o in outs)
    pairs = _in_place(k, s, outs)
    if not pairs:
        _emit_all(k, s, pats, outs)
        return
    b = k.b
    same = None
    for x, o in pairs:
        eq = b.icmp_unsigned("==", k.ptrs[x], k.ptrs[o])
        same = eq if same is None else b.and_(same, eq)
    saved = dict(k.ptrs)
    with b.if_else(same, likely=True) as (equal, apart):
        with equal:                     # each such input is read through its output's pointer
            k.ptrs.update({x: k.ptrs[o] for x, o in pairs})
            _emit_all(k, s, pats, outs)
            k.ptrs = dict(saved)
        with apart:                     # some are, some are not: pointers that may alias
            for x, o in pairs:
                k.ptrs[x] = b.select(b.icmp_unsigned("==", saved[x], saved[o]), saved[o],
                                     saved[x])
            _emit_all(k, s, pats, outs)
            k.ptrs = dict(saved)


def _in_place(k: Kernel, s: Step, outs: list[View]) -> list[tuple[int, int]]:
    """(input buffer, output buffer) for each output after the first that the plan writes over
    a param the kernel reads (the first: runtime/codegen.py's ``emit_versions``)."""
    plan = k.cg.plan
    names = {plan.func.params[plan.buffers[b].index].attrs["name"]: b for b in k.bufs
             if plan.buffers[b].kind == "param"}
    pairs = []
    for o in outs[1:]:
        bo = plan.buffers[o.buf]
        name = plan.inplace.get(bo.index) if bo.kind == "result" else None
        if name in names and names[name] in k.ptrs and o.buf in k.ptrs:
            pairs.append((names[name], o.buf))
    return pairs


def _emit_all(k: Kernel, s: Step, pats: tuple[Pattern, ...], outs: list[View]) -> None:
    body = s.value.attrs["body"]
    trees = Trees(k, {id(p): a for p, a in zip(body.params, s.args)})
    if pats[0].kind == "loop":
        emit_maps(k, outs, [trees.at(p.root, p.root.shape) for p in pats])
    else:
        emit_row_siblings(k, pats, outs, trees)


def emit_maps(k: Kernel, outs: list[View], exprs: list[Operand]) -> None:
    """outs[j][i] = exprs[j][i] over one shape: every value loaded before any is stored, so an
    output may be the memory of an input read at the same element."""
    vs = list(outs) + [v for e in exprs for v in leaves(e)]
    shape, merged = coalesce(outs[0].shape, vs)
    table = {id(a): m for a, m in zip(vs, merged)}
    trees = [map_views(e, table) for e in exprs]

    def body(kk: Kernel, lo: ll.Value | None = None, hi: ll.Value | None = None,
             _: list | None = None) -> None:
        part = None if lo is None or hi is None else (0, lo, hi)
        with kk.em.loop_nest([kk.dim(d) for d in shape], "e", part) as idx:
            memo: dict[int, ll.Value] = {}
            values = [kk.load(t, idx, memo) for t in trees]
            for value, out in zip(values, outs):
                kk.store(value, table[id(out)], idx)
    if not shape or not all(map(outlinable, trees)):
        body(k)
        return
    # as emit_map: a big loop split over threads along its first axis (runtime/pool.py)
    pool.split_loop(k, k.dim(shape[0]), k.dim(dim_prod(tuple(shape[1:]))), body,
                    align=64 if len(shape) == 1 else 1, name="maps")


def emit_row_siblings(k: Kernel, pats: tuple[Pattern, ...], outs: list[View], trees: Trees
                      ) -> None:
    """Row kernels over one space: per row, the reductions in as few inner loops as their
    dependences allow, then each result."""
    em = k.em
    space, n = pats[0].space, len(pats[0].space) - pats[0].inner
    folds = list({id(f): f for p in pats for f in p.reductions}.values())
    with k.unless_empty(space[:n]), em.loop_nest([k.dim(d) for d in space[:n]], "row") as outer:
        done: set[int] = set()
        while len(done) < len(folds):
            wave = [f for f in folds if id(f) not in done and _ready(f, folds, done)]
            slots = []
            for f in wave:
                opdef = registry.get(f.op)
                start = em.const(reduce_identity(opdef.identity, f.dtype), reg_type(f.dtype))
                slot = em.alloca_entry(start.type, f"{f.op}.acc")
                k.b.store(start, slot)
                slots.append((f, opdef, slot, start.type, trees.at(f.inputs[0], space)))
            with em.loop_nest([k.dim(d) for d in space[n:]], "fold.") as inner:
                memo: dict[int, ll.Value] = {}
                idx = list(outer) + list(inner)
                xs = [k.load(x, idx, memo) for *_, x in slots]
                for (f, opdef, slot, ty, _), x in zip(slots, xs):
                    k.b.store(combine(k, opdef.combine, k.b.load(slot, typ=ty), x), slot)
            for f, _, slot, _, _ in slots:
                trees.leaves[id(f)] = Reg(slot, f.dtype)
                done.add(id(f))
        whole = [(p, o) for p, o in zip(pats, outs) if p.root.shape == space]
        if whole:
            exprs = [trees.at(p.root, space) for p, _ in whole]
            with em.loop_nest([k.dim(d) for d in space[n:]], "out.") as inner:
                idx = list(outer) + list(inner)
                memo = {}
                values = [k.load(e, idx, memo) for e in exprs]
                for value, (_, o) in zip(values, whole):
                    k.store(value, o, idx)
        for p, o in zip(pats, outs):
            if p.root.shape != space:
                idx = list(outer) + [ll.Constant(ll.IntType(64), 0)] * (p.root.type.rank - n)
                k.store(k.load(trees.at(p.root, p.root.shape), idx), o, idx)


def _ready(f: Value, folds: list[Value], done: set[int]) -> bool:
    """Whether every reduction that ``f``'s input needs is already folded."""
    inside = {id(g) for g in folds}
    stack, seen = [f.inputs[0]], set()
    while stack:
        v = stack.pop()
        if id(v) in seen or v.op == "arg":
            continue
        seen.add(id(v))
        if id(v) in inside and id(v) not in done:
            return False
        stack.extend(v.inputs)
    return True
