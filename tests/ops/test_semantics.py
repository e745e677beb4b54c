"""The language's semantics, one behaviour per test, against NumPy written by hand: gradient
conventions, NaN propagation, empty reductions, stable losses, symbolic shapes, bounds."""
from __future__ import annotations

import numpy as np
import pytest

from graphc.ir import interp
from graphc.ir.core import Func, make
from graphc.ir.errors import GraphCallError
from graphc.ir.types import Dim, DType, TensorType
from tests.ops.harness import args_of, evaluate, gradient

inf, nan = np.inf, np.nan
N = Dim.sym("N")


def op(name: str, **attrs: object):
    return lambda *xs: make(name, *xs, **attrs)


def f64(*xs: object) -> np.ndarray:
    return np.array(xs, dtype=np.float64)

# ---------------------------------------------------------------------------- gradient conventions


def test_relu_and_abs_have_zero_slope_at_zero() -> None:
    np.testing.assert_array_equal(gradient(op("relu"), f64(-1, 0, 2))[0], f64(0, 0, 1))
    np.testing.assert_array_equal(gradient(op("abs"), f64(-1, 0, 2))[0], f64(-1, 0, 1))


def test_leaky_relu_takes_slope_one_at_zero_as_jax() -> None:
    np.testing.assert_allclose(gradient(op("leaky_relu", alpha=0.1), f64(-1, 0, 2))[0],
                               f64(0.1, 1, 1))


@pytest.mark.parametrize("name, win", [("maximum", f64(0.5, 1, 0)), ("minimum", f64(0.5, 0, 1))])
def test_maximum_and_minimum_ties_share_the_gradient(name: str, win: np.ndarray) -> None:
    gx, gy = gradient(op(name), f64(1, 2, 3), f64(1, 0, 5))
    np.testing.assert_array_equal(gx, win)
    np.testing.assert_array_equal(gy, np.where(win == 0.5, 0.5, 1 - win))


def test_max_and_min_ties_share_the_gradient_equally() -> None:
    x = f64(3, 1, 3, 0, 2, 2, 2).reshape(1, 7)
    np.testing.assert_array_equal(gradient(op("max", axis=1), x)[0],
                                  [[0.5, 0, 0.5, 0, 0, 0, 0]])
    np.testing.assert_allclose(gradient(op("min", axis=-1), x[:, 3:] + 1)[0],
                               [[1, 0, 0, 0]])
    np.testing.assert_allclose(gradient(op("min"), x[:, 4:])[0], [[1 / 3] * 3])


def test_take_gradient_scatter_adds_repeated_indices() -> None:
    idx = np.array([0, 0, 2, -1])
    g = gradient(lambda x, i: make("take", x, i), f64(1, 2, 3), idx)[0]
    np.testing.assert_array_equal(g, f64(2, 0, 2))


def test_pow_gradients_are_finite_at_zero_base() -> None:
    gx, gy = gradient(op("pow"), f64(0, 0, 2), f64(2, 0, 3))
    np.testing.assert_array_equal(gx, f64(0, 0, 12))
    np.testing.assert_allclose(gy, f64(0, 0, 8 * np.log(2)))

# ---------------------------------------------------------------------------- NaN and empties


@pytest.mark.parametrize("build", [op("relu"), lambda x: make("maximum", x, x * 0 + 1),
                                   lambda x: make("minimum", x * 0 - 1, x),
                                   lambda x: make("clip", x, 0.0, 1.0), op("softplus"),
                                   op("sign"), op("elu"), op("leaky_relu")],
                         ids=["relu", "maximum", "minimum", "clip", "softplus", "sign", "elu",
                              "leaky_relu"])
def test_nan_propagates_through_elementwise_ops(build: object) -> None:
    assert np.isnan(evaluate(build, f64(nan))).all()


@pytest.mark.parametrize("name", ["max", "min", "sum", "mean", "logsumexp"])
def test_nan_propagates_through_reductions(name: str) -> None:
    assert np.isnan(evaluate(op(name), f64(1, nan, 3)))


def test_argmax_and_argmin_return_the_first_nan_or_first_tie() -> None:
    assert evaluate(op("argmax"), f64(1, nan, nan)) == 1
    assert evaluate(op("argmin"), f64(2, 1, 1)) == 1
    assert evaluate(op("argmax"), f64(2, 5, 5)).dtype == np.int64


def test_empty_reductions_give_their_identity() -> None:
    x = np.zeros((0, 3))
    np.testing.assert_array_equal(evaluate(op("sum", axis=0), x), [0, 0, 0])
    np.testing.assert_array_equal(evaluate(op("max", axis=0), x), [-inf] * 3)
    np.testing.assert_array_equal(evaluate(op("min", axis=0), x), [inf] * 3)
    np.testing.assert_array_equal(evaluate(op("logsumexp", axis=0), x), [-inf] * 3)
    np.testing.assert_array_equal(evaluate(op("argmax", axis=0), x), [0, 0, 0])
    assert np.isnan(evaluate(op("mean", axis=0), x)).all()
    assert evaluate(op("max"), np.zeros(0, np.int32)) == np.iinfo(np.int32).min


def test_argmax_over_several_axes_indexes_them_row_major() -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    got = evaluate(op("argmax", axis=(2, 0), keepdims=True), x)
    want = [np.argmax(x[:, j, :].reshape(-1)) for j in range(3)]
    np.testing.assert_array_equal(got.reshape(-1), want)
    assert got.shape == (1, 3, 1)

# ---------------------------------------------------------------------------- stability


def test_logsumexp_is_stable_and_handles_infinities() -> None:
    lse = op("logsumexp", axis=1)
    np.testing.assert_allclose(evaluate(lse, f64(1000, 1000, -inf, 999).reshape(2, 2)),
                               [1000 + np.log(2), 999])
    np.testing.assert_array_equal(evaluate(lse, f64(-inf, -inf, inf, 0).reshape(2, 2)),
                                  [-inf, inf])
    np.testing.assert_allclose(gradient(lse, f64(1000, 1000).reshape(1, 2))[0], [[0.5, 0.5]])


def test_softmax_and_log_softmax_of_extreme_logits() -> None:
    x = f64(1000, 0, -inf)
    np.testing.assert_allclose(evaluate(op("softmax"), x), [1, 0, 0])
    np.testing.assert_allclose(evaluate(op("log_softmax"), x), [0, -1000, -inf])
    small = f64(0.5, -1, 2)
    np.testing.assert_allclose(evaluate(op("softmax"), small),
                               np.exp(small) / np.exp(small).sum())


def test_softmax_cross_entropy_is_per_row_and_stable() -> None:
    logits, y = f64(1000, 0, 0.3, -0.2).reshape(2, 2), f64(0, 1, 1, 0).reshape(2, 2)
    loss = evaluate(op("softmax_cross_entropy"), logits, y)
    want = -np.log(np.exp(0.3) / (np.exp(0.3) + np.exp(-0.2)))
    np.testing.assert_allclose(loss, [1000, want])
    g = gradient(op("softmax_cross_entropy"), logits, y)[0]
    assert np.isfinite(g).all()
    np.testing.assert_allclose(g[0], [1, -1])


def test_sparse_softmax_cross_entropy_matches_the_dense_one() -> None:
    rng = np.random.default_rng(1)
    logits, labels = rng.standard_normal((5, 4)), rng.integers(0, 4, 5)
    dense = evaluate(op("softmax_cross_entropy", reduction="mean"), logits, np.eye(4)[labels])
    sparse = evaluate(op("sparse_softmax_cross_entropy", reduction="mean"), logits, labels)
    np.testing.assert_allclose(sparse, dense)
    assert evaluate(op("sparse_softmax_cross_entropy"), logits, labels).shape == (5,)


def test_sigmoid_cross_entropy_is_stable_for_large_logits() -> None:
    x, y = f64(1000, 1000, -1000, 0.5), f64(0, 1, 0, 0.25)
    loss = evaluate(op("sigmoid_cross_entropy"), x, y)
    s = 1 / (1 + np.exp(-0.5))
    np.testing.assert_allclose(loss, [1000, 0, 0, -(0.25 * np.log(s) + 0.75 * np.log(1 - s))])
    np.testing.assert_allclose(gradient(op("sigmoid_cross_entropy"), x, y)[0],
                               [1, 0, 0, s - 0.25])


def test_binary_cross_entropy_clamps_logs_at_minus_100_as_pytorch() -> None:
    p, y = f64(0, 1, 0, 0.3), f64(1, 0, 0, 0.6)
    loss = evaluate(op("binary_cross_entropy"), p, y)
    np.testing.assert_allclose(loss, [100, 100, 0, -(0.6 * np.log(0.3) + 0.4 * np.log(0.7))])
    gp = gradient(op("binary_cross_entropy"), p, y)[0]
    assert np.isfinite(gp).all()
    np.testing.assert_allclose(gp[3], (0.3 - 0.6) / (0.3 * 0.7))


def test_loss_reductions_and_defaults() -> None:
    a, b = f64(1, 2, 3, 4).reshape(2, 2), f64(0, 2, 5, 4).reshape(2, 2)
    assert evaluate(op("mse"), a, b) == pytest.approx(5 / 4)
    assert evaluate(op("mse", reduction="sum"), a, b) == pytest.approx(5)
    assert evaluate(op("mse", reduction="none"), a, b).shape == (2, 2)
    p = f64(0.2, 0.7, 0.4, 0.9).reshape(2, 2)
    assert evaluate(op("binary_cross_entropy"), p, b * 0).shape == (2, 2)
    assert evaluate(op("sigmoid_cross_entropy", reduction="mean"), a, b * 0).shape == ()


def test_scalar_functions_match_their_formulas() -> None:
    x = f64(-3, -0.5, 0, 0.5, 3)
    np.testing.assert_allclose(evaluate(op("softplus"), x), np.log1p(np.exp(x)))
    np.testing.assert_allclose(evaluate(op("sigmoid"), x), 1 / (1 + np.exp(-x)))
    np.testing.assert_allclose(evaluate(op("gelu"), f64(1.0)), 0.8411919906082768)
    np.testing.assert_allclose(evaluate(op("elu", alpha=2.0), x), np.where(x > 0, x,
                                                                           2 * np.expm1(x)))
    np.testing.assert_allclose(evaluate(op("rsqrt"), f64(4)), 0.5)


def test_pow_follows_c_pow() -> None:
    assert evaluate(op("pow"), f64(-2), f64(3)) == -8
    assert np.isnan(evaluate(op("pow"), f64(-2), f64(0.5)))
    got = evaluate(op("pow"), np.array([2, 1, -1, -1, 3]), np.array([-1, -2, -3, -2, 2]))
    np.testing.assert_array_equal(got, [0, 1, -1, 1, 9])

# ---------------------------------------------------------------------------- shapes


def test_symbolic_result_shapes() -> None:
    x, y = args_of([TensorType(DType.f32, (N, 6)), TensorType(DType.f32, (4, 6))])
    assert str(make("concat", x, y).type) == "f32[N+4,6]"
    assert str(make("reshape", make("concat", x, y), shape=(-1,)).type) == "f32[6*N+24]"
    z, = args_of([TensorType(DType.f32, (N, 4, 3))])
    assert str(make("reshape", z, shape=(-1,)).type) == "f32[12*N]"
    assert str(make("reshape", z, shape=(2, -1, N)).type) == "f32[2,6,N]"


def test_mean_over_a_symbolic_dim_divides_by_its_runtime_value() -> None:
    x, = args_of([TensorType(DType.f32, (N, 3))])
    m = make("mean", x, axis=0)
    count = m.inputs[1]
    assert (count.op, count.attrs["value"]) == ("dim", N)
    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.testing.assert_allclose(evaluate(op("mean", axis=0), data), data.mean(0))


def test_zeros_is_a_symbolic_const_splat() -> None:
    z = make("zeros", shape=[N, 3], dtype=DType.i32)
    assert (z.op, z.attrs["shape"], z.dtype) == ("const", (N, 3), DType.i32)
    full = evaluate(lambda: make("full", shape=(N, 2), value=2.5), env={"N": 3})
    np.testing.assert_array_equal(full, np.full((3, 2), 2.5, np.float32))


def test_symbolic_broadcasting_uses_the_static_one_rule() -> None:
    a, b, c = args_of([TensorType(DType.f32, (N, 1)), TensorType(DType.f32, (1, Dim.sym("M"))),
                       TensorType(DType.f32, (N,))])
    assert str((a + b).type) == "f32[N,M]"
    assert str((c + a).type) == "f32[N,N]"


def test_matmul_follows_numpy_rules() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 1, 3, 4)), rng.standard_normal((5, 4, 2))
    np.testing.assert_allclose(evaluate(op("matmul"), a, b), np.einsum("iakl,blm->ibkm",
                                                                       a, b).reshape(2, 5, 3, 2))
    v = rng.standard_normal(4)
    np.testing.assert_allclose(evaluate(op("matmul"), v, v), v @ v)
    np.testing.assert_allclose(evaluate(op("matmul"), v, b), v @ b)


def test_slice_pad_scatter_and_one_hot_by_hand() -> None:
    x = np.arange(10.0)
    np.testing.assert_array_equal(evaluate(op("slice", start=(1,), step=(3,)), x), [1, 4, 7])
    np.testing.assert_array_equal(evaluate(op("pad", lo=(1,), hi=(2,), interior=(1,)),
                                           f64(5, 6, 7)), [0, 5, 0, 6, 0, 7, 0, 0])
    got = evaluate(lambda t, i, u: make("scatter_add", t, i, u, axis=1), np.ones((2, 3)),
                   np.array([2, 0, 2]), np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(got, [[2, 1, 3], [5, 1, 9]])
    np.testing.assert_array_equal(evaluate(op("one_hot", depth=3), np.array([2, -1, 3])),
                                  [[0, 0, 1], [0, 0, 0], [0, 0, 0]])


def test_slice_gradient_pads_with_zeros() -> None:
    g = gradient(op("slice", start=(1,), step=(3,)), np.arange(9.0))[0]
    np.testing.assert_array_equal(g, [0, 1, 0, 0, 1, 0, 0, 1, 0])


@pytest.mark.parametrize("build, shape", [
    (op("slice", start=(5,)), (3, 2)), (op("slice", start=(-1,)), (0, 2)),
    (lambda x: make("take", x, make("const", value=(0, 3), dtype=DType.i64, shape=(2,))),
     (3, 2))])
def test_out_of_range_on_a_symbolic_axis_is_a_call_error(build: object, shape: tuple) -> None:
    x, = args_of([TensorType(DType.f32, (N, 2))])
    func = Func("f", (x,), (build(x),))
    with pytest.raises(GraphCallError, match="out of range|must be >= 0"):
        interp.run(func, {"x0": np.zeros(shape, np.float32)})

