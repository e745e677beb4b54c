"""``to_networkx`` gives one node per value and one edge per operand use, with the attributes the
IR dump shows; the graph helpers (``cone``, ``topological``, ``find_cycle``) agree with the IR."""
from __future__ import annotations

import functools

import networkx as nx
import pytest

import graphc
from graphc.ir import DType, Func, TensorType, Value, VerifyError, make
from graphc.ir.graphs import check_acyclic, cone, find_cycle, to_networkx, topological

MLP = """
graph mlp {
    input  x: f32[N, 4]
    input  y: f32[N, 3]
    param  W1: f32[4, 5] = glorot_uniform
    param  b1: f32[5]    = zeros
    param  W2: f32[5, 3] = glorot_uniform
    param  b2: f32[3]    = zeros
    h      = relu(x @ W1 + b1)
    logits = h @ W2 + b2
    loss   = mean(softmax_cross_entropy(logits, y))
    output loss, logits
    grad   loss
}
"""
F4 = TensorType(DType.f32, (4,))


@functools.cache
def mlp(opt_level: int) -> dict[str, Func]:
    return graphc.compile_source(MLP, backend="interp", opt_level=opt_level).optimized


def arg(name: str) -> Value:
    return make("arg", name=name, dtype=DType.f32, shape=(4,))


def funcs() -> list[tuple[int, str]]:
    return [(o, f) for o in (0, 2) for f in ("forward", "backward")]


@pytest.mark.parametrize("opt_level,name", funcs())
def test_one_node_per_value_one_edge_per_operand(opt_level: int, name: str) -> None:
    func = mlp(opt_level)[name]
    g = to_networkx(func)
    values = func.values()
    assert isinstance(g, nx.MultiDiGraph)
    assert list(g.nodes) == list(range(len(values)))
    assert g.number_of_edges() == sum(len(v.inputs) for v in values)
    assert nx.is_directed_acyclic_graph(g)
    for k, v in enumerate(values):
        d = g.nodes[k]
        assert d["value"] is v and d["op"] == v.op and d["type"] == str(v.type)
        assert d["dtype"] == str(v.dtype) and len(d["shape"]) == len(v.shape)
        assert d["loc"] == (None if v.loc is None else str(v.loc))
        ins = sorted((data["index"], u) for u, _, data in g.in_edges(k, data=True))
        assert ins == [(i, values.index(w)) for i, w in enumerate(v.inputs)]
        for u, _, data in g.in_edges(k, data=True):
            assert data["type"] == g.nodes[u]["type"]


@pytest.mark.parametrize("opt_level,name", funcs())
def test_networkx_topological_order_is_a_valid_value_order(opt_level: int, name: str) -> None:
    func = mlp(opt_level)[name]
    g = to_networkx(func)
    pos = {k: i for i, k in enumerate(nx.topological_sort(g))}
    values = func.values()
    for k, v in enumerate(values):
        assert all(pos[values.index(w)] < pos[k] for w in v.inputs)
    order = topological(func)
    assert {id(v) for v in order} == {id(v) for v in values} and len(order) == len(values)
    at = {id(v): i for i, v in enumerate(order)}
    assert all(at[id(w)] < at[id(v)] for v in order for w in v.inputs)


def test_args_results_and_labels_match_the_dump() -> None:
    func = mlp(2)["backward"]
    g = to_networkx(func)
    text = str(func)
    assert g.graph["name"] == func.name
    assert g.graph["params"] == ["x", "y", "W1", "b1", "W2", "b2"]
    assert g.graph["results"] == list(func.result_names)
    assert [g.nodes[k]["name"] for k in range(6)] == g.graph["params"]
    assert g.nodes[2]["label"] == "%W1 = arg" and g.nodes[2]["shape"] == (4, 5)
    assert g.nodes[0]["shape"] == ("N", 4) and g.nodes[0]["dtype"] == "f32"
    for k, d in g.nodes(data=True):
        if d["op"] != "arg":
            assert "name" not in d
            assert f"\n  {d['label']} " in text, d["label"]    # "%3 = fused" as the dump has it
    marked = {n: k for k, d in g.nodes(data=True) for n in d["result"]}
    assert sorted(marked) == sorted(func.result_names)
    for n, r in zip(func.result_names, func.results):
        assert g.nodes[marked[n]]["value"] is r


def test_fused_kernels_carry_their_body() -> None:
    g = to_networkx(mlp(2)["forward"])
    kernels = [d for _, d in g.nodes(data=True) if d["op"] == "fused"]
    assert kernels
    for d in kernels:
        body = d["value"].attrs["body"]
        assert d["body_ops"] == sum(1 for v in body.values() if v.op != "arg") > 0
        assert isinstance(d["body"], nx.MultiDiGraph) and d["body"].graph["name"] == body.name
        assert d["body"].number_of_nodes() == len(body.values())
        assert "body" not in d["attrs"] and "step" in d["attrs"]
    flat = to_networkx(mlp(2)["forward"], nested=False)
    assert all("body" not in d and d["body_ops"] > 0
               for _, d in flat.nodes(data=True) if d["op"] == "fused")


def test_a_value_used_twice_by_one_op_is_two_edges() -> None:
    x = arg("x")
    sq = x * x
    g = to_networkx(Func("sq", (x,), (sq,), ("y",)))
    assert g.number_of_nodes() == 2 and g.number_of_edges() == 2
    assert sorted(d["index"] for _, _, d in g.edges(data=True)) == [0, 1]
    assert set(g[0][1]) == {0, 1}                      # edge keys are the operand positions
    assert g.nodes[1]["label"] == "%0 = mul" and g.nodes[1]["result"] == ["y"]


def test_a_value_returned_twice_lists_both_names_and_unnamed_results_get_numbers() -> None:
    x = arg("x")
    g = to_networkx(Func("f", (x,), (x, x), ("a", "b")))
    assert g.nodes[0]["result"] == ["a", "b"]
    g = to_networkx(Func("f", (x,), (x + 1.0,)))
    assert g.graph["results"] == ["result0"] and g.nodes[2]["result"] == ["result0"]


def test_cone_is_the_ancestors_in_value_order() -> None:
    x, y = arg("x"), arg("y")
    a = make("exp", x)
    b = make("neg", y)
    c = a + x
    func = Func("f", (x, y), (c, b), ("c", "b"))
    assert cone(func, c) == [x, a, c]
    assert cone(func, "b") == [y, b]
    assert cone(func, "c", include_self=False) == [x, a]
    assert cone(func, 0) == [x]
    with pytest.raises(KeyError, match="no result 'z'"):
        cone(func, "z")
    with pytest.raises(KeyError, match="not a value"):
        cone(func, make("neg", x))


def test_cone_of_logits_leaves_out_what_only_the_loss_needs() -> None:
    func = mlp(0)["forward"]
    loss, logits = cone(func, "loss"), cone(func, "logits")
    args = {v.attrs.get("name") for v in loss if v.op == "arg"}
    assert args == {"x", "y", "W1", "b1", "W2", "b2"}
    assert {v.attrs.get("name") for v in logits if v.op == "arg"} == args - {"y"}
    assert {id(v) for v in logits} < {id(v) for v in loss}
    values = func.values()
    assert [values.index(v) for v in loss] == sorted(values.index(v) for v in loss)


def test_find_cycle_on_forced_ir_and_none_on_real_ir() -> None:
    assert find_cycle(mlp(2)["backward"]) is None
    check_acyclic(mlp(2)["backward"])
    x = arg("x")
    a = make("neg", x)
    b = make("exp", a)
    object.__setattr__(a, "inputs", (b,))            # forced: a needs b needs a
    func = Func("loop", (x,), (b,))
    cycle = find_cycle(func)
    assert cycle is not None and {id(v) for v in cycle} == {id(a), id(b)}
    with pytest.raises(VerifyError, match="cycle"):
        check_acyclic(func)


def test_model_to_networkx_names_the_function() -> None:
    import graphc
    m = graphc.compile_source("graph g {\n    input x: f32[N]\n    param w: f32[1]\n"
                              "    loss = sum(x * w)\n    output loss\n    grad loss\n}\n",
                              backend="interp")
    g = m.to_networkx("backward")
    assert {d["name"] for _, d in g.nodes(data=True) if d["op"] == "arg"} == {"x", "w"}
    with pytest.raises(graphc.GraphCallError, match="did you mean 'forward'"):
        m.to_networkx("froward")
