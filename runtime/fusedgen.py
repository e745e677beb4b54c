"""Lowers one ``fused`` kernel as the IR shows it: a loop kernel is one loop nest over its result;
a row kernel loops over the kept axes and, per row, runs one inner loop per reduction (results in
registers) and a last one for a whole-row result (softmax, cross-entropy and their gradients); a
reduction over leading axes accumulates, then applies its epilogue; a matmul applies its epilogue
to each output tile (vectors of accumulators) before storing it. Body values become expression
trees whose leaves are the inputs' views aligned to the iteration space."""
from __future__ import annotations

import llvmlite.ir as ll

from graphc.ir.core import Value
from graphc.ir.ops import registry
from graphc.ir.ops.fused import Pattern, analyze
from graphc.ir.ops.rules import reduce_identity
from graphc.ir.types import DimLike
from graphc.runtime.emit import reg_type
from graphc.runtime.kernel import Kernel, combine, emit_map
from graphc.runtime.kernels import emit_reduce
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
        if v.op == "reshape":           # adds or drops unit axes only (ll.ops.fused.role)
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
