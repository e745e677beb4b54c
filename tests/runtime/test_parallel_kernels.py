"""Loop kernels and reductions on the worker pool (runtime/pool.py ``split_loop``): above
the size threshold a build with threads splits them into tasks, and every thread count gives
bitwise the same numbers as one thread (which runs the same code over the same parts), all
close to the NumPy reference interpreter; below it, and at N=0 or 1, nothing is split."""
from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.runtime import pool
from tests.runtime.conftest import models_by_threads

# every kind of kernel the pool runs, each big enough at N=600 (M=256: 153600 elements)
KERNELS = """graph g {
    input x: f32[N, M]
    input b: f32[M]
    input t: f32[N, 8]
    m = tanh(x * 2.0 + b)
    lead = sum(x, axis=0)
    lmax = max(x, axis=0)
    few = sum(t * t, axis=0)
    cs = sum(x, axis=[0, 1])
    rs = sum(x * x, axis=1)
    sm = softmax(x, axis=1)
    output m, lead, lmax, few, cs, rs, sm
}"""

# a param updated in place by a loop kernel (the grad of sum(W * x) is x)
INPLACE = """graph g {
    input x: f32[512, 256]
    param W: f32[512, 256]
    loss = sum(W * x)
    output loss
    grad loss
}"""

THREADS = (1, 2, 3)


@pytest.fixture(scope="module")
def models() -> dict[object, graphc.Model]:
    return models_by_threads(KERNELS, THREADS)


def _args(n: int, m: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, m)).astype(np.float32),
            "b": rng.standard_normal(m).astype(np.float32),
            "t": rng.standard_normal((n * 32, 8)).astype(np.float32)[:n]
            if n else np.zeros((0, 8), np.float32)}


@pytest.mark.parametrize("n,m", [(600, 256), (3000, 33), (1, 70000), (0, 256), (1, 1),
                                 (40000, 3)])
def test_bitwise_the_same_at_every_thread_count(models: dict, n: int, m: int) -> None:
    args = _args(n, m)
    runs = {t: models[t](**args) for t in THREADS}
    ref = models["interp"](**args)
    for name, want in runs[1].items():
        for t in THREADS[1:]:
            np.testing.assert_array_equal(runs[t][name], want, err_msg=f"{t} threads {name}")
        np.testing.assert_allclose(want, ref[name], rtol=2e-5, atol=2e-4 * max(1, n) ** 0.5,
                                   err_msg=name)


def test_a_build_with_threads_splits_big_kernels_only(models: dict) -> None:
    """Counted by the pool: a 2-thread build asks it for loops above the threshold (at
    N=40000: the map and the reduction into few results), a 1-thread build never, small
    shapes never."""
    big, small = _args(40000, 3), _args(8, 256)
    before = pool.POOL.counts()
    models[1](**big)
    models[2](**small)
    assert pool.POOL.counts() == before
    models[2](**big)
    loops, tasks = (a - b for a, b in zip(pool.POOL.counts(), before))
    assert loops >= 2 and tasks >= 2 * loops, (loops, tasks)


def test_the_few_results_of_a_long_reduction_come_from_parts(models: dict) -> None:
    """sum over a long axis 0 into few results runs in fixed parts at every thread count (the
    partials combined in part order): the same bits, and not those of one long loop."""
    args = _args(40000, 3)
    got = {t: models[t](**args)["few"] for t in THREADS}
    assert all(np.array_equal(got[t], got[1]) for t in THREADS)
    want = (args["t"].astype(np.float64) ** 2).sum(axis=0)
    np.testing.assert_allclose(got[1], want, rtol=1e-5)


def test_in_place_updates_are_split_and_the_same() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((512, 256)).astype(np.float32)
    w0 = rng.standard_normal((512, 256)).astype(np.float32)
    out = {}
    for t in (1, 2):
        m = graphc.compile_source(INPLACE, num_threads=t)
        params = {"W": w0.copy()}
        before = pool.POOL.counts()
        for _ in range(3):
            m.sgd_step(params, 0.5, x=x)
        out[t] = params["W"]
        assert (pool.POOL.counts() != before) == (t > 1)
    np.testing.assert_array_equal(out[2], out[1])
    np.testing.assert_allclose(out[1], w0 - 1.5 * x, rtol=1e-6, atol=1e-6)


def test_plain_reductions_without_fusion_are_split_and_the_same(models: dict) -> None:
    """Without the fusion pass every op is a kernel of its own (runtime/kernels.py): row
    sums split by rows, full reductions in parts; still the same bits at every count."""
    plain = {t: graphc.compile_source(KERNELS, num_threads=t, passes="dce") for t in THREADS}
    for n, m in ((600, 256), (1, 70000), (0, 256)):
        args = _args(n, m)
        before = pool.POOL.counts()
        runs = {t: plain[t](**args) for t in THREADS}
        if n == 600:
            assert pool.POOL.counts()[0] - before[0] >= 2 * 7    # every kernel, 2 builds
        ref = models["interp"](**args)
        for name, want in runs[1].items():
            for t in THREADS[1:]:
                np.testing.assert_array_equal(runs[t][name], want, err_msg=f"{t} {name}")
            np.testing.assert_allclose(want, ref[name], rtol=2e-5,
                                       atol=2e-4 * max(1, n) ** 0.5, err_msg=name)
