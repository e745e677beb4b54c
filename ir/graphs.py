"""A Func as a networkx graph, for analysis and plotting outside the compiler's hot paths.

The passes walk ``Value.inputs`` directly (fast, no copies); this module is for questions a graph
library answers well: what a value depends on (``cone``), whether hand-built IR has a cycle
(``find_cycle``, which ``Func.values()`` could not answer: its walk assumes a DAG), and any
algorithm a user wants to run on the exported ``networkx.MultiDiGraph``.
"""
from __future__ import annotations

from typing import Any

import networkx as nx

from graphc.ir.core import Func, Value
from graphc.ir.types import Dim, dim_str
from graphc.ir.verify import VerifyError


def to_networkx(func: Func, *, nested: bool = True) -> nx.MultiDiGraph:
    """One node per value of ``func`` and one edge per operand use.

    Node keys are ints, the value's position in ``func.values()`` (so a topological order; the
    params first). Node attributes: ``op``, ``type`` (str), ``shape`` (ints, symbolic dims as
    str), ``dtype`` (str), ``loc`` (str or None), ``label`` (``"%3 = matmul"``, numbered as the
    IR dump numbers it), ``name`` (the arg's name, args only), ``result`` (the result names the
    value is returned as; ``[]`` if none), ``attrs`` (the op's attributes but a fused kernel's
    body), ``value`` (the IR ``Value`` itself). A ``fused`` kernel also has ``body_ops`` (its
    body's op count, args excluded) and, with ``nested``, ``body``: its body as such a graph.

    Edges run operand -> user with key and attribute ``index`` (the operand position: ``x * x``
    is two edges, index 0 and 1) and ``type`` (the operand's type, str). Graph attributes:
    ``name``, ``params`` (arg names) and ``results`` (result names, ``result<i>`` if unnamed).
    """
    values = func.values()
    keys = {id(v): k for k, v in enumerate(values)}
    names = _dump_names(func, values)
    results = list(func.result_names) or [f"result{i}" for i in range(len(func.results))]
    returned: dict[int, list[str]] = {}
    for rname, r in zip(results, func.results):
        returned.setdefault(id(r), []).append(rname)

    g = nx.MultiDiGraph(name=func.name, results=results,
                        params=[str(p.attrs.get("name", f"arg{i}"))
                                for i, p in enumerate(func.params)])
    for k, v in enumerate(values):
        data: dict[str, Any] = {
            "op": v.op, "type": str(v.type), "shape": _shape(v), "dtype": str(v.dtype),
            "loc": None if v.loc is None else str(v.loc), "label": f"{names[id(v)]} = {v.op}",
            "result": returned.get(id(v), []),
            "attrs": {a: x for a, x in v.attrs.items if not isinstance(x, Func)}, "value": v}
        if v.op == "arg":
            data["name"] = str(v.attrs.get("name"))
        body = v.attrs.get("body")
        if isinstance(body, Func):
            data["body_ops"] = sum(1 for b in body.values() if b.op != "arg")
            if nested:
                data["body"] = to_networkx(body, nested=True)
        g.add_node(k, **data)
    for k, v in enumerate(values):
        for i, w in enumerate(v.inputs):
            g.add_edge(keys[id(w)], k, key=i, index=i, type=str(w.type))
    return g


def cone(func: Func, value: Value | int | str, *, include_self: bool = True) -> list[Value]:
    """The values ``value`` depends on (its ancestors), in ``func.values()`` order: what a slice,
    a recompute or a debugging dump of one result needs. ``value`` is a Value of ``func``, a node
    key of ``to_networkx(func)``, or a result name."""
    g = to_networkx(func, nested=False)
    key = _key(func, g, value)
    keep = nx.ancestors(g, key) | ({key} if include_self else set())
    return [g.nodes[k]["value"] for k in sorted(keep)]


def topological(func: Func) -> list[Value]:
    """The values in a topological order networkx finds (ties broken by ``func.values()``
    position): an independent check of the IR's own order, for tests and tools."""
    g = to_networkx(func, nested=False)
    return [g.nodes[k]["value"] for k in nx.lexicographical_topological_sort(g)]


def find_cycle(func: Func) -> list[Value] | None:
    """A cycle among the values reachable from ``func`` (each an input of the next, the last an
    input of the first), or None. Values are immutable, so only IR forced together with
    ``object.__setattr__`` has one; this walks by identity and never loops on one."""
    g = nx.DiGraph()
    seen: dict[int, Value] = {}
    todo = list(func.results) + list(func.params)
    while todo:
        v = todo.pop()
        if id(v) in seen:
            continue
        seen[id(v)] = v
        g.add_node(id(v))
        for w in v.inputs:
            g.add_edge(id(w), id(v))
            todo.append(w)
    try:
        edges = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        return None
    return [seen[a] for a, _ in edges]


def check_acyclic(func: Func) -> None:
    """Raise VerifyError naming the ops on a cycle, if ``func`` has one."""
    cycle = find_cycle(func)
    if cycle is not None:
        ops = " -> ".join(v.op for v in cycle + cycle[:1])
        raise VerifyError(f"{func.name}: the values form a cycle: {ops}", cycle[0].loc)


def _dump_names(func: Func, values: list[Value]) -> dict[int, str]:
    """``%name`` for params, ``%0, %1, ...`` for the rest: the numbering of ``print_func``."""
    names = {id(p): "%" + str(p.attrs.get("name", f"arg{i}")) for i, p in enumerate(func.params)}
    n = 0
    for v in values:
        if id(v) not in names:
            names[id(v)] = f"%{n}"
            n += 1
    return names


def _shape(v: Value) -> tuple[int | str, ...]:
    return tuple(dim_str(d) if isinstance(d, Dim) else d for d in v.shape)


def _key(func: Func, g: nx.MultiDiGraph, value: Value | int | str) -> int:
    if isinstance(value, Value):
        for k, data in g.nodes(data=True):
            if data["value"] is value:
                return k
        raise KeyError(f"{value!r} is not a value of {func.name}")
    if isinstance(value, str):
        for k, data in g.nodes(data=True):
            if value in data["result"]:
                return k
        raise KeyError(f"{func.name} has no result {value!r}; it has {g.graph['results']}")
    if value not in g:
        raise KeyError(f"{func.name} has no node {value}")
    return value
