"""Values computed only from literals and symbolic dims stay weakly typed (as in JAX): they adopt
the dtype of the tensor they meet. Also: initializer arguments and internal ops are checked."""
from __future__ import annotations

import numpy as np
import pytest

import graphc


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


@pytest.mark.parametrize("call", ['dim("q", f32)', "slice(x)", "pad(x, [1], [1])",
                                  "scatter_add(x, x, x)"])
def test_internal_ops_are_not_callable_from_graph_files(call: str) -> None:
    with pytest.raises(graphc.GraphTypeError, match="unknown fn or op"):
        graphc.compile_source(f"graph g {{ input x: f32[3]; output z = {call} }}")
