"""Resource hygiene (slow step): calling a compiled model does not grow the process, and
compiling then dropping many models frees what LLVM and the JIT took for each (every fresh
compile used to keep ~1 MB: the new pass manager's pipelines were never freed)."""
from __future__ import annotations

import gc
import os
import weakref

import numpy as np
import pytest

import graphc

MB = 2**20


def rss() -> int:
    """Resident set size of this process in bytes (the second field of /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux")]

SMALL = """
graph small {
    input x: f32[N, 4]
    param W: f32[4, 3]
    param b: f32[3]
    h = tanh(x @ W + b)
    loss = mean(square(h))
    output loss, h
    grad loss
}
"""


def test_rss_stays_flat_over_100k_calls() -> None:
    model = graphc.compile_source(SMALL, cache=False)
    params = model.init_params(seed=0)
    xs = [np.random.default_rng(n).standard_normal((n, 4)).astype(np.float32) for n in (1, 3, 8)]

    def calls(k: int) -> None:
        for i in range(k):
            x = xs[i % 3]
            if i % 3 == 0:
                model(x=x, **params)
            elif i % 3 == 1:
                model.value_and_grad(x=x, **params)
            else:
                model.sgd_step(params, lr=1e-6, x=x)

    calls(3_000)                                  # warm-up: arenas, caches, allocator pools
    gc.collect()
    before = rss()
    calls(100_000)
    gc.collect()
    grown = rss() - before
    assert grown < 4 * MB, f"RSS grew {grown / MB:.1f} MB over 100,000 calls"


def _distinct(k: int) -> str:
    """A graph of its own (constants and shapes differ), so no two compiles are alike."""
    return f"""
graph g{k} {{
    input x: f32[N, {3 + k % 5}]
    param W: f32[{3 + k % 5}, 8]
    param b: f32[8]
    h = tanh(x @ W + b * {k}.5)
    p = softmax(h * sigmoid(h - {k % 7}.25))
    y = sum(p * log(p + 0.001), axis=1)
    z = max(h, axis=0) + logsumexp(h, axis=0)
    output y, z
}}
"""


def _compile_and_drop(k: int) -> weakref.ref:
    model = graphc.compile_source(_distinct(k), cache=False)
    c = 3 + k % 5
    x = np.random.default_rng(k).standard_normal((2, c)).astype(np.float32)
    W, b = np.full((c, 8), 0.1, np.float32), np.full(8, 0.01, np.float32)
    h = np.tanh(x @ W + b * (k + 0.5))
    e = h * (1 / (1 + np.exp(-(h - (k % 7 + 0.25)))))
    p = np.exp(e - e.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model(x=x, W=W, b=b)["y"], np.sum(p * np.log(p + 0.001), axis=1),
                               rtol=1e-4)
    return weakref.ref(model._native.entries["forward"].loaded)


def test_compiling_and_dropping_120_models_keeps_rss_bounded() -> None:
    for k in range(20):                           # warm-up: LLVM's and the JIT's own tables
        _compile_and_drop(k)
    gc.collect()
    before = rss()
    alive = [_compile_and_drop(k) for k in range(20, 140)]
    gc.collect()
    grown = rss() - before
    assert not [r for r in alive if r() is not None], "dropped models kept their JIT code"
    # unfreed pass pipelines kept ~0.45 MB a compile here (+54 MB); freed, a few MB of slack
    assert grown < 16 * MB, f"RSS grew {grown / MB:.0f} MB over 120 compiles"


def test_dropping_a_model_unloads_its_code() -> None:
    model = graphc.compile_source(_distinct(1000), cache=False)
    loaded = [weakref.ref(e.loaded) for e in model._native.entries.values()]
    assert all(r() is not None for r in loaded)
    del model
    gc.collect()
    assert all(r() is None for r in loaded), "a dropped model's linked code is still alive"
