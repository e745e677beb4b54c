"""Elaboration of the language reference's examples into IR, checked against NumPy on the
interpreter: the mlp, fns with several results, consts, for-unrolling (an RNN, truncated BPTT),
symbolic dims bound to different sizes, weak literals, keyword arguments and source locations."""
from __future__ import annotations

import numpy as np
import pytest

from graphc.ir.core import Func
from graphc.ir.types import Dim, DType, TensorType
from tests.frontend.util import graph, run

MLP = """\
# mlp.graph: a two-layer classifier
const HIDDEN = 256

fn dense(x, W, b) {
    return x @ W + b
}

graph mlp {
    input  x: f32[N, 784]                 # N is a symbolic dim, bound at call time
    input  y: f32[N, 10]                  # one-hot labels
    param  W1: f32[784, HIDDEN] = glorot_uniform
    param  b1: f32[HIDDEN]      = zeros
    param  W2: f32[HIDDEN, 10]  = glorot_uniform
    param  b2: f32[10]          = zeros

    h      = relu(dense(x, W1, b1))
    logits = dense(h, W2, b2)
    loss   = mean(softmax_cross_entropy(logits, y))

    output loss, logits
    grad   loss                           # backward for all params; or: grad loss wrt W1, x
}
"""


def mlp_numpy(a: dict[str, np.ndarray]) -> tuple[float, np.ndarray]:
    h = np.maximum(a["x"] @ a["W1"] + a["b1"], 0)
    logits = h @ a["W2"] + a["b2"]
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-(a["y"] * logp).sum(axis=1).mean()), logits


@pytest.mark.parametrize("n", [5, 2])              # one elaboration serves every N
def test_mlp_from_spec_matches_numpy(n: int) -> None:
    g = graph(MLP)
    rng = np.random.default_rng(n)
    a = {"x": rng.normal(size=(n, 784)), "y": np.eye(10)[rng.integers(0, 10, n)],
         "W1": rng.normal(size=(784, 256)) * 0.05, "b1": rng.normal(size=256),
         "W2": rng.normal(size=(256, 10)) * 0.05, "b2": rng.normal(size=10)}
    a = {k: v.astype(np.float32) for k, v in a.items()}
    loss, logits = run(MLP, **a).values()
    want_loss, want_logits = mlp_numpy(a)
    np.testing.assert_allclose(logits, want_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-4)
    assert g.name == "mlp" and g.filename == "t.graph" and g.source == MLP
    assert [d.name for d in g.inputs] == ["x", "y"]
    assert [(d.name, str(d.type), d.init and d.init.name) for d in g.params] == [
        ("W1", "f32[784,256]", "glorot_uniform"), ("b1", "f32[256]", "zeros"),
        ("W2", "f32[256,10]", "glorot_uniform"), ("b2", "f32[10]", "zeros")]
    f = g.forward
    assert isinstance(f, Func) and f.name == "mlp.forward"
    assert [p.attrs["name"] for p in f.params] == ["x", "y", "W1", "b1", "W2", "b2"]
    assert f.params[0].type == TensorType(DType.f32, (Dim.sym("N"), 784))
    assert f.result_names == ("loss", "logits") and f.results[0].type == TensorType(DType.f32)
    assert g.grad is not None and g.grad.wrt == ("W1", "b1", "W2", "b2")
    assert g.grad.target is f.results[0] and (g.grad.loc.line, g.grad.loc.col) == (21, 5)
    assert dict(g.consts) == {"HIDDEN": 256}


def test_inlined_ops_carry_their_fn_line_and_the_call_site() -> None:
    f = graph(MLP).forward
    matmuls = [v for v in f.values() if v.op == "matmul"]
    assert [str(v.loc) for v in matmuls] == ["t.graph:5:14 <- t.graph:16:19",
                                            "t.graph:5:14 <- t.graph:17:14"]
    relu, = (v for v in f.values() if v.op == "relu")
    assert str(relu.loc) == "t.graph:16:14"
    # a composite's primitives all point at the call that wrote it
    assert {str(v.loc) for v in f.values() if v.op in ("exp", "log", "max")} == \
        {"t.graph:18:19"}


def test_nested_fns_keep_the_whole_call_chain() -> None:
    src = """fn inner(x) { return exp(x) }
fn outer(x) {
    return inner(x) * 2
}
graph g { input x: f32[3]; output y = outer(x) }"""
    e, = (v for v in graph(src).forward.values() if v.op == "exp")
    assert str(e.loc) == "t.graph:1:22 <- t.graph:3:12 <- t.graph:5:39"


RNN = """\
const T = 4
const H = 3

fn cell(x, h, c, W, U) {
    # a toy LSTM-like cell with two results
    gate = sigmoid(x @ W + h @ U)
    c = gate * c + (1 - gate) * tanh(x @ W)
    return gate * tanh(c), c
}

graph rnn {
    input  xs: f64[T, N, 2]
    param  W: f64[2, H]
    param  U: f64[H, H]
    h = zeros([N, H], f64); c = h
    for t in 0..T {
        h, c = cell(xs[t], h, c, W, U)
        back = xs[T - 1 - t]                # compile-time index arithmetic
    }
    output h, c, back
}
"""


def rnn_numpy(xs: np.ndarray, W: np.ndarray, U: np.ndarray) -> tuple[np.ndarray, ...]:
    h = c = np.zeros((xs.shape[1], W.shape[1]))
    for x in xs:
        gate = 1 / (1 + np.exp(-(x @ W + h @ U)))
        c = gate * c + (1 - gate) * np.tanh(x @ W)
        h = gate * np.tanh(c)
    return h, c


@pytest.mark.parametrize("n", [1, 3])
def test_rnn_unrolls_with_loop_carried_names(n: int) -> None:
    rng = np.random.default_rng(0)
    xs, W, U = rng.normal(size=(4, n, 2)), rng.normal(size=(2, 3)), rng.normal(size=(3, 3))
    out = run(RNN, xs=xs, W=W, U=U)
    h, c = rnn_numpy(xs, W, U)
    np.testing.assert_allclose(out["h"], h, rtol=1e-12)
    np.testing.assert_allclose(out["c"], c, rtol=1e-12)
    np.testing.assert_array_equal(out["back"], xs[0])          # t = T-1 reads xs[0]
    f = graph(RNN).forward
    assert sum(v.op == "tanh" for v in f.values()) == 2 * 4     # unrolled four times


TBPTT = """\
graph tbptt {
    input xs: f64[6, 2]
    param W: f64[2, 2]
    h = xs[0]
    for t in 1..4 { h = tanh(h @ W + xs[t]) }
    h = stop_gradient(h)                 # truncate: no gradient flows into steps 1..3
    for t in 4..6 { h = tanh(h @ W + xs[t]) }
    loss = sum(h * h)
    output loss
    output dW = grad(loss, W)
}
"""


def test_truncated_bptt_gradient_stops_at_stop_gradient() -> None:
    from graphc.ir import interp
    from graphc.passes import autodiff
    rng = np.random.default_rng(1)
    xs, W = rng.normal(size=(6, 2)), rng.normal(size=(2, 2)) * 0.5
    g = graph(TBPTT)
    assert sum(v.op == "stop_gradient" for v in g.forward.values()) == 1
    loss, dW = interp.run(autodiff.run(g.forward), {"xs": xs, "W": W})

    def tail(W: np.ndarray, h: np.ndarray) -> float:
        for t in (4, 5):
            h = np.tanh(h @ W + xs[t])
        return float((h * h).sum())

    h3 = xs[0]
    for t in (1, 2, 3):
        h3 = np.tanh(h3 @ W + xs[t])
    assert np.isclose(loss, tail(W, h3))
    eps, want = 1e-6, np.zeros_like(W)
    for i in np.ndindex(W.shape):
        d = np.zeros_like(W)
        d[i] = eps
        want[i] = (tail(W + d, h3) - tail(W - d, h3)) / (2 * eps)   # h3 held fixed
    np.testing.assert_allclose(dW, want, rtol=1e-6, atol=1e-9)


def test_consts_in_any_order_in_shapes_loops_and_values() -> None:
    src = """graph g {
    input x: f32[ROWS, COLS]
    s = x
    for t in 1..STEPS { s = s + x * SCALE }
    output s
}
const STEPS = ROWS + 1
const ROWS = 2
const COLS = ROWS * 3
const SCALE = 0.5"""
    g = graph(src)
    assert g.inputs[0].type == TensorType(DType.f32, (2, 6))
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    np.testing.assert_allclose(run(src, x=x)["s"], x * 2)     # x + 2 * (0.5 x)
    assert dict(g.consts) == {"STEPS": 3, "ROWS": 2, "COLS": 6, "SCALE": 0.5}


def test_symbolic_dims_bind_to_different_sizes_and_read_as_values() -> None:
    src = """graph g {
    input x: f32[N, 4, 3]
    input v: f32[M]
    flat = reshape(x, [N, -1])
    output flat
    output all = reshape(x, [-1])
    output avg = sum(v) / M
    output last = x[N - 1]
    output tail = v[1:]
    output count = N * M + 0.5              # a dim used as a value is read at run time
}"""
    f = graph(src).forward
    assert [str(r.type) for r in f.results] == ["f32[N,12]", "f32[12*N]", "f32[]", "f32[4,3]",
                                                "f32[M-1]", "f32[]"]
    for n, m in [(1, 5), (3, 2)]:
        x = np.arange(n * 12, dtype=np.float32).reshape(n, 4, 3)
        v = np.arange(m, dtype=np.float32)
        out = run(src, x=x, v=v)
        np.testing.assert_array_equal(out["flat"], x.reshape(n, -1))
        np.testing.assert_array_equal(out["all"], x.reshape(-1))
        np.testing.assert_allclose(out["avg"], v.mean())
        np.testing.assert_array_equal(out["last"], x[-1])
        np.testing.assert_array_equal(out["tail"], v[1:])
        assert out["count"] == n * m + 0.5


def test_indexing_and_transposes_match_numpy() -> None:
    exprs = ["x[1]", "x[-1]", "x[:, 0]", "x[1:, 2:4]", "x[-1, 1:3, ::2]", "x[:, :, -2]",
             "x[2:1]", "x[0, -4]", "x.T", "x.mT", "x[0].T", "x[:, 1:][:, ::2]", "x[0, 0, 0]"]
    src = "graph g {\n  input x: f32[3, 4, 5]\n" + "".join(
        f"  output o{i} = {e}\n" for i, e in enumerate(exprs)) + "}"
    x = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    np_x = {"x": x}
    out = run(src, x=x)
    for i, e in enumerate(exprs):
        want = eval(e.replace(".mT", ".swapaxes(-1, -2)"), np_x)
        np.testing.assert_array_equal(out[f"o{i}"], want, err_msg=e)


def test_weak_literals_adopt_the_tensor_dtype() -> None:
    src = """graph g {
    input x: f64[3]
    input i: i32[3]
    input c: bool[3]
    output a = 2 * x + 1.5
    output b = i * 2 - 1
    output w = where(c, x, 0.0)
    output u = where(c, 1, i)
    output l = x + [1, 2, 3]
    output k = 3; output f = 2.5; output t = true; output p = 2 ** -1; output q = -x ** 2
}"""
    f = graph(src).forward
    types = dict(zip(f.result_names, (str(r.type) for r in f.results)))
    assert types == {"a": "f64[3]", "b": "i32[3]", "w": "f64[3]", "u": "i32[3]",
                     "l": "f64[3]", "k": "i64[]", "f": "f32[]", "t": "bool[]", "p": "f32[]",
                     "q": "f64[3]"}
    x, i, c = np.array([1., -2, 3]), np.array([1, 2, 3], np.int32), np.array([1, 0, 1], bool)
    out = run(src, x=x, i=i, c=c)
    np.testing.assert_array_equal(out["a"], 2 * x + 1.5)
    np.testing.assert_array_equal(out["b"], i * 2 - 1)
    np.testing.assert_array_equal(out["w"], np.where(c, x, 0.0))
    np.testing.assert_array_equal(out["u"], np.where(c, 1, i))
    np.testing.assert_array_equal(out["l"], x + [1, 2, 3])
    assert out["p"] == 0.5 and out["k"] == 3
    np.testing.assert_array_equal(out["q"], -(x ** 2))


def test_keyword_arguments_bind_to_op_attributes() -> None:
    src = """graph g {
    input x: f32[2, 3]
    output s = sum(x, axis=1, keepdims=true)
    output m = max(x, axis=[0, 1])
    output l = leaky_relu(x, alpha=0.5)
    output p = softmax(x, axis=-1)
    output c = concat([x, x], 0)
}"""
    x = np.array([[1., -2, 3], [-4, 5, -6]], np.float32)
    out = run(src, x=x)
    np.testing.assert_array_equal(out["s"], x.sum(axis=1, keepdims=True))
    assert out["m"] == 5
    np.testing.assert_array_equal(out["l"], np.where(x > 0, x, 0.5 * x))
    np.testing.assert_allclose(out["p"], np.exp(x) / np.exp(x).sum(1, keepdims=True), rtol=1e-6)
    np.testing.assert_array_equal(out["c"], np.concatenate([x, x]))


def test_rebinding_output_expr_and_grad_expression() -> None:
    src = """graph g {
    input x: f32[3]
    param W: f32[3]
    h = x; h = h * W; h = h + 1          # a name may be rebound
    output z = sum(h)
    dx = grad(z, x)
    output dx
    grad z wrt x, W
}"""
    g = graph(src)
    f = g.forward
    assert f.result_names == ("z", "dx")
    dx = f.results[1]
    assert dx.op == "grad" and dx.inputs == (f.results[0], f.params[0])
    assert g.grad is not None and g.grad.wrt == ("x", "W")
    x, W = np.array([1., 2, 3], np.float32), np.array([2., 0, 1], np.float32)
    from graphc.ir import interp
    from graphc.passes import autodiff
    z, d = interp.run(autodiff.run(f), {"x": x, "W": W})
    assert z == (x * W + 1).sum()
    np.testing.assert_array_equal(d, W)


def test_initializers_and_default() -> None:
    src = """graph g {
    input x: f32[2]
    param a: f32[2, 2] = normal(0.1)
    param b: f32[2] = uniform(-1, hi=1)
    param c: f64[2, 2] = he_normal
    param d: f32[2]
    output x
}"""
    inits = [(d.name, d.init) for d in graph(src).params]
    assert [(n, i and (i.name, i.args)) for n, i in inits] == [
        ("a", ("normal", (0.1,))), ("b", ("uniform", (-1.0, 1.0))), ("c", ("he_normal", ())),
        ("d", None)]


def test_several_graphs_in_one_file_share_consts_and_fns() -> None:
    from graphc.elaborate import elaborate_source
    src = "const K = 2\nfn f(x) { return x * K }\n" \
          "graph a { input x: f32[K]; output y = f(x) }\n" \
          "graph b { input x: f64[]; output y = f(f(x)) }\n"
    graphs = elaborate_source(src, "t.graph")
    assert list(graphs) == ["a", "b"]
    assert graphs["b"].forward.name == "b.forward"
    from graphc.ir import interp
    (y,) = interp.run(graphs["b"].forward, {"x": np.float64(3)})
    assert y == 12


def test_semicolons_comments_and_multi_line_arguments() -> None:
    src = """graph g {  # a comment after the brace
    input x: f32[2, 3]; input w: f32[3]      # two declarations on one line
    y = sum(
        x * w,          # the product
        axis=1,
    ); z = y.T        # .T of a vector is the vector itself
    output z
}"""
    x, w = np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1., 2, 3], np.float32)
    np.testing.assert_array_equal(run(src, x=x, w=w)["z"], (x * w).sum(axis=1))
    assert not any(v.op == "transpose" for v in graph(src).forward.values())


def test_initializer_fans_are_keras_for_matrices_and_conv_kernels() -> None:
    """A conv kernel's fan_out left out its window (KH*KW), so glorot drew a wider range than
    Keras's and JAX's."""
    from graphc.init import fans
    assert fans((784, 256)) == (784, 256)
    assert fans((3, 3, 4, 8)) == (36, 72)           # [KH, KW, Cin, Cout]
    assert fans((5, 4, 8)) == (20, 40)              # conv1d [K, Cin, Cout]
    assert fans((7,)) == (7, 7) and fans(()) == (1, 1)
