"""Loops and vector access over a kernel's operands (expression trees of views, ``Lazy`` values
and registers, runtime/plantypes.py): the loop nest that maps a tree over a view (split over the
worker pool when big), copies, a GEMM epilogue on a vector of the product, vector loads and
stores, and one step of a fold. The ``Kernel`` they emit into is runtime/kernel.py."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import llvmlite.ir as ll

from graphc.ir.types import DimLike, DType, dim_mul, dim_prod
from graphc.runtime import pool
from graphc.runtime.emit import I1, I32, I64, is_float, mem_type, reg_type
from graphc.runtime.kernel import Kernel, lower_elementwise, splat_at
from graphc.runtime.plantypes import Acc, Lazy, Operand, Reg, View, contiguous


def coalesce(shape: Sequence[DimLike], views: list[View]) -> tuple[list[DimLike], list[View]]:
    """Merge neighbouring axes that every view walks as one (fewer, longer loops vectorise)."""
    keep = [k for k, d in enumerate(shape) if d != 1]
    groups: list[list[int]] = []
    for k in keep:
        if groups and all(v.strides[groups[-1][-1]] == dim_mul(v.strides[k], shape[k])
                          for v in views):
            groups[-1].append(k)
        else:
            groups.append([k])
    new_shape = [dim_prod(tuple(shape[k] for k in g)) for g in groups]
    out = [View(v.buf, v.dtype, tuple(new_shape), tuple(v.strides[g[-1]] for g in groups),
                v.offset) for v in views]
    return new_shape, out


def map_views(op: Operand, views: dict[int, View], memo: dict[int, Operand] | None = None
              ) -> Operand:
    """``op`` with each view replaced from ``views``; shared subtrees stay shared."""
    if isinstance(op, View):
        return views[id(op)]
    if not isinstance(op, Lazy):
        return op
    memo = {} if memo is None else memo
    if id(op) not in memo:
        memo[id(op)] = Lazy(op.value, tuple(map_views(a, views, memo) for a in op.args))
    return memo[id(op)]


def leaves(op: Operand) -> list[View]:
    """The distinct views ``op`` reads, each once."""
    out: dict[int, View] = {}
    seen: set[int] = set()
    stack = [op]
    while stack:
        x = stack.pop()
        if isinstance(x, View):
            out.setdefault(id(x), x)
        elif isinstance(x, Lazy) and id(x) not in seen:
            seen.add(id(x))
            stack.extend(reversed(x.args))
    return list(out.values())


def emit_map(k: Kernel, out: View, expr: Operand) -> None:
    """out[i] = expr[i] over out's shape (expr's views aligned to it), axes coalesced; a big
    one split over threads along its first axis (runtime/pool.py)."""
    vs = [out] + leaves(expr)
    shape, merged = coalesce(out.shape, vs)
    table = {id(a): m for a, m in zip(vs, merged)}
    expr2 = map_views(expr, table)

    def body(kk: Kernel, idx: list[ll.Value]) -> None:
        kk.store(kk.load(expr2, idx), table[id(out)], idx)
    if not shape or not outlinable(expr):
        with k.em.loop_nest([k.dim(d) for d in shape], "e") as idx:
            body(k, idx)
        return
    split_nest(k, shape, body, name="map")


def split_nest(k: Kernel, shape: Sequence[DimLike], body: Callable[[Kernel, list], None], *,
               inner: DimLike = 1, always: bool = False, name: str = "rows") -> None:
    """``body(kk, idx)`` for every index of ``shape``, the indices independent of each other
    (each touches ``inner`` elements more), emitted with kernel ``kk``: in a build with
    threads, a big nest is split along axis 0 into tasks of the worker pool (``pool.split_loop``,
    which says what ``always`` does). A 1-D nest is split in whole vectors, the same ones as
    one loop over it has. For loop kernels and row kernels: a row kernel's rows are the
    nest and its per-row loops (``inner`` elements) are the body, with ``always`` (its
    reductions are vectorised, so each build must run the same code)."""
    rank = len(shape)
    shape = tuple(shape) if shape else (1,)          # no axes: one row (a full reduction)

    def part(kk: Kernel, lo: ll.Value, hi: ll.Value, _: list) -> None:
        with kk.em.loop_nest([kk.dim(d) for d in shape], name, (0, lo, hi)) as idx:
            body(kk, idx[:rank])
    work = dim_mul(dim_prod(shape), inner)
    if not always and isinstance(work, int) and work < pool.PARALLEL_WORK:
        # too small for the pool whatever the build: the loop in place, no function of its own
        part(k, ll.Constant(I64, 0), k.dim(shape[0]), [])
        return
    pool.split_loop(k, k.dim(shape[0]), k.dim(dim_mul(dim_prod(shape[1:]), inner)),
                    part, align=64 if rank == 1 and inner == 1 else 1, always=always,
                    name=name)


def outlinable(op: Operand) -> bool:
    """Whether ``op`` reads nothing from its kernel's own stack (a row kernel's per-row
    ``Reg`` or a matmul's ``Acc``), so a function of its own can compute it."""
    seen: set[int] = set()
    stack = [op]
    while stack:
        x = stack.pop()
        if isinstance(x, (Reg, Acc)):
            return False
        if isinstance(x, Lazy) and id(x) not in seen:
            seen.add(id(x))
            stack.extend(x.args)
    return True


def emit_copy(k: Kernel, out: View, src: Operand, shape: Sequence[DimLike]) -> None:
    """Copy ``src`` (any layout, shape ``shape``) in row-major order into contiguous ``out``."""
    flat = contiguous(out.buf, out.dtype, tuple(shape), out.offset)
    emit_map(k, flat, src)


def epilogue(k: Kernel, epi: Operand | None, acc: ll.Value, idx: Sequence[ll.Value],
             lanes: int = 0) -> ll.Value:
    """The epilogue's value at ``idx`` starting from the accumulator ``acc`` (a vector of
    ``lanes`` consecutive elements of the last axis when lanes > 0)."""
    if epi is None:
        return acc
    k.acc = acc
    return vload(k, epi, idx, lanes) if lanes else k.load(epi, idx)


def vload(k: Kernel, op: Operand, idx: Sequence[ll.Value], lanes: int,
          memo: dict[int, ll.Value] | None = None) -> ll.Value:
    """``op`` at ``lanes`` consecutive positions of the last axis from ``idx``, as a vector."""
    b = k.b
    if isinstance(op, Acc):
        assert k.acc is not None
        return k.acc
    still = k.invariant(op, lanes)
    if still is not None:
        return still
    if isinstance(op, Lazy):
        memo = {} if memo is None else memo
        if id(op) not in memo:
            if op.value.op == "dim":
                memo[id(op)] = splat(k, k.load(op, idx), lanes)
            else:
                memo[id(op)] = lower_elementwise(
                    k.em, op.value, [vload(k, a, idx, lanes, memo) for a in op.args])
        return memo[id(op)]
    if isinstance(op, Reg):
        return splat(k, k.load(op, idx), lanes)
    stride = op.strides[-1]
    if stride == 0:
        return splat(k, k.load(op, idx), lanes)
    if stride != 1:
        out = ll.Constant(ll.VectorType(reg_type(op.dtype), lanes), ll.Undefined)
        for j in range(lanes):
            at = list(idx[:-1]) + [b.add(idx[-1], ll.Constant(ll.IntType(64), j))]
            out = b.insert_element(out, k.load(op, at), ll.Constant(I32, j))
        return out
    vt = ll.VectorType(mem_type(op.dtype), lanes)
    v = b.load(k.address(op.buf, k.index(op, idx), vt), typ=vt, align=op.dtype.itemsize)
    return b.trunc(v, ll.VectorType(I1, lanes)) if op.dtype is DType.bool else v


def vstore(k: Kernel, value: ll.Value, out: View, idx: Sequence[ll.Value]) -> None:
    """Store a vector at ``idx`` and the next elements of ``out``'s (unit-stride) last axis."""
    mt = mem_type(out.dtype)
    if out.dtype is DType.bool:
        value = k.b.zext(value, ll.VectorType(mt, value.type.count))
    p = k.address(out.buf, k.index(out, idx), value.type)
    k.b.store(value, p, align=out.dtype.itemsize)


def splat(k: Kernel, x: ll.Value, lanes: int) -> ll.Value:
    return splat_at(k.b, x, lanes)


RFLAGS = ("reassoc", "contract")   # lets the vectoriser reorder float sums


def shape_of(op: Operand) -> tuple[DimLike, ...]:
    return op.shape if isinstance(op, View) else op.value.shape


def combine(k: Kernel, how: str, acc: ll.Value, x: ll.Value) -> ll.Value:
    """One step of a fold (argmax/argmin fold in ``kernels.emit_argreduce``)."""
    em = k.em
    if how == "add":
        return k.b.fadd(acc, x, flags=RFLAGS) if is_float(x.type) else k.b.add(acc, x)
    if how == "mul":
        return k.b.fmul(acc, x, flags=RFLAGS) if is_float(x.type) else k.b.mul(acc, x)
    if how not in ("max", "min"):
        raise ValueError(f"no lowering for the fold {how!r}")   # registry.COMBINES grew
    if not is_float(x.type):
        return em.maximum(acc, x) if how == "max" else em.minimum(acc, x)
    # IEEE maximum/minimum propagate NaN, as NumPy's max/min do, and vectorise as reductions
    return em.intrinsic("maximum" if how == "max" else "minimum", [acc, x])
