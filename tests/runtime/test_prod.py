"""``prod``, the reduction that proves a fold is declared on the op and lowered everywhere: native
code at -O0 and -O2 equals the interpreter (and NumPy) on plain, zero, empty and integer inputs,
alone and fused into a kernel (rows over trailing axes, or leading axes with an epilogue), and so
do its gradients, which stay exact where x holds zeros."""
from __future__ import annotations

import numpy as np
import pytest

import graphc
from tests.runtime.conftest import assert_matches

LEVELS = [0, 2]
ROWS = [[2, 3, 4], [1, 5, 6]]
ZERO_ROWS = [[2, 3, 4], [0, 5, 6], [0, 0, 6], [0, 0, 0], [-1.5, 0.5, 2]]


def both(src: str, opt_level: int) -> tuple[graphc.Model, graphc.Model]:
    return (graphc.compile_source(src, opt_level=opt_level),
            graphc.compile_source(src, opt_level=opt_level, backend="interp"))


def forward(dtype: str, expr: str) -> str:
    return f"graph g {{\n input x: {dtype}[N, 3]\n output y = {expr}\n}}\n"


def same(src: str, opt_level: int, **args: np.ndarray) -> dict[str, np.ndarray]:
    native, interp = both(src, opt_level)
    got, want = native(**args), interp(**args)
    assert list(got) == list(want)
    assert_matches(list(got.values()), list(want.values()), src)
    return got


def np_dtype(dtype: str) -> np.dtype:
    return np.dtype({"f32": "float32", "f64": "float64", "i32": "int32", "i64": "int64"}[dtype])


@pytest.mark.parametrize("opt_level", LEVELS)
@pytest.mark.parametrize("dtype", ["f32", "f64", "i32", "i64"])
def test_rows_of_the_issue(dtype: str, opt_level: int) -> None:
    x = np.array(ROWS, np_dtype(dtype))
    got = same(forward(dtype, "prod(x, axis=1)"), opt_level, x=x)["y"]
    np.testing.assert_array_equal(got, np.array([24, 30], x.dtype))
    assert got.dtype == x.dtype


@pytest.mark.parametrize("opt_level", LEVELS)
@pytest.mark.parametrize("dtype", ["f32", "f64", "i32"])
@pytest.mark.parametrize("keywords,axis,keepdims", [
    ("axis=1", 1, False), ("axis=0", 0, False), ("", None, False),
    ("axis=-1, keepdims=true", -1, True), ("axis=[0, 1]", (0, 1), False), ("axis=[]", (), False),
    ("axis=0, keepdims=true", 0, True)])
def test_native_equals_interpreter_and_numpy(keywords: str, axis: object, keepdims: bool,
                                             dtype: str, opt_level: int) -> None:
    src = forward(dtype, f"prod(x{', ' if keywords else ''}{keywords})")
    for rows in (ZERO_ROWS, ROWS, np.zeros((0, 3))):
        x = np.array(rows, np_dtype(dtype)).reshape(-1, 3)
        got = same(src, opt_level, x=x)["y"]
        want = np.prod(x, axis=axis, keepdims=keepdims, dtype=x.dtype)
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert got.dtype == x.dtype


@pytest.mark.parametrize("opt_level", LEVELS)
def test_empty_product_is_one(opt_level: int) -> None:
    src = "graph g {\n input x: f32[N, M]\n output a = prod(x, axis=1)\n output b = prod(x)\n}\n"
    out = same(src, opt_level, x=np.zeros((3, 0), np.float32))
    np.testing.assert_array_equal(out["a"], np.ones(3, np.float32))
    np.testing.assert_array_equal(out["b"], np.float32(1))


@pytest.mark.parametrize("opt_level", LEVELS)
def test_integer_products_wrap_as_numpy(opt_level: int) -> None:
    x = np.array([[70000, 70000, 3], [-7, 11, 13]], np.int32)
    got = same(forward("i32", "prod(x, axis=1)"), opt_level, x=x)["y"]
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got, np.prod(x, axis=1, dtype=np.int32))


@pytest.mark.parametrize("opt_level", LEVELS)
@pytest.mark.parametrize("expr,kernel", [("prod(x * 2.0, axis=1) + 1.0", "row"),
                                         ("x / prod(x * x, axis=1, keepdims=true)", "row"),
                                         ("prod(exp(x), axis=0) * 2.0", "reduce")])
def test_fused_into_one_kernel(expr: str, kernel: str, opt_level: int) -> None:
    src = forward("f64", expr)
    x = np.array(ZERO_ROWS, np.float64) * 0.5 + 0.25
    same(src, opt_level, x=x)
    same(src, opt_level, x=np.array(ZERO_ROWS, np.float64))
    if opt_level:
        ir = graphc.compile_source(src, opt_level=opt_level).dump_ir(func="forward")
        fused = [line for line in ir.splitlines() if "= fused" in line]
        assert len(fused) == 1 and f"@{kernel}." in fused[0], ir


GRAD = """graph g {
  input x: f64[N, 3]
  param w: f64[3] = ones
  y = prod(x * w, axis=1) * 2.0 + prod(x, axis=0) @ w
  loss = sum(y * y)
  output loss
  grad loss wrt w, x
}
"""


@pytest.mark.parametrize("opt_level", LEVELS)
def test_gradient_with_zeros_native_equals_interpreter_and_definition(opt_level: int) -> None:
    native, interp = both(GRAD, opt_level)
    x, w = np.array(ZERO_ROWS, np.float64), np.array([1.5, -0.5, 2.0])
    (out, grads), (want_out, want) = native.value_and_grad(x=x, w=w), \
        interp.value_and_grad(x=x, w=w)
    assert_matches([out["loss"], grads["w"], grads["x"]],
                   [want_out["loss"], want["w"], want["x"]], "value_and_grad")
    np.testing.assert_allclose(grads["x"], by_definition(x, w), rtol=1e-12, atol=1e-12)


def by_definition(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """d loss / d x with d prod / d x_i the product of the other elements, computed as such."""
    xw, cols = x * w, np.prod(x, axis=0)
    y = np.prod(xw, axis=1) * 2.0 + cols @ w
    g = 2 * y
    out = np.zeros_like(x)
    for i, j in np.ndindex(x.shape):
        row_others = np.prod(np.delete(xw[i], j)) * w[j]
        col_others = np.prod(np.delete(x[:, j], i))
        out[i, j] = g[i] * row_others * 2.0 + g.sum() * col_others * w[j]
    return out
