"""The packed GEMM on several threads (runtime/gemm.py, runtime/matmul_kernels.py): a product
with many rows runs every row block of a k block as tasks of the pool and its fused epilogue
after all of it, as tasks too, reading the product from C or from a scratch of all of C (an
SGD update written over its own weight, a result of another dtype, a batch of products);
few rows read B in place. Every thread count gives bitwise the 1-thread numbers, and those
match NumPy."""
from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.runtime import gemm, pool
from tests.runtime.conftest import tolerance

SRC = """graph g {
    input x: f32[K, M]
    input d: f32[K, N]
    input W: f32[M, N]
    input b: f32[N]
    input A: f32[M, K]
    input V: f32[K, N]
    input r: f32[M, N]
    param lr: f32[]
    W2 = W - lr * (x.T @ d)
    h = relu(A @ V + b)
    pos = A @ V > r
    output W2, h, pos
}"""

BATCHED = """graph g {
    input A: f32[2, M, K]
    input B: f32[2, K, N]
    input c: f32[N]
    h = tanh(A @ B + c)
    output h
}"""


@pytest.fixture(scope="module")
def models() -> dict[int, graphc.Model]:
    src = SRC.replace("param lr", "input lr")
    return {t: graphc.compile_source(src, num_threads=t) for t in (1, 2, 3)}


def _check(got: np.ndarray, want: np.ndarray, k: int) -> None:
    tol = tolerance(got.dtype)
    np.testing.assert_allclose(got, want.astype(got.dtype), rtol=tol["rtol"],
                               atol=tol["atol"] * max(k, 1) ** 0.5 * 4)


# (M, K, N): rows around the row block (MC = 128) and the in-place limit, depths within one
# k block and over several (the scratch for an in-place update is all of C either way)
SHAPES = [(gemm.SMALL_M + 1, 40, 33), (gemm.DIRECT_M, 300, 129), (gemm.DIRECT_M + 1, 7, 70),
          (129, 256, 33), (300, 257, 129), (517, 40, 300)]


@pytest.mark.parametrize("m,k,n", SHAPES)
def test_every_thread_count_gives_the_same_bits(models: dict, m: int, k: int, n: int) -> None:
    rng = np.random.default_rng(m * 7 + k)
    args = {"x": rng.standard_normal((k, m)), "d": rng.standard_normal((k, n)),
            "W": rng.standard_normal((m, n)), "b": rng.standard_normal(n),
            "A": rng.standard_normal((m, k)), "V": rng.standard_normal((k, n)),
            "r": rng.standard_normal((m, n)), "lr": np.array(0.25)}
    args = {a: v.astype(np.float32) for a, v in args.items()}
    runs = {t: model(**args) for t, model in models.items()}
    f64 = {a: v.astype(np.float64) for a, v in args.items()}
    _check(runs[1]["W2"], f64["W"] - 0.25 * (f64["x"].T @ f64["d"]), k)
    _check(runs[1]["h"], np.maximum(f64["A"] @ f64["V"] + f64["b"], 0), k)
    prod = f64["A"] @ f64["V"]
    clear = np.abs(prod - f64["r"]) > 1e-3 * max(np.abs(prod).max(), 1)
    np.testing.assert_array_equal(runs[1]["pos"][clear], (prod > f64["r"])[clear])
    for t in (2, 3):
        for name in ("W2", "h", "pos"):
            np.testing.assert_array_equal(runs[t][name], runs[1][name],
                                          err_msg=f"{name}, {t} threads, {(m, k, n)}")


def test_a_batch_of_products_with_an_epilogue() -> None:
    """Each product of a batch is wide on its own; its epilogue's tasks get the batch index."""
    models = {t: graphc.compile_source(BATCHED, num_threads=t) for t in (1, 2)}
    rng = np.random.default_rng(11)
    for m, k, n in [(300, 70, 129), (20, 300, 40)]:
        args = {"A": rng.standard_normal((2, m, k)).astype(np.float32),
                "B": rng.standard_normal((2, k, n)).astype(np.float32),
                "c": rng.standard_normal(n).astype(np.float32)}
        got = {t: model(**args)["h"] for t, model in models.items()}
        want = np.tanh(args["A"].astype(np.float64) @ args["B"] + args["c"])
        _check(got[1], want, k)
        np.testing.assert_array_equal(got[2], got[1], err_msg=f"{(m, k, n)}")


def test_the_epilogue_of_a_wide_product_runs_on_the_pool() -> None:
    """relu(x @ W + b) asks the pool for one region more than x @ W alone: the epilogue's."""
    plain = graphc.compile_source("graph g {\n input x: f32[M, K]\n input W: f32[K, N]\n"
                                  " h = x @ W\n output h\n}\n", num_threads=2)
    fused = graphc.compile_source("graph g {\n input x: f32[M, K]\n input W: f32[K, N]\n"
                                  " input b: f32[N]\n h = relu(x @ W + b)\n output h\n}\n",
                                  num_threads=2)
    rng = np.random.default_rng(12)
    x = rng.standard_normal((512, 200)).astype(np.float32)
    w = rng.standard_normal((200, 256)).astype(np.float32)
    b = rng.standard_normal(256).astype(np.float32)

    def regions(fn) -> int:
        before = pool.POOL.counts()[0]
        fn()
        return pool.POOL.counts()[0] - before
    assert regions(lambda: fused(x=x, W=w, b=b)) == regions(lambda: plain(x=x, W=w)) + 1
