"""The GEMM library's blocking driver (runtime/gemm.py ``driver``): a matmul kernel holds no
blocking loops of its own, only a call of the library's driver and its epilogue, an outlined
function the driver calls back on each finished block. What used to be chosen when the kernel
was compiled (a constant M picking one tile, A unit-stride along k) is a branch in the driver
now: constant shapes of every tile and layout, a batch whose index the epilogue reads from
its context, and a scratch, against NumPy and bitwise across thread counts."""
from __future__ import annotations

import re

import numpy as np
import pytest

import graphc
from tests.runtime.conftest import tolerance

# constant shapes: M = 1 (the one-row tile), 5 (the small tile, B in place), 40 with Aᵀ (the
# big tile, A packed), a batch of 3 with a per-block epilogue, and an epilogue of another
# dtype (a scratch of one block)
SRC = """graph g {
    input a1: f32[1, 300]
    input w1: f32[300, 70]
    input a5: f32[5, 40]
    input w5: f32[40, 33]
    input at: f32[330, 40]
    input wt: f32[330, 129]
    input ab: f32[3, 20, 50]
    input wb: f32[3, 50, 37]
    input c: f32[37]
    input r: f32[40, 129]
    y1 = a1 @ w1
    y5 = relu(a5 @ w5)
    yt = at.T @ wt + r
    yb = tanh(ab @ wb + c)
    pos = at.T @ wt > r
    output y1, y5, yt, yb, pos
}"""


@pytest.fixture(scope="module")
def models() -> dict[int, graphc.Model]:
    return {t: graphc.compile_source(SRC, num_threads=t) for t in (1, 2)}


def _args() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(12)
    shapes = {"a1": (1, 300), "w1": (300, 70), "a5": (5, 40), "w5": (40, 33), "at": (330, 40),
              "wt": (330, 129), "ab": (3, 20, 50), "wb": (3, 50, 37), "c": (37,),
              "r": (40, 129)}
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def test_kernels_call_the_library_driver_and_hold_no_blocking_loops(models: dict) -> None:
    text = models[1].llvm_ir("forward")
    assert re.search(r'declare void @"?graphc\.gemm\.driver\.f32', text)   # declared only
    assert not re.search(r'define[^@]*@"?graphc\.gemm', text)
    # the macro-kernels and packing are called by the driver only, never by a kernel
    for callee in ("graphc.gemm.macro.", "graphc.gemm.pack_b.", "graphc.gemm.pack_a."):
        assert not re.search(rf'call void @"?{re.escape(callee)}', text)


def test_constant_shapes_match_numpy_and_every_thread_count(models: dict) -> None:
    args = _args()
    runs = {t: m(**args) for t, m in models.items()}
    f = {k: v.astype(np.float64) for k, v in args.items()}
    want = {"y1": f["a1"] @ f["w1"], "y5": np.maximum(f["a5"] @ f["w5"], 0),
            "yt": f["at"].T @ f["wt"] + f["r"], "yb": np.tanh(f["ab"] @ f["wb"] + f["c"])}
    tol = tolerance(np.float32)
    for name, w in want.items():
        np.testing.assert_allclose(runs[1][name], w.astype(np.float32), rtol=tol["rtol"],
                                   atol=tol["atol"] * 20 * 4)
    for name in ("y1", "y5", "yt", "yb", "pos"):
        np.testing.assert_array_equal(runs[2][name], runs[1][name])
