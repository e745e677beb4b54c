"""Direct products (few rows, B read in place: runtime/gemmdriver.py) of more than
gemm.DEEP_M rows up to gemm.DIRECT_KC deep are one k block, split by column panels over the
threads in one parallel region; deeper ones, and fewer rows, keep blocks of KC. Around those
edges (rows at 1, DEEP_M, SMALL_M, DIRECT_M and past each, depth at KC and DIRECT_KC, columns
past one NC block), with an epilogue that reads C's other inputs, one that changes the dtype
(the product staged in a scratch) and an SGD step that writes the weight of a direct product
in place, every thread count gives bitwise the 1-thread numbers, close to the interpreter."""
from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.ir.types import DType
from graphc.runtime import gemm
from tests.runtime.conftest import models_by_threads

SRC = """graph g {
    input A: f32[M, K]
    input V: f32[K, N]
    input b: f32[N]
    input r: f32[M, N]
    h = relu(A @ V + b)
    pos = A @ V > r
    p = A @ V
    output h, pos, p
}"""

# the weight of a direct product updated in place: its forward is the direct product
STEP = """graph g {{
    input x: f32[M, {k}]
    param W: f32[{k}, {n}]
    loss = sum(tanh(x @ W))
    output loss
    grad loss
}}"""

THREADS = (1, 2, 3)


@pytest.fixture(scope="module")
def models() -> dict[object, graphc.Model]:
    return models_by_threads(SRC, THREADS)


def _depths() -> list[int]:
    kc = gemm.blocking(DType.f32).kc
    return [kc, kc + 1, gemm.DIRECT_KC, gemm.DIRECT_KC + 1]


# (M, N): one row (the wide tile), DEEP_M, SMALL_M and one past each, DIRECT_M and one past
# it (packed);
# N within one column block (512 for f32 with AVX-512), past it, and with a ragged last panel
SHAPES = [(1, 300), (gemm.DEEP_M, 256), (gemm.DEEP_M + 1, 129), (gemm.SMALL_M, 33),
          (gemm.SMALL_M + 1, 513), (gemm.DIRECT_M, 256), (gemm.DIRECT_M, 70),
          (gemm.DIRECT_M + 1, 40)]


@pytest.mark.parametrize("m,n", SHAPES)
@pytest.mark.parametrize("which", range(4))
def test_every_thread_count_gives_the_same_bits(models: dict, m: int, n: int,
                                                which: int) -> None:
    k = _depths()[which]
    rng = np.random.default_rng(m * 31 + n + k)
    args = {"A": rng.standard_normal((m, k)), "V": rng.standard_normal((k, n)),
            "b": rng.standard_normal(n), "r": rng.standard_normal((m, n))}
    args = {a: v.astype(np.float32) for a, v in args.items()}
    runs = {t: models[t](**args) for t in THREADS}
    ref = models["interp"](**args)
    for name in ("h", "pos", "p"):
        for t in THREADS[1:]:
            np.testing.assert_array_equal(runs[t][name], runs[1][name],
                                          err_msg=f"{name}, {t} threads, {(m, k, n)}")
    for name in ("h", "p"):
        np.testing.assert_allclose(runs[1][name], ref[name], rtol=2e-5,
                                   atol=5e-6 * k ** 0.5 * 4, err_msg=f"{name} {(m, k, n)}")
    prod = args["A"].astype(np.float64) @ args["V"]
    clear = np.abs(prod - args["r"]) > 1e-3 * max(np.abs(prod).max(), 1)
    np.testing.assert_array_equal(runs[1]["pos"][clear], (prod > args["r"])[clear])


@pytest.mark.parametrize("m,k,n", [(1, 784, 256), (32, 784, 256), (8, 1025, 40)])
def test_an_sgd_step_through_a_direct_product(m: int, k: int, n: int) -> None:
    """The step's forward x @ W is direct (one k block up to DIRECT_KC); W is updated in place:
    the same bits at every thread count, and the interpreter's numbers."""
    rng = np.random.default_rng(k + m)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w0 = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    got = {}
    for t in THREADS:
        model = graphc.compile_source(STEP.format(k=k, n=n), num_threads=t)
        params = {"W": w0.copy()}
        for _ in range(2):
            model.sgd_step(params, 0.1, x=x)
        got[t] = params["W"]
    ref = graphc.compile_source(STEP.format(k=k, n=n), backend="interp")
    params = {"W": w0.copy()}
    for _ in range(2):
        ref.sgd_step(params, 0.1, x=x)
    for t in THREADS[1:]:
        np.testing.assert_array_equal(got[t], got[1], err_msg=f"{t} threads {(m, k, n)}")
    np.testing.assert_allclose(got[1], params["W"], rtol=2e-5, atol=2e-5)
