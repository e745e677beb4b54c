"""Random ops and normalisation beyond the op-table sweep: Philox's published test vector, the
distributions, streams, dropout's edge rates, and var / std / the norms against NumPy."""
from __future__ import annotations

import numpy as np
import pytest

from graphc.ir.core import Func, const, make
from graphc.ir.errors import GraphTypeError
from graphc.ir.interp import run
from graphc.ir.ops.random import philox
from graphc.ir.types import DType, TensorType
from tests.ops.harness import args_of, evaluate, gradient


def test_philox_matches_the_random123_known_answers() -> None:
    """Random123's kat_vectors for philox4x32_10: counter 0, key 0; and all ones."""
    assert [int(w[0]) for w in philox(1, 0, 0)] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C,
                                                     0x9B00DBD8]


def draws(op: str, key: int, n: int, dtype: DType = DType.f64, stream: int = 0) -> np.ndarray:
    return evaluate(lambda k: make(op, k, shape=(n,), dtype=dtype, stream=stream),
                    np.int64(key))


def test_uniform_and_normal_distributions() -> None:
    u = draws("random_uniform", 7, 200_000)
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    u32 = draws("random_uniform", 7, 1000, DType.f32)
    assert u32.dtype == np.float32 and u32.max() < 1
    z = draws("random_normal", 7, 200_000)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    # exactly normal: the tails a sum of uniforms cannot reach
    assert abs(np.mean(np.abs(z) > 3) - 0.0027) < 0.0006 and np.abs(z).max() > 4


def test_keys_and_streams_give_independent_numbers() -> None:
    a, b = draws("random_uniform", 1, 1000), draws("random_uniform", 2, 1000)
    c = draws("random_uniform", 1, 1000, stream=1)
    assert np.array_equal(a, draws("random_uniform", 1, 1000))        # deterministic
    for p, q in ((a, b), (a, c), (b, c)):
        assert abs(np.corrcoef(p, q)[0, 1]) < 0.1 and not np.any(p == q)
    # a prefix of a longer draw: element i depends only on (key, stream, i)
    assert np.array_equal(draws("random_uniform", 1, 10), a[:10])
    assert np.array_equal(draws("random_uniform", -1, 3), draws("random_uniform", -1, 3))


def test_random_errors() -> None:
    k, f = args_of([TensorType(DType.f32, ()), TensorType(DType.i64, (2,))])
    with pytest.raises(GraphTypeError, match="integer scalar"):
        make("random_uniform", k, shape=(3,))
    with pytest.raises(GraphTypeError, match="integer scalar"):
        make("random_normal", f, shape=(3,))
    with pytest.raises(GraphTypeError, match="float type"):
        make("random_uniform", const(0, DType.i64), shape=(3,), dtype=DType.i32)


def test_dropout_rates() -> None:
    x = np.ones((100, 100), np.float32)
    for rate in (0.0, 0.3, 1.0):
        out = evaluate(lambda a, r: make("dropout", a, r, const(5, DType.i64)), x,
                       np.float32(rate))
        kept = out != 0
        assert abs(kept.mean() - (1 - rate)) < 0.02
        assert np.allclose(out[kept], 1 / (1 - rate)) if rate < 1 else not kept.any()
    (g, _) = gradient(lambda a, r: make("dropout", a, r, const(5, DType.i64)), x.astype(float),
                      np.float64(1.0))
    assert np.array_equal(g, np.zeros_like(g))                          # not 0 * inf


def test_var_std_and_norms_match_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5))
    for ddof in (0, 1):
        got = evaluate(lambda a, d=ddof: make("var", a, axis=(0, 2), ddof=d), x)
        np.testing.assert_allclose(got, np.var(x, axis=(0, 2), ddof=ddof))
        got = evaluate(lambda a, d=ddof: make("std", a, axis=-1, keepdims=True, ddof=d),
                       x)
        np.testing.assert_allclose(got, np.std(x, axis=-1, keepdims=True, ddof=ddof))
    # no cancellation: a large offset leaves the variance exact (E[x^2] - E[x]^2 would not)
    big = (1e4 + np.arange(4.0)).astype(np.float32)
    assert evaluate(lambda a: make("var", a), big) == pytest.approx(1.25)
    g, b = rng.standard_normal(5), rng.standard_normal(5)
    ln = evaluate(lambda a, c, d: make("layer_norm", a, c, d), x, g, b)
    m, v = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(ln, (x - m) / np.sqrt(v + 1e-5) * g + b)
    bn = evaluate(lambda a, c, d: make("batch_norm", a, c, d, eps=1e-3), x, g, b)
    m, v = x.mean((0, 1), keepdims=True), x.var((0, 1), keepdims=True)
    np.testing.assert_allclose(bn, (x - m) / np.sqrt(v + 1e-3) * g + b)
    # with given statistics: what the batch form computes when given the batch's own
    stats = evaluate(lambda a, c, d, e, f: make("batch_norm_stats", a, c, d, e, f, eps=1e-3),
                     x, g, b, m.reshape(5), v.reshape(5))
    np.testing.assert_allclose(stats, bn)


def test_norm_errors() -> None:
    x, g = args_of([TensorType(DType.f32, (2, 3)), TensorType(DType.f32, (4,))])
    with pytest.raises(GraphTypeError, match="cannot broadcast"):
        make("layer_norm", x, g, g)
    with pytest.raises(GraphTypeError, match="negative ddof"):
        make("var", x, ddof=-1)
    with pytest.raises(GraphTypeError, match="float"):
        make("std", make("cast", x, dtype=DType.i32))


def test_random_values_are_not_merged_by_the_interpreter_run() -> None:
    """Two random ops that differ only in stream are two values in a function's results."""
    k = make("arg", name="k", dtype=DType.i64, shape=())
    a = make("random_normal", k, shape=(4,), stream=1)
    b = make("random_normal", k, shape=(4,), stream=2)
    ra, rb = run(Func("f", (k,), (a, b)), {"k": np.int64(3)})
    assert not np.any(ra == rb)
