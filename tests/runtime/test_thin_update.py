"""The thin product (runtime/matmul_kernels.py ``_matmul_thin``: C = A @ B for K up to SMALL_K,
the weight gradient of a small batch fused with its SGD update) computes THIN_VECTORS vectors
of a row side by side, then single vectors, then scalars: each element's FMAs run in k order
whichever of the three computes it, so a column's bits do not depend on the width of C, and
match the interpreter's numbers."""
from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.runtime import matmul_kernels

SRC = """graph g {{
    input x: f32[K, {m}]
    input d: f32[K, {n}]
    input W: f32[{m}, {n}]
    param lr: f32[]
    W2 = W - lr * (x.T @ d)
    P = x.T @ d
    output W2, P
}}"""

LANES = 16
GROUP = matmul_kernels.THIN_VECTORS * LANES
# widths: a group and one past it, groups plus single vectors plus a scalar tail, no group
WIDTHS = [GROUP, GROUP + 1, 2 * GROUP + LANES + 3, LANES * 3 + 2, 5, 4 * GROUP]


@pytest.mark.parametrize("k", [1, 3, matmul_kernels.SMALL_K])
def test_columns_do_not_depend_on_the_width(k: int) -> None:
    m = 37
    rng = np.random.default_rng(k)
    x = rng.standard_normal((k, m)).astype(np.float32)
    d = rng.standard_normal((k, max(WIDTHS))).astype(np.float32)
    w = rng.standard_normal((m, max(WIDTHS))).astype(np.float32)
    lr = np.array(0.25, np.float32)
    got = {}
    for n in WIDTHS:
        src = SRC.format(m=m, n=n)
        args = {"x": x, "d": np.ascontiguousarray(d[:, :n]),
                "W": np.ascontiguousarray(w[:, :n]), "lr": lr}
        got[n] = graphc.compile_source(src, num_threads=1)(**args)
        ref = graphc.compile_source(src, backend="interp")(**args)
        for name in ("W2", "P"):
            np.testing.assert_allclose(got[n][name], ref[name], rtol=2e-5, atol=2e-5,
                                       err_msg=f"{name} n={n} k={k}")
    widest = got[max(WIDTHS)]
    for n in WIDTHS:
        for name in ("W2", "P"):
            np.testing.assert_array_equal(got[n][name], widest[name][:, :n],
                                          err_msg=f"{name} n={n} k={k}")
