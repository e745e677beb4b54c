"""Values computed only from literals and symbolic dims, and tensors computed only from those
(through elementwise ops, ``where`` with a bool condition, broadcasts and reductions), stay
weakly typed (as in JAX): they adopt the dtype of the tensor they meet. Also: initializer
arguments and internal ops are checked."""
from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.ir import interp
from tests.frontend.util import graph
from tests.frontend.util import run as run_forward


def run(body: str, **args: np.ndarray) -> np.ndarray:
    m = graphc.compile_source("graph g { " + body + " }", backend="interp")
    return m(**args)["z"]


@pytest.mark.parametrize("expr, want", [
    ("x * (1.0 / N)", lambda x: x / 4),
    ("x * (N - 0.5)", lambda x: x * 3.5),
    ("x + N * 0.5", lambda x: x + 2.0),
    ("x * exp(1.0)", lambda x: x * np.e),
    ("x * sqrt(2)", lambda x: x * np.sqrt(2)),
    ("clip(0.5, -1, 1) + x", lambda x: x + 0.5),
    ("x - -exp(0.0)", lambda x: x + 1),
])
def test_weak_values_adopt_the_tensor_dtype(expr: str, want) -> None:  # type: ignore[no-untyped-def]
    x = np.arange(4.0)
    z = run(f"input x: f64[N]; output z = {expr}", x=x)
    assert z.dtype == np.float64
    np.testing.assert_allclose(z, want(x), rtol=1e-15)


def test_weak_value_alone_is_f32_or_i64() -> None:
    assert run("input x: f32[N]; output z = exp(1.0)", x=np.ones(2)).dtype == np.float32
    assert run("input x: f32[N]; output z = N + 1 > 2", x=np.ones(2)).dtype == np.bool_


def test_float_weak_value_with_integer_tensor_is_type_error() -> None:
    with pytest.raises(graphc.GraphTypeError, match="cast it first"):
        graphc.compile_source("graph g { input x: i32[N]; output z = x * (1.0 / N) }")


@pytest.mark.parametrize("init, words", [
    ("normal(-1)", "std must be finite and >= 0"),
    ("normal(1e400)", "std must be finite"),
    ("uniform(3, -1)", "lo must be <= hi"),
    ("uniform(-1e308, 1e308)", "must be finite"),
])
def test_bad_initializer_arguments_are_compile_errors(init: str, words: str) -> None:
    with pytest.raises(graphc.GraphTypeError, match=words) as e:
        graphc.compile_source(f"graph g {{\n  param w: f32[2] = {init}\n  output w\n}}\n",
                              filename="i.graph")
    assert "i.graph:2:" in str(e.value)


@pytest.mark.parametrize("call", ['dim("q", f32)', "slice(x)", "scatter_add(x, x, x)"])
def test_internal_ops_are_not_callable_from_graph_files(call: str) -> None:
    with pytest.raises(graphc.GraphTypeError, match="unknown fn or op"):
        graphc.compile_source(f"graph g {{ input x: f32[3]; output z = {call} }}")


# ---- weakness follows values through elementwise ops, broadcasts and reductions (JAX's rule:
# a value computed only from literals, dims and bool conditions adopts the dtype it meets)

C = np.array([True, False, True, True])


@pytest.mark.parametrize("dtype", ["f32", "f64"])
@pytest.mark.parametrize("expr, want", [
    ("x + mean(where(c, 0.5, 1.0))", lambda x: x + np.mean(np.where(C, 0.5, 1.0))),
    ("x * where(c, 0.1, 0.3)", lambda x: x * np.where(C, 0.1, 0.3)),
    ("x - sum(where(c, 1, 2))", lambda x: x - 5),
    ("x + exp(where(c, 0.1, -0.2))", lambda x: x + np.exp(np.where(C, 0.1, -0.2))),
    ("x + max(where(c, 0.25, 1.0) * 2.0, axis=0, keepdims=true)", lambda x: x + 2.0),
    ("x / broadcast_to(sum(where(c, 0.5, 0.0)), [N])", lambda x: x / 1.5),
    ("x + where(c, 0.5, 1.0).T[1:][0]", lambda x: x + 1.0),
    ("x + where(logical_not(c), 1.0 / N, N)", lambda x: x + np.where(~C, 0.25, 4.0)),
    ("x + mean([0.1, 0.2, 0.7])", lambda x: x + np.mean([0.1, 0.2, 0.7])),
])
def test_weakness_follows_elementwise_ops_and_reductions(  # type: ignore[no-untyped-def]
        dtype: str, expr: str, want) -> None:
    g = graph(f"graph g {{ input x: {dtype}[N]; input c: bool[N]; output z = {expr} }}")
    other = "f32" if dtype == "f64" else "f64"
    text = str(g.forward)
    assert g.forward.results[0].type.dtype.value == dtype
    assert f"{other}[" not in text, text       # every literal was made the tensor's dtype
    x = np.linspace(-1, 1, 4).astype(dtype.replace("f", "float"))
    (z,) = interp.run(g.forward, {"x": x, "c": C})
    assert z.dtype == x.dtype
    if dtype == "f64":
        np.testing.assert_allclose(z, want(x), rtol=1e-15, atol=1e-15)
    else:
        np.testing.assert_allclose(z, want(x.astype(np.float64)), rtol=1e-6, atol=1e-6)


def test_weak_int_tensor_adopts_integer_and_float_dtypes() -> None:
    for dtype in ("i32", "f64"):
        z = run(f"input x: {dtype}[N]; input c: bool[N]; output z = x + sum(where(c, 1, 2))",
                x=np.arange(4).astype(dtype.replace("i", "int").replace("f", "float")), c=C)
        assert z.dtype.name == dtype.replace("i", "int").replace("f", "float")
        np.testing.assert_array_equal(z, np.arange(4) + 5)


def test_weak_tensor_alone_is_f32_and_reductions_that_change_dtype_are_strong() -> None:
    assert run("input c: bool[N]; output z = where(c, 0.5, 1.0)", c=C).dtype == np.float32
    assert run("input c: bool[N]; output z = sum(where(c, 1, 2))", c=C).dtype == np.int64
    # argmax gives i64 whatever its operand: not weak, so it does not become f64 here
    with pytest.raises(graphc.GraphTypeError, match="i64"):
        graphc.compile_source("graph g { input x: f64[N]; input c: bool[N]; "
                              "output z = x + argmax(where(c, 0.5, 1.0)) }")


def test_float_weak_tensor_with_integer_tensor_is_type_error() -> None:
    with pytest.raises(graphc.GraphTypeError, match="cast it first") as e:
        graphc.compile_source("graph g {\n input x: i32[N]; input c: bool[N]\n"
                              " output z = x + mean(where(c, 0.5, 1.0))\n}", filename="w.graph")
    assert "w.graph:3:" in str(e.value)


def test_long_chain_of_weak_values_does_not_recurse() -> None:
    z = run_forward("graph g { input x: f64[N]; input c: bool[N]; s = where(c, 0.0, 0.0)\n"
                    "for t in 0..1500 { s = s + where(c, 0.5, 0.25) }\n output z = x + s }",
                    x=np.zeros(4), c=C)["z"]
    np.testing.assert_array_equal(z, np.where(C, 750.0, 375.0))


@pytest.mark.parametrize("expr, want", [
    ("take(x, where(c3, 0, 2))", [0.0, 2.0, 0.0]),          # weak integer indices stay integer
    ("take([0.5, 1.5, 2.5], k)", [0.5, 2.5]),               # weak floats meet integer indices
    ("sparse_softmax_cross_entropy(reshape(where(c3, 0.0, 0.0), [1, 3]), [1])",
     [np.log(3.0)]),                                        # labels written as a list
])
def test_weak_operands_of_ops_with_index_operands_keep_their_own_dtype(expr: str,
                                                                       want: list) -> None:
    z = run(f"input x: f64[3]; input c3: bool[3]; input k: i64[2]; output z = {expr}",
            x=np.arange(3.0), c3=np.array([True, False, True]), k=np.array([0, 2]))
    np.testing.assert_allclose(z, want, rtol=1e-6)
