"""Kernel shapes: which loop nest a region of values lowers as (``loop``, ``row``, ``reduce``,
``matmul`` or ``single``) or a sentence saying why none, and which of a kernel's inputs its result
may overwrite in place. The fusion pass asks ``analyze`` before growing a kernel and the backend
before lowering one, so the rules of what fuses live in one place. Apart from the ``fused`` op
(fused.py), which stores a kernel: these rules read any region of values, before a kernel exists."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphc.ir.core import Func, Value
from graphc.ir.ops.registry import ELEMENTWISE, REDUCE, get
from graphc.ir.types import DType, TensorType

LOOP_OPS = ("broadcast_to", "reshape", "const", "dim")   # fuse as elementwise ops do
FOLDS = ("add", "mul", "max", "min")              # reductions a kernel may hold


@dataclass(frozen=True)
class Pattern:
    """How a region of values lowers as one kernel."""
    kind: str                        # "loop" | "row" | "reduce" | "matmul" | "single"
    root: Value
    members: tuple[Value, ...]       # the region, inputs first (consts and dims included)
    anchor: Value | None = None      # the matmul, the reduction over leading axes, the lone op
    reductions: tuple[Value, ...] = ()   # row kernels: the folds, in order
    space: tuple[Any, ...] = ()      # row kernels: the shape each fold reads
    inner: int = 0                   # row kernels: how many trailing axes they fold


def role(v: Value) -> str:
    """"loop" (elementwise-like), "matmul", "fold" (a reduction by one of FOLDS) or "single"."""
    kind = get(v.op).kind
    if kind == ELEMENTWISE or (v.op in LOOP_OPS and (v.op != "reshape" or unit_reshape(v))):
        return "loop"
    if v.op == "matmul":
        return "matmul"
    if kind == REDUCE and get(v.op).combine in FOLDS:
        return "fold"
    return "single"


def unit_reshape(v: Value) -> bool:
    """A reshape that only adds or drops axes of static size 1 (no element moves)."""
    return [d for d in v.inputs[0].shape if d != 1] == [d for d in v.shape if d != 1]


def region(root: Value, inside: Callable[[Value], bool]) -> list[Value]:
    """``root`` and the values it reaches through ``inside`` values, inputs first."""
    order: list[Value] = []
    seen: set[int] = set()
    stack: list[tuple[Value, bool]] = [(root, False)]
    while stack:
        v, done = stack.pop()
        if done:
            order.append(v)
            continue
        if id(v) in seen:
            continue
        seen.add(id(v))
        stack.append((v, True))
        stack.extend((i, False) for i in reversed(v.inputs) if inside(i) and id(i) not in seen)
    return order


def analyze(root: Value, inside: Callable[[Value], bool]) -> Pattern | str:
    """The kernel shape of ``region(root, inside)``, or a sentence saying why it is none."""
    if root.op == "arg" or not inside(root):
        return Pattern("single", root, (root,), root)
    ms = region(root, inside)
    lone = [v for v in ms if role(v) == "single"]
    if lone:
        if lone == [root] and all(v.op == "const" for v in ms if v is not root):
            return Pattern("single", root, tuple(ms), root)
        return f"'{lone[0].op}' is lowered on its own"
    mms = [v for v in ms if role(v) == "matmul"]
    folds = [v for v in ms if role(v) == "fold"]
    if mms and folds:
        return "a matmul and a reduction need separate kernels"
    if len(mms) > 1:
        return "a kernel holds at most one matmul"
    if mms:
        return _matmul(root, ms, mms[0])
    if folds:
        return _folds(root, ms, folds)
    return Pattern("loop", root, tuple(ms))


# Growing a kernel one value at a time. Fusion adds a value only once all its users are in the
# kernel, so nothing in the kernel flows into it; for the common cases that fixes what ``analyze``
# would say of the grown region from the kernel's kind and anchor alone, without walking it again
# (a region walk per added value made fusing a chain of n values take n^2 steps).


def joined(kind: str, anchor: Value | None, v: Value) -> str | None:
    """The kind of a kernel of ``kind`` once ``v`` joins it, when that is certain without a new
    ``analyze``: an elementwise ``v`` upstream of everything in the kernel changes no fold's or
    epilogue's rule, unless it is an operand of the kernel's matmul."""
    if role(v) != "loop" or kind not in ("loop", "row", "reduce", "matmul"):
        return None
    if kind == "matmul" and (anchor is None or any(x is v for x in anchor.inputs)):
        return None
    return kind


def refused(kind: str, anchor: Value | None, v: Value) -> str | None:
    """Why ``v`` cannot join a kernel of ``kind`` (``analyze``'s sentence), when that is
    certain without a new ``analyze``."""
    if kind not in ("loop", "row", "reduce", "matmul"):
        return None
    r = role(v)
    if r == "single":
        return f"'{v.op}' is lowered on its own"
    if (r == "matmul" and kind in ("row", "reduce")) or (r == "fold" and kind == "matmul"):
        return "a matmul and a reduction need separate kernels"
    if r == "matmul" and kind == "matmul":
        return "a kernel holds at most one matmul"
    if kind == "matmul" and anchor is not None and any(x is v for x in anchor.inputs):
        return "a matmul reads each operand element many times, so its operands are materialized"
    return None


def _trailing(fold: Value) -> bool:
    r, axes = fold.inputs[0].type.rank, fold.attrs["axis"]
    return bool(axes == tuple(range(r - len(axes), r)))


def depends(ms: list[Value], on: list[Value]) -> set[int]:
    out = {id(v) for v in on}
    for v in ms:
        if any(id(i) in out for i in v.inputs):
            out.add(id(v))
    return out


def _matmul(root: Value, ms: list[Value], mm: Value) -> Pattern | str:
    inner = {id(v) for v in ms}
    if any(id(x) in inner and x.op != "const" for x in mm.inputs):
        return "a matmul reads each operand element many times, so its operands are materialized"
    if mm is not root and min(x.type.rank for x in mm.inputs) < 2:
        return "a matmul epilogue needs 2-D operands"
    if mm.shape != root.shape:
        return f"the epilogue changes the matmul's shape {mm.type} to {root.type}"
    after = depends(ms, [mm]) - {id(mm)}
    for v in ms:
        if id(v) in after and (role(v) != "loop" or get(v.op).kind != ELEMENTWISE
                               or v.shape != root.shape):
            return f"'{v.op}' after the matmul does not map its output tile to itself"
    return Pattern("matmul", root, tuple(ms), mm)


def _folds(root: Value, ms: list[Value], folds: list[Value]) -> Pattern | str:
    first = folds[0]
    space, axes = first.inputs[0].shape, first.attrs["axis"]
    same = all(f.inputs[0].shape == space and f.attrs["axis"] == axes for f in folds)
    if same and _trailing(first):
        return _rows(root, ms, folds, space, len(axes))
    if len(folds) > 1:
        return "reductions over different axes or shapes need separate kernels" if not same \
            else "only reductions over trailing axes share a kernel"
    after = depends(ms, folds) - {id(first)}
    for v in ms:
        if id(v) in after and (get(v.op).kind != ELEMENTWISE or v.shape != first.shape):
            return f"'{v.op}' after a reduction over leading axes must keep its shape"
    if root.dtype != first.dtype:
        return "an epilogue may not change the dtype of a reduction over leading axes"
    return Pattern("reduce", root, tuple(ms), first)


def _rows(root: Value, ms: list[Value], folds: list[Value], space: tuple[Any, ...], k: int
          ) -> Pattern | str:
    """Every value that depends on a fold lives on a row (the kept axes) or on the whole space,
    and reaches the root only by broadcasting along the folded axes."""
    lead = space[:len(space) - k]
    rows = (lead, lead + (1,) * k)
    dep = depends(ms, folds)
    for v in ms:
        if id(v) not in dep:
            continue
        if v.shape != space and v.shape not in rows:
            return f"'{v.op}' of {v.type} is neither a row nor the whole of {_shape(space)}"
        for u in v.inputs:
            if id(u) not in dep or role(v) == "fold":
                continue
            ok = (u.shape in (space, rows[1])) if v.shape == space else \
                (u.shape == v.shape or (v.op == "reshape" and u.shape in rows))
            if not ok:
                return f"'{v.op}' combines {u.type} with rows of {_shape(space)}"
    return Pattern("row", root, tuple(ms), None, tuple(folds), tuple(space), k)


def _shape(shape: tuple[Any, ...]) -> str:
    return str(TensorType(DType.f32, shape)).removeprefix("f32")


def same_index_inputs(body: Func, pattern: Pattern) -> tuple[int, ...]:
    """Inputs the kernel reads only at the element it writes, before writing it: its result may
    take their buffer (in place) when they die here."""
    if pattern.kind not in ("loop", "row", "matmul"):
        return ()
    spoiled = _spoiled(pattern, body.params)
    root = pattern.root
    return tuple(k for k, p in enumerate(body.params) if p.shape == root.shape
                 and p.dtype.itemsize == root.dtype.itemsize and id(p) not in spoiled)


def _spoiled(pattern: Pattern, params: tuple[Value, ...]) -> set[int]:
    """Members and ``params`` from which a read at another element than the one written is
    reachable: a matmul operand, a fold whose rows are not the output's, a non-elementwise op
    or one of another shape than the output, or a broadcast of what the value reaches. One
    sweep, users first, so asking for every input costs one walk of the kernel."""
    users: dict[int, list[Value]] = {}
    for v in pattern.members:
        for i in dict.fromkeys(v.inputs):
            users.setdefault(id(i), []).append(v)
    spoiled: set[int] = set()
    for v in list(reversed(pattern.members)) + list(params):
        for u in users.get(id(v), ()):
            if id(u) in spoiled or _reads_elsewhere(u, v, pattern):
                spoiled.add(id(v))
                break
    return spoiled


def _reads_elsewhere(u: Value, x: Value, pattern: Pattern) -> bool:
    """Whether ``u``, reading ``x``, reads it (or makes what it feeds read it) at an element
    other than the one the kernel writes."""
    root = pattern.root
    if u is pattern.anchor and pattern.kind == "matmul":
        return True                            # an operand: read for many outputs
    if role(u) == "fold" and pattern.kind == "row":
        return root.shape != pattern.space     # folds read row o while row o is computed
    return get(u.op).kind != ELEMENTWISE or u.shape != root.shape or x.shape != u.shape

