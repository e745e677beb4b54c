"""Empty iteration spaces cost nothing: with a zero dim beside a huge one (an f32[2**60, 0]
array holds no bytes), every kind of kernel returns at once, as NumPy does, and still writes
the identity where the result is not empty (sum 0, max -inf, argmax 0)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import graphc

SOURCE = """
graph empty {
    input x: f32[N, M]
    input x3: f32[K, P, M]      # K = N / 16: NumPy refuses 2**60 * 3 * 4 bytes, even of nothing
    input w: f32[M, M]
    input b: f32[M]
    input i: i64[M]
    input lab: i32[K, M]
    output total = sum(x)
    output cols = sum(x, axis=0)
    output top = max(x)
    output top0 = max(x, axis=0)
    output arg0 = argmax(x, axis=0)
    output mid = sum(x3, axis=[0, 2])
    output midmax = max(x3, axis=[0, 2])
    output midarg = argmax(x3, axis=[0, 2])
    output avg = mean(x, axis=0)
    output ew = exp(x) * 2.0 + 1.0
    output soft = softmax(x, axis=0)
    output mm = x @ w
    output epi = relu(x @ w + b)
    output gram = x.T @ x
    output taken = take(x, i, axis=1)
    output joined = concat([x, w], axis=0)
    output hot = one_hot(lab, 4, strict=true)
}
"""
ROWS = """
graph rows {
    input x: f32[N, M]
    output soft = softmax(x, axis=-1)
}
"""
LIMIT_S = 0.5       # per call; a loop over 2**30 rows takes seconds, over 2**60 forever


def run(n: int, backend: str, opt_level: int = 2) -> tuple[dict[str, np.ndarray], float]:
    model = graphc.compile_source(SOURCE, backend=backend, opt_level=opt_level, cache=False)
    args = dict(x=np.zeros((n, 0), np.float32), x3=np.zeros((n // 16, 3, 0), np.float32),
                w=np.zeros((0, 0), np.float32), b=np.zeros(0, np.float32),
                i=np.zeros(0, np.int64), lab=np.zeros((n // 16, 0), np.int32))
    start = time.perf_counter()
    out = model(**args)
    return out, time.perf_counter() - start


def check(n: int, opt_level: int = 2) -> None:
    got, seconds = run(n, "native", opt_level)
    assert seconds < LIMIT_S, f"N = {n}: the empty call took {seconds:.2f} s"
    want, _ = run(n, "interp", opt_level)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].shape == want[name].shape, name
        assert got[name].dtype == want[name].dtype, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    np.testing.assert_array_equal(got["mid"], [0, 0, 0])
    np.testing.assert_array_equal(got["midmax"], [-np.inf] * 3)
    np.testing.assert_array_equal(got["midarg"], [0, 0, 0])
    assert got["total"] == 0 and got["top"] == -np.inf
    assert got["ew"].shape == (n, 0) and got["joined"].shape == (n, 0)
    if opt_level:
        # a row kernel over 0-element rows (NumPy itself would hold one max per row)
        rows = graphc.compile_source(ROWS, opt_level=opt_level, cache=False)
        assert "fused" in rows.dump_ir("forward")
        start = time.perf_counter()
        soft = rows(x=np.zeros((n, 0), np.float32))["soft"]
        assert time.perf_counter() - start < LIMIT_S and soft.shape == (n, 0)


@pytest.mark.parametrize("opt_level", [0, 2])
def test_empty_loops_cost_nothing(opt_level: int) -> None:
    # 2**30 trips of an empty inner loop take seconds: enough to fail, not to hang
    check(2 ** 30, opt_level)


@pytest.mark.slow
def test_empty_loops_with_a_dim_of_2_to_the_60() -> None:
    """Run apart, so that a regression (a loop that would never end) fails by timing out."""
    root = Path(__file__).resolve().parents[2]
    code = ("from tests.runtime.test_empty import check; check(2 ** 60, 0); check(2 ** 60, 2)")
    done = subprocess.run([sys.executable, "-c", code], cwd=root, timeout=120,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
