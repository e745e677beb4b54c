"""The Python API on the example MLP: forward, value_and_grad and sgd_step against NumPy written by
hand, init_params, symbolic dims bound per call, and the call-time errors of docs/runtime.md."""
from __future__ import annotations

import math

import numpy as np
import pytest

import graphc
from tests.e2e.conftest import EXAMPLES

MLP = EXAMPLES / "mlp.graph"


@pytest.fixture(scope="module", params=("interp", "native"))
def mlp(request: pytest.FixtureRequest) -> graphc.Model:
    return graphc.compile(MLP, backend=request.param)


def data(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 784)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]
    return {"x": x, "y": y}


def numpy_mlp(x, y, W1, b1, W2, b2):  # type: ignore[no-untyped-def]
    """The MLP and its backprop written by hand in NumPy (float64)."""
    x, y, W1, b1, W2, b2 = (a.astype(np.float64) for a in (x, y, W1, b1, W2, b2))
    z = x @ W1 + b1
    h = np.maximum(z, 0)
    logits = h @ W2 + b2
    m = logits.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=1))
    n = x.shape[0]
    loss = np.mean(lse - (y * logits).sum(axis=1))
    p = np.exp(logits - lse[:, None])
    dlogits = (p * y.sum(axis=1, keepdims=True) - y) / n
    dW2, db2 = h.T @ dlogits, dlogits.sum(0)
    dz = (dlogits @ W2.T) * (z > 0)
    return loss, logits, {"W1": x.T @ dz, "b1": dz.sum(0), "W2": dW2, "b2": db2}


def test_model_signature_in_declaration_order(mlp: graphc.Model) -> None:
    assert list(mlp.inputs) == ["x", "y"]
    assert list(mlp.params) == ["W1", "b1", "W2", "b2"]
    assert list(mlp.outputs) == ["loss", "logits"]
    assert str(mlp.params["W1"]) == "f32[784,256]" and str(mlp.inputs["x"]) == "f32[N,784]"


def test_init_params_follow_declared_initializers(mlp: graphc.Model) -> None:
    p = mlp.init_params(seed=0)
    assert set(p) == {"W1", "b1", "W2", "b2"}
    assert p["W1"].dtype == np.float32 and p["W1"].shape == (784, 256)
    limit = math.sqrt(6 / (784 + 256))
    assert np.abs(p["W1"]).max() <= limit and np.abs(p["W1"]).max() > 0.9 * limit
    assert abs(float(p["W1"].std()) - limit / math.sqrt(3)) < 0.01 * limit
    assert not p["b1"].any()
    np.testing.assert_array_equal(p["W2"], mlp.init_params(seed=0)["W2"])
    assert not np.array_equal(p["W1"], mlp.init_params(seed=1)["W1"])


def test_forward_matches_numpy(mlp: graphc.Model) -> None:
    params = mlp.init_params(seed=0)
    params["b1"][:] = 0.01
    d = data(32)
    out = mlp(**d, **params)
    loss, logits, _ = numpy_mlp(**d, **params)
    np.testing.assert_allclose(out["logits"], logits, rtol=1e-4, atol=1e-4)
    assert out["loss"].shape == () and out["loss"].dtype == np.float32
    np.testing.assert_allclose(out["loss"], loss, rtol=1e-5)


def test_value_and_grad_matches_numpy_backprop(mlp: graphc.Model) -> None:
    params = mlp.init_params(seed=0)
    d = data(16, seed=1)
    out, grads = mlp.value_and_grad(**d, **params)
    loss, _, want = numpy_mlp(**d, **params)
    np.testing.assert_allclose(out["loss"], loss, rtol=1e-5)
    assert list(grads) == ["W1", "b1", "W2", "b2"]
    for k in want:
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-3, atol=1e-6, err_msg=k)


def test_one_compile_serves_every_batch_size(mlp: graphc.Model) -> None:
    params = mlp.init_params(seed=0)
    for n in (1, 7, 0):
        out = mlp(**data(n), **params)
        assert out["logits"].shape == (n, 10)
    assert np.isnan(mlp(**data(0), **params)["loss"])          # mean of nothing is NaN


def test_sgd_step_updates_in_place_and_returns_old_loss(mlp: graphc.Model) -> None:
    params = mlp.init_params(seed=0)
    d = data(8, seed=2)
    before = {k: v.copy() for k, v in params.items()}
    W1 = params["W1"]
    out, grads = mlp.value_and_grad(**d, **params)
    loss = mlp.sgd_step(params, 0.5, **d)
    np.testing.assert_allclose(loss, out["loss"], rtol=1e-6)
    assert params["W1"] is W1                                    # the caller's array, updated
    for k in params:
        np.testing.assert_allclose(params[k], before[k] - 0.5 * grads[k], rtol=1e-5, atol=1e-7)
    assert float(mlp(**d, **params)["loss"]) < float(loss)


def test_arguments_are_converted_when_safe(mlp: graphc.Model) -> None:
    params = mlp.init_params(seed=0)
    d = data(4)
    x64 = d["x"].astype(np.float64)
    strided = np.asfortranarray(d["x"])
    a = mlp(x=x64, y=d["y"], **params)["logits"]
    b = mlp(x=strided, y=d["y"].tolist(), **params)["logits"]
    np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("change, pattern", [
    (lambda d: d.pop("y"), r"missing argument 'y'"),
    (lambda d: d.update(yy=d.pop("y")), r"unexpected argument 'yy'; did you mean 'y'"),
    (lambda d: d.update(x=d["x"][0]), r"'x' must have rank 2"),
    (lambda d: d.update(x=d["x"][:, :783]), r"'x' must have shape f32\[N,784\]"),
    (lambda d: d.update(y=d["y"][:3]), r"N = 4 \(x\) vs 3 \(y\)"),
    (lambda d: d.update(x=d["x"].astype(np.complex64)), r"'x' must be f32\[N,784\]"),
])
def test_call_errors_name_the_argument(mlp: graphc.Model, change, pattern) -> None:  # type: ignore[no-untyped-def]
    d = {**data(4), **mlp.init_params(0)}
    change(d)
    with pytest.raises(graphc.GraphCallError, match=pattern) as e:
        mlp(**d)
    assert isinstance(e.value, ValueError)


def test_graph_without_grad_line_has_no_value_and_grad() -> None:
    m = graphc.compile_source("graph g {\n input x: f32[3]\n output y = exp(x)\n}\n",
                              backend="interp")
    np.testing.assert_allclose(m(x=np.zeros(3))["y"], np.ones(3))
    with pytest.raises(graphc.GraphCallError, match="no grad line"):
        m.value_and_grad(x=np.zeros(3))
    with pytest.raises(graphc.GraphCallError, match="no grad line"):
        m.sgd_step({}, 0.1, x=np.zeros(3))


def test_missing_file_is_graph_file_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(graphc.GraphFileError, match="nope.graph") as e:
        graphc.compile(tmp_path / "nope.graph")
    assert isinstance(e.value, OSError)


def test_choosing_a_graph_among_several() -> None:
    src = "graph a {\n input x: f32[2]\n output y = x + 1.0\n}\n" \
          "graph b {\n input x: f32[2]\n output y = x * 2.0\n}\n"
    with pytest.raises(graphc.GraphTypeError, match="several graphs"):
        graphc.compile_source(src, backend="interp")
    m = graphc.compile_source(src, graph="b", backend="interp")
    np.testing.assert_allclose(m(x=np.ones(2))["y"], [2.0, 2.0])
    with pytest.raises(graphc.GraphTypeError, match="did you mean 'b'"):
        graphc.compile_source(src, graph="bb", backend="interp")


def test_dump_ir_reads_back_and_names_results(mlp: graphc.Model) -> None:
    from graphc.ir.text import parse_funcs, print_funcs
    text = mlp.dump_ir()
    funcs = parse_funcs(text)
    assert [f.name for f in funcs] == ["mlp.forward", "mlp.backward", "mlp.sgd_step"]
    assert print_funcs(funcs) == text
    back = mlp.dump_ir(func="backward")
    assert "grad.W1: f32[784,256]" in back and "mlp.graph:" in back
    assert " grad " not in mlp.dump_ir(func="backward", after="autodiff")
    assert " grad " in mlp.dump_ir(func="backward", after="ir-unopt")


def test_outputs_are_fresh_arrays(backend: str) -> None:
    src = "graph g {\n input x: f32[N,3]\n output x\n output r = reshape(x, [-1])\n}\n"
    m = graphc.compile_source(src, backend=backend)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = m(x=x)
    assert out["x"] is not x and not np.shares_memory(out["x"], x)
    assert not np.shares_memory(out["r"], x) and not np.shares_memory(out["r"], out["x"])


def test_sgd_step_returns_the_target_before_the_update(backend: str) -> None:
    m = graphc.compile_source("graph g {\n param s: f32[] = ones\n loss = s\n output loss\n"
                              " grad loss\n}\n", backend=backend)
    p = m.init_params()
    assert float(m.sgd_step(p, 0.5)) == 1.0 and float(p["s"]) == 0.5


def test_an_input_named_lr_does_not_collide_with_the_learning_rate(backend: str) -> None:
    src = ("graph g {\n input lr: f32[]\n param w: f32[2] = ones\n"
           " loss = sum(w * w) * lr\n output loss\n grad loss\n}\n")
    m = graphc.compile_source(src, backend=backend)
    p = m.init_params()
    loss = m.sgd_step({**p, "lr": np.float32(3.0)}, 0.1)
    assert float(loss) == 6.0
    np.testing.assert_allclose(p["w"], 1 - 0.1 * 6.0)            # d/dw = 2 w lr = 6
    from graphc.ir.text import parse_funcs
    assert parse_funcs(m.dump_ir(func="sgd_step"))                # reads back: no duplicate %lr


def test_sgd_step_refuses_params_it_cannot_update_in_place(mlp: graphc.Model) -> None:
    p = mlp.init_params()
    d = data(2)
    with pytest.raises(graphc.GraphCallError, match="writeable float"):
        mlp.sgd_step({**p, "b2": np.zeros(10, np.int64)}, 0.1, **d)
    frozen = p["b1"].copy()
    frozen.flags.writeable = False
    with pytest.raises(graphc.GraphCallError, match="writeable float"):
        mlp.sgd_step({**p, "b1": frozen}, 0.1, **d)


def test_ragged_argument_is_call_error(mlp: graphc.Model) -> None:
    with pytest.raises(graphc.GraphCallError, match="'x' is not an array"):
        mlp(x=[[1.0], [1.0, 2.0]], y=np.zeros((2, 10)), **mlp.init_params())


def test_symbolic_dim_checks_run_on_every_backend(backend: str) -> None:
    m = graphc.compile_source("graph g { input y: f32[M]; output z = concat([zeros([M-5], f32), "
                              "y], 0) }", backend=backend)
    assert m(y=np.ones(6))["z"].shape == (7,)
    with pytest.raises(graphc.GraphCallError, match="must be >= 0"):
        m(y=np.ones(4))
    b = graphc.compile_source("graph g { input x: f32[N]; input y: f32[5]; output z = x + y }",
                              backend=backend)
    with pytest.raises(graphc.GraphCallError, match="dims 5 and N = 3 must be equal"):
        b(x=np.ones(3), y=np.ones(5))


def test_check_numerics_on_the_interpreter_too() -> None:
    m = graphc.compile_source("graph g { input x: f32[N]; output y = log(x) }",
                              backend="interp", check_numerics=True)
    with pytest.raises(graphc.NumericsError, match="log"):
        m(x=np.array([1.0, -1.0]))
