"""Schedule the kernels to keep few bytes live and give every intermediate a slot in one arena,
reusing slots and writing in place where legal. Keeps: values, types, locs; adds to each kernel
its ``step``, and its arena ``slot`` and byte ``offset`` (or ``out``, the result it writes).
Sizes are polynomials in the symbolic dims, so the plan holds for every binding; the scheduler
(schedule.py) orders kernels by their sizes at a reference binding, and the slot allocator
(ir/slots.py) is shared with the runtime. The siblings of a multi-result kernel
(horizontal fusion) are one node of the schedule: one step writes all their buffers."""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

from graphc.ir.core import Attrs, Func, Value, toposort
from graphc.ir.ops.fused import PLAN_ATTRS, in_place_params, is_sibling, kernel_of
from graphc.ir.slots import Interval, Layout, allocate, at_ref, poly_max
from graphc.ir.types import DimLike, TensorType, dim_add, dim_eval, dim_mul, dim_str
from graphc.passes.kernelrules import is_view
from graphc.passes.rewrite import NoOptions, PassContext
from graphc.passes.schedule import schedule_sizes

# ---------------------------------------------------------------------------- the plan


def nbytes(v: Value) -> DimLike:
    return _type_bytes(v.type)


@functools.lru_cache(maxsize=1 << 16)
def _type_bytes(ty: TensorType) -> DimLike:
    return dim_mul(ty.size, ty.dtype.itemsize)


@dataclass(frozen=True)
class Plan:
    kernels: tuple[Value, ...]           # in program (topological) order; indices below
    order: tuple[int, ...]               # the schedule (siblings one after another)
    intervals: tuple[Interval, ...]      # arena buffers, keyed by kernel index
    layout: Layout
    outs: dict[int, int]                 # kernel index -> result index it writes
    inplace: dict[int, str]              # result kernel -> the param it may overwrite
    steps: dict[int, int] = field(default_factory=dict)   # kernel -> its step (siblings share)

    @property
    def peak(self) -> DimLike:
        return self.layout.peak


def storage(v: Value) -> Value:
    """The value whose buffer ``v`` reads: views resolve to what they view."""
    while is_view(v):
        v = v.inputs[0]
    return v


def ancestors(roots: tuple[Value, ...]) -> set[int]:
    """Ids of the ops ``roots`` depend on (themselves included; args and constants not)."""
    return {id(v) for v in toposort(roots) if v.op not in ("arg", "const")}


def saved_values(src: Func, fwd: set[int], roots: dict[int, str]) -> list[Value]:
    """Forward kernel outputs that some backward value reads (directly or through views)."""
    out: dict[int, Value] = {}
    for v in src.values():
        if id(v) in fwd:
            continue
        for i in v.inputs:
            s = storage(i)
            if id(s) in fwd and id(s) in roots:
                out.setdefault(id(s), s)
    return list(out.values())


def kernels_of(func: Func) -> list[Value] | None:
    """The kernels in topological order, or None when some op outside them needs a buffer."""
    out = []
    for v in func.values():
        if v.op == "fused":
            out.append(v)
        elif v.op not in ("arg", "const") and not is_view(v):
            return None
    return out


# A staged update is written to the workspace and copied into the param on every call (a
# write, a read and a write of its bytes), where a larger peak only reserves memory: at B=1 the
# MLP step spent 10% of its time copying W2 and W3 back (54 -> 46 us with them in place)
STAGING_COST = 4


def plan(func: Func) -> Plan | None:
    """Schedule, lifetimes and slots of ``func``'s kernels (None if it is not partitioned).
    Updates of params (``p - lr * g``) may write over the caller's array of ``p`` when they run
    after every other reader of ``p``; each is held back that way only if this saves more than
    it adds to the peak, a staged byte counting STAGING_COST bytes of peak."""
    kernels = kernels_of(func)
    if kernels is None:
        return None
    g = _Graph(func, kernels)
    best = g.plan({})
    edges: dict[int, set[int]] = {}
    for n, p in g.updates.items():
        if n in best.inplace:        # already overwrites p: holding it back saves nothing
            continue
        trial = {**edges, n: g.readers_first(n, p)}
        got = g.plan(trial)
        if g.cost(got) < g.cost(best):
            best, edges = got, trial
    return best


class _Graph:
    """The facts about a partitioned function that every candidate schedule shares."""

    def __init__(self, func: Func, kernels: list[Value]):
        self.kernels = kernels
        index = {id(k): n for n, k in enumerate(kernels)}
        self.outs: dict[int, int] = {}
        for r, res in enumerate(func.results):
            if id(res) in index:
                self.outs.setdefault(index[id(res)], r)
        self.keep = {index[id(storage(r))] for r in func.results
                     if id(storage(r)) in index and storage(r) is not r}
        self.reads = [[index[id(storage(i))] for i in dict.fromkeys(k.inputs)
                       if id(storage(i)) in index] for k in kernels]
        self.inputs_in_place = [in_place_inputs(k) for k in kernels]
        self.same = [[index[id(x)] for x in xs if id(x) in index] for xs in self.inputs_in_place]
        self.updates = _param_updates(func, kernels, self.outs, self.inputs_in_place)
        self.param_readers = _param_readers(kernels, self.updates)
        self.users: list[list[int]] = [[] for _ in kernels]
        for n, rs in enumerate(self.reads):
            for u in dict.fromkeys(rs):
                self.users[u].append(n)
        # schedule nodes: a kernel, or the siblings of one multi-result kernel
        first: dict[tuple, int] = {}
        self.node = [first.setdefault(kernel_of(k), n) if is_sibling(k) else n
                     for n, k in enumerate(kernels)]
        self.members: dict[int, list[int]] = {}
        for n, m in enumerate(self.node):
            self.members.setdefault(m, []).append(n)
        self.nodes = sorted(self.members)
        self.at = {m: k for k, m in enumerate(self.nodes)}
        self.node_facts = self._node_facts()
        # per param an update may overwrite: the nodes that read it; per update, whether its
        # siblings (one loop nest with it) read that param only at the element written
        self.reader_nodes = {pid: list(dict.fromkeys(self.node[j] for j in js))
                             for pid, js in self.param_readers.items()}
        same_ids = [{id(x) for x in xs} for xs in self.inputs_in_place]
        self.siblings_agree = {
            n: all(id(p) in same_ids[j] for j in self.param_readers[id(p)]
                   if j != n and self.node[j] == self.node[n]) for n, p in self.updates.items()}

    def readers_first(self, n: int, p: Value) -> set[int]:
        """The other readers of param ``p`` that update ``n`` may wait for (those that do not
        depend on ``n``), as schedule nodes (a node is named by its first kernel)."""
        after_n, stack = {n}, [n]
        while stack:
            for u in self.users[stack.pop()]:
                if u not in after_n:
                    after_n.add(u)
                    stack.append(u)
        return {m for m in self.reader_nodes[id(p)] if m != self.node[n]
                and not any(j in after_n for j in self.members[m])}

    def _node_facts(self) -> tuple:
        """Sizes, reads, in-place candidates, results and kept buffers of the schedule's
        nodes (a node: a kernel, or the siblings that one step runs)."""
        kernels, node, at = self.kernels, self.node, self.at
        size, reads, same = [], [], []
        for m in self.nodes:
            ms = self.members[m]
            size.append(sum(at_ref(nbytes(kernels[n])) for n in ms if n not in self.outs))
            reads.append([at[node[u]] for n in ms for u in self.reads[n] if node[u] != m])
            same.append([at[node[u]] for u in self.same[m]] if len(ms) == 1 else [])
        outs = {at[m] for m in self.nodes if all(n in self.outs for n in self.members[m])}
        keep = {at[node[n]] for n in self.keep}
        return size, reads, same, outs, keep

    def schedule(self, after: dict[int, set[int]]) -> list[int]:
        """The nodes in schedule order (a node is named by its first kernel)."""
        at, node = self.at, self.node
        soft = {at[node[n]]: {at[node[j]] for j in js} for n, js in after.items()}
        return [self.nodes[k] for k in schedule_sizes(*self.node_facts, soft)]

    def cost(self, p: Plan) -> int:
        return at_ref(p.peak) + STAGING_COST * sum(at_ref(nbytes(self.kernels[n]))
                                                   for n in self.updates if n not in p.inplace)

    def plan(self, after: dict[int, set[int]]) -> Plan:
        kernels, reads, same, outs, keep = self.kernels, self.reads, self.same, self.outs, \
            self.keep
        order = self.schedule(after)
        step = {n: t for t, m in enumerate(order) for n in self.members[m]}
        last = {n: step[n] for n in range(len(kernels))}
        for n, rs in enumerate(reads):
            for u in rs:
                last[u] = max(last[u], step[n])
        for n in keep:
            last[n] = len(kernels)
        intervals, taken = [], set()
        for n in sorted(range(len(kernels)), key=lambda n: step[n]):
            if n in outs:
                continue
            # a sibling never writes over an input: its loop nest writes several buffers
            alone = len(self.members[self.node[n]]) == 1
            takes = next((u for u in same[n] if alone and u not in outs and u not in keep
                          and u not in taken and last[u] == step[n]), None)
            if takes is not None:
                taken.add(takes)
            intervals.append(Interval(n, nbytes(kernels[n]), kernels[n].dtype.itemsize,
                                      step[n], last[n], takes))
        inplace = {n: p.attrs["name"] for n, p in self.updates.items()
                   if self.siblings_agree[n] and all(step[m] < step[n] for m in
                                                     self.reader_nodes[id(p)]
                                                     if m != self.node[n])}
        return Plan(tuple(kernels), tuple(n for m in order for n in self.members[m]),
                    tuple(intervals), allocate(intervals), outs, inplace, step)


def _param_readers(kernels: list[Value], updates: dict[int, Value]) -> dict[int, list[int]]:
    """For each param that an update may overwrite, the kernels that read it (through views
    too), in order."""
    out: dict[int, list[int]] = {id(p): [] for p in updates.values()}
    for j, k in enumerate(kernels):
        for s in dict.fromkeys(id(storage(i)) for i in k.inputs):
            if s in out:
                out[s].append(j)
    return out


def _param_updates(func: Func, kernels: list[Value], outs: dict[int, int],
                   inputs_in_place: list[list[Value]]) -> dict[int, Value]:
    """Result kernels that read a param only at the element they write (``p - lr * g``): they
    may write over the caller's array of that param, if nothing reads it later."""
    returned = {id(storage(r)) for r in func.results}
    out: dict[int, Value] = {}
    for n in outs:
        name = func.result_names[outs[n]] if func.result_names else None
        legal = [p for p in inputs_in_place[n] if p.op == "arg"
                 and id(p) not in returned and p not in out.values()]
        legal.sort(key=lambda p: p.attrs["name"] != name)     # sgd_step names it after p
        if legal:
            out[n] = legal[0]
    return out


def in_place_inputs(k: Value) -> list[Value]:
    """The inputs of kernel ``k`` whose buffer its result may overwrite: the body reads them
    only at the element it writes (``same_index_inputs``), and ``k`` reads that buffer through
    no other input. A transposed, sliced or broadcast view of it is read at other elements,
    some already overwritten, whether it feeds a matmul operand or the elementwise part."""
    positions = in_place_params(k.attrs["body"], k.attrs.get("result", 0))
    if not positions:
        return []
    readers: dict[int, int] = {}                # buffer -> how many distinct inputs read it
    for i in dict.fromkeys(k.inputs):
        readers[id(storage(i))] = readers.get(id(storage(i)), 0) + 1
    out: dict[int, Value] = {}
    for pos in positions:
        x = k.inputs[pos]
        if storage(x) is x and readers[id(x)] == 1:
            out.setdefault(id(x), x)
    return list(out.values())


def run(func: Func, ctx: PassContext | None = None, options: NoOptions | None = None) -> Func:
    p = plan(func)
    if p is None:
        return func
    attrs: dict[int, dict[str, object]] = {}
    kernels = p.kernels
    for n in p.order:
        attrs[id(kernels[n])] = {"step": p.steps[n]}
    for n, r in p.outs.items():
        attrs[id(kernels[n])]["out"] = r
    for n, name in p.inplace.items():
        attrs[id(kernels[n])]["inplace"] = name
    for iv in p.intervals:
        attrs[id(kernels[iv.key])].update(slot=p.layout.slot_of[iv.key],
                                          offset=p.layout.offsets[iv.key])
    new: dict[int, Value] = {}
    for v in func.values():
        ins = tuple(new.get(id(i), i) for i in v.inputs)
        if id(v) in attrs:
            # what make("fused", ...) would build: the same body over inputs of the same types
            # (so the same ``syms``), plus the plan's attrs; made directly, as make would
            # only work the body's symbols out again
            a = {k: x for k, x in v.attrs.items if k not in PLAN_ATTRS}
            a.update(attrs[id(v)])
            new[id(v)] = Value("fused", ins, v.type, Attrs.of(a), v.loc)
        elif any(a is not b for a, b in zip(ins, v.inputs)):
            new[id(v)] = Value(v.op, ins, v.type, v.attrs, v.loc)
    return Func(func.name, func.params, tuple(new.get(id(r), r) for r in func.results),
                func.result_names)

# ---------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class BufferRow:
    """One kernel's result, as the plan in the IR places it."""
    name: str                      # its number in the printed IR and its kernel, "%3 row.sum"
    size: int                      # bytes at the binding
    size_formula: str
    lifetime: tuple[int, int]      # (step that writes it, last step that reads it)
    slot: int | None               # arena slot; None: written to the caller's result array
    offset: int | None             # byte offset in the arena at the binding
    out: int | None                # the result it is, if any


@dataclass(frozen=True)
class Report:
    """``Model.memory_plan``: the arena's peak, every kernel's buffer, what backward keeps."""
    func: str
    dims: dict[str, int]
    peak_bytes: int                # the arena the runtime allocates for this binding
    peak_formula: str              # the same as a polynomial in the dims
    buffers: tuple[BufferRow, ...]  # in schedule order
    saved: tuple[BufferRow, ...]   # forward kernel outputs that the backward reads

    @property
    def kernels(self) -> int:
        return len(self.buffers)

    def __str__(self) -> str:
        env = ", ".join(f"{k}={n}" for k, n in sorted(self.dims.items()))
        lines = [(f"memory plan of {self.func} ({env}): arena {self.peak_bytes} bytes "
                  f"= {self.peak_formula}, {self.kernels} kernels"),
                 f"  {'buffer':<22}{'bytes':>12}  {'formula':<14}{'steps':>8}  where"]
        for b in self.buffers:
            where = f"slot {b.slot} @ {b.offset}" if b.slot is not None else f"result {b.out}"
            lines.append(f"  {b.name:<22}{b.size:>12}  {b.size_formula:<14}"
                         f"{b.lifetime[0]:>4}-{b.lifetime[1]:<3}  {where}")
        lines.append("  saved for backward: " + (", ".join(b.name for b in self.saved) or "-"))
        return "\n".join(lines)


def report(func: Func, dims: Mapping[str, int], forward: int | None = None) -> Report:
    """Read the plan the memplan pass wrote into ``func`` and evaluate it at ``dims``; the first
    ``forward`` results are the forward's (for the list of values saved for backward)."""
    values = func.values()
    kernels = [v for v in values if v.op == "fused"]
    if not kernels or any("step" not in k.attrs for k in kernels):
        raise ValueError("the function has no memory plan (run the fusion and memplan passes)")
    names: dict[int, str] = {}
    for v in values:
        if v.op != "arg":
            names[id(v)] = f"%{len(names)}"
    env = dict(dims)
    order = sorted(kernels, key=lambda k: k.attrs["step"])
    last = {id(k): k.attrs["step"] for k in kernels}
    for k in kernels:
        for i in k.inputs:
            s = storage(i)
            if id(s) in last:
                last[id(s)] = max(last[id(s)], k.attrs["step"])
    for r in func.results:
        if id(storage(r)) in last and storage(r) is not r:
            last[id(storage(r))] = len(kernels)
    rows = {}
    for k in order:
        off = k.attrs.get("offset")
        rows[id(k)] = BufferRow(f"{names[id(k)]} {k.attrs['body'].name}",
                                dim_eval(nbytes(k), env), dim_str(nbytes(k)),
                                (k.attrs["step"], last[id(k)]), k.attrs.get("slot"),
                                None if off is None else dim_eval(off, env), k.attrs.get("out"))
    peak = poly_max([dim_add(k.attrs["offset"], nbytes(k)) for k in kernels
                     if "offset" in k.attrs])
    saved: list[BufferRow] = []
    if forward is not None:
        fwd = ancestors(func.results[:forward])
        saved = [rows[id(v)] for v in saved_values(func, fwd, {id(k): "" for k in kernels})]
    return Report(func.name, env, max(0, dim_eval(peak, env)), dim_str(peak),
                  tuple(rows[id(k)] for k in order), tuple(saved))
