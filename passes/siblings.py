"""Horizontal fusion of a partitioned function: loop kernels over one shape (or row kernels over
one space) that read a common operand of that shape, and neither of which depends on the other,
become one kernel with a body of several results (``ir.ops.fused``: each result a sibling
``fused`` value), so that the operand is read once: an optimiser's update of a param and of its
state, the norm and the non-finite count of one gradient."""
from __future__ import annotations

from collections.abc import Callable, Hashable

from graphc.ir.core import Func, Value, make, rebuild
from graphc.ir.ops import registry
from graphc.ir.ops.fused import merge_bodies, result_pattern, sibling_key
from graphc.ir.ops.kernelshape import Pattern
from graphc.passes.kernelrules import (
    MAX_INPUTS,
    MAX_MEMBERS,
    MAX_REDUCTIONS,
    allowed,
    is_view,
    param_name,
    reduces,
)
from graphc.passes.rewrite import Counter

# horizontal fusion tries at most this many groups (the latest) that read an operand: a scalar
# that thousands of kernels read (a learning rate) would make trying them all n^2 work
MAX_CANDIDATES = 4
# at most this many results in one kernel: each is a value of its own that carries the whole
# body, so passes and checks that visit bodies do work that grows with results times body
MAX_SIBLINGS = 4


def siblings(func: Func, counter: Counter | None = None) -> Func:
    """Horizontal fusion of a partitioned function: kernels that ``sibling_key`` says share an
    iteration space and read a common operand of that shape join one multi-result kernel, if
    neither depends on the other (and no group would depend on itself through others)."""
    values = func.values()
    kernels = [v for v in values if v.op == "fused"]
    index = {id(k): n for n, k in enumerate(kernels)}
    above: dict[int, int] = {}                    # value -> bitset of the kernels it needs
    for v in values:
        acc = 0
        for i in v.inputs:
            acc |= above.get(id(i), 0) | (1 << index[id(i)] if id(i) in index else 0)
        above[id(v)] = acc
    groups: list[list[int]] = []
    group_of: dict[int, int] = {}
    by_operand: dict[tuple[int, tuple[object, ...]], list[int]] = {}   # (operand, key) -> groups
    for n, k in enumerate(kernels):
        key = _sibling_key(k)
        if key is None:
            continue
        space = key[1]
        operands = [i for i in dict.fromkeys(k.inputs) if i.op != "const" and i.shape == space]
        for x in operands:
            for g in by_operand.get((id(x), key), [])[-MAX_CANDIDATES:]:
                sizes = [_size(kernels[m]) for m in groups[g] + [n]]
                if len(sizes) <= MAX_SIBLINGS and sum(a for a, _ in sizes) <= MAX_MEMBERS and \
                        sum(r for _, r in sizes) <= MAX_REDUCTIONS and \
                        len({id(i) for m in groups[g] + [n] for i in kernels[m].inputs}
                            ) <= MAX_INPUTS and \
                        _may_join(groups[g], n, kernels, above, index):
                    groups[g].append(n)
                    group_of[n] = g
                    break
            if n in group_of:
                break
        if n not in group_of:
            group_of[n] = len(groups)
            groups.append([n])
        for x in operands:
            gs = by_operand.setdefault((id(x), key), [])
            if group_of[n] not in gs:
                gs.append(group_of[n])
    multi = [g for g in groups if len(g) > 1]
    if not multi or not _acyclic(kernels, groups, group_of, index):
        return func
    new: dict[int, Value] = {}
    merged: dict[Hashable, Func] = {}          # alike groups (an unrolled loop's) share one
    for g in multi:
        members = [kernels[n] for n in g]
        union = list(dict.fromkeys(x for m in members for x in m.inputs))
        at = {id(x): k for k, x in enumerate(union)}
        key = (tuple(id(m.attrs["body"]) for m in members),
               tuple(tuple(at[id(x)] for x in m.inputs) for m in members),
               tuple(x.attrs["name"] if x.op == "arg" else None for x in union))
        if key in merged:
            body, ins = merged[key], tuple(union)
        else:
            body, ins = merge_bodies(f"{members[0].attrs['body'].name}.x{len(members)}",
                                     [m.attrs["body"] for m in members],
                                     [m.inputs for m in members], _arg_maker())
            merged[key] = body
        if sum(1 for v in body.values() if v.op != "arg") > MAX_MEMBERS:
            continue
        made = [make("fused", *ins, body=body, result=r, loc=m.loc)
                for r, m in enumerate(members)]
        if not allowed(counter, members[0], made[0]):
            continue
        new.update({id(m): x for m, x in zip(members, made)})
    if not new:
        return func
    return _rebuilt(func, new)


def _rebuilt(func: Func, new: dict[int, Value]) -> Func:
    """``func`` with kernels replaced by ``new`` ones (over other inputs, to be rebuilt too)."""
    done: dict[int, Value] = {}
    for root in func.params + func.results:
        stack = [root]
        while stack:
            v = stack[-1]
            if id(v) in done:
                stack.pop()
                continue
            src = new.get(id(v), v)
            todo = [i for i in src.inputs if id(i) not in done]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            ins = tuple(done[id(i)] for i in src.inputs)
            done[id(v)] = make("fused", *ins, loc=src.loc, **src.attrs.as_dict()) \
                if id(v) in new else rebuild(v, ins)
    return Func(func.name, tuple(done[id(p)] for p in func.params),
                tuple(done[id(r)] for r in func.results), func.result_names)


def _sibling_key(k: Value) -> tuple[object, ...] | None:
    body = k.attrs["body"]
    if len(body.results) != 1 or registry.has(body.results[0].op, registry.ACCUMULATES):
        return None
    pattern = result_pattern(body)
    if not isinstance(pattern, Pattern):
        return None
    # row kernels share a loop nest only as whole reductions (a gradient's norm and its count
    # of non-finite elements): kernels over rows keep their rows as the parallel axis
    if pattern.kind == "row" and (len(pattern.space) != pattern.inner or
                                  len(pattern.reductions) >= MAX_REDUCTIONS):
        return None
    return sibling_key(pattern)


def _size(k: Value) -> tuple[int, int]:
    """(ops, reductions) of a kernel's body."""
    vs = [v for v in k.attrs["body"].values() if v.op != "arg"]
    return len(vs), sum(map(reduces, vs))


def _may_join(group: list[int], n: int, kernels: list[Value], above: dict[int, int],
              index: dict[int, int]) -> bool:
    """Whether kernel ``n`` is independent of every member of ``group``."""
    me = above[id(kernels[n])]
    return all(not (me >> m) & 1 and not (above[id(kernels[m])] >> n) & 1 for m in group)


def _acyclic(kernels: list[Value], groups: list[list[int]], group_of: dict[int, int],
             index: dict[int, int]) -> bool:
    """Whether the groups, as nodes, still form a DAG (two groups could need each other)."""
    def node(n: int) -> int:
        return group_of.get(n, len(groups) + n)
    edges: dict[int, set[int]] = {}
    for n, k in enumerate(kernels):
        for i in k.inputs:
            src = _producer(i, index)
            if src is not None and node(src) != node(n):
                edges.setdefault(node(src), set()).add(node(n))
    state: dict[int, int] = {}                 # 1: on the path, 2: finished
    for start in list(edges):
        if state.get(start):
            continue
        state[start] = 1
        stack = [(start, iter(edges.get(start, ())))]
        while stack:
            at, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[at] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return False
            elif not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(edges.get(nxt, ()))))
    return True


def _producer(v: Value, index: dict[int, int]) -> int | None:
    """The kernel whose buffer ``v`` is (through views), if any."""
    while v.op != "fused" and is_view(v):
        v = v.inputs[0]
    return index.get(id(v))


def _arg_maker() -> Callable[[Value, int], Value]:
    names: set[str] = set()

    def arg(x: Value, k: int) -> Value:
        return make("arg", name=param_name(x, k, names), dtype=x.dtype, shape=x.shape)
    return arg
