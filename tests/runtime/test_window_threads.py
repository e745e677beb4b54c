"""The convolution and pooling window kernels on the worker pool: im2col, col2im, their Winograd
forms (F(2x2, 3x3) and F(4x4, 3x3)), window_max and its gradient split by image over 1, 2 and 3
threads give the same bits, and match the interpreter; a Winograd conv2d with its gradients
likewise."""
from __future__ import annotations

import numpy as np
import pytest

from graphc.ir.core import Func, make
from graphc.ir.types import Dim, DType
from graphc.passes.autodiff import grad_of
from graphc.runtime import compile_module, pool
from tests.runtime.conftest import assert_matches, reference

N = Dim.sym("N")
THREADS = (1, 2, 3)


def kernels() -> dict[str, Func]:
    def arg(name: str, shape: tuple) -> object:
        return make("arg", name=name, dtype=DType.f32, shape=shape)
    x, p = arg("x", (N, 8, 7, 5)), arg("p", (16, N, 4, 4, 5))
    m, q = arg("m", (16, N, 4, 4, 6)), arg("q", (N, 8, 7, 45))
    h, g = arg("h", (N, 8, 6, 24)), arg("g", (N, 4, 3, 24))
    m4 = arg("m4", (36, N, 2, 2, 6))
    win = {"window": 4, "stride": 2, "lo": 1, "hi": (1, 2), "transform": "winograd_in"}
    ops = {
        "im2col": (x, make("im2col", x, window=3, lo=1, hi=1)),
        "col2im": (q, make("col2im", q, window=3, lo=1, hi=1, size=(8, 7))),
        "planes": (x, make("im2col", x, **win)),
        "unplanes": (p, make("col2im", p, size=(8, 7), **win)),
        "tiles": (m, make("col2im", m, window=2, stride=2, hi=(0, 1), size=(8, 7),
                          transform="winograd_out")),
        "untiles": (h, make("im2col", h, window=2, stride=2, transform="winograd_out")),
        "planes4": (x, make("im2col", x, window=6, stride=4, lo=1, hi=(3, 2),
                            transform="winograd4_in")),
        "tiles4": (m4, make("col2im", m4, window=4, stride=4, hi=(0, 1), size=(8, 7),
                            transform="winograd4_out")),
        "wmax": (h, make("window_max", h, window=2)),
    }
    out = {k: Func(k, (a,), (r,)) for k, (a, r) in ops.items()}
    top = make("window_max", h, window=2)
    out["wmaxgrad"] = Func("wmaxgrad", (h, g), (make("window_max_grad", h, top, g, window=2),))
    return out


@pytest.fixture(scope="module")
def built() -> tuple[dict[str, Func], dict[int, object]]:
    fs = kernels()
    return fs, {t: compile_module(fs, threads=t) for t in THREADS}


@pytest.mark.parametrize("n", [0, 1, 40])
def test_window_kernels_at_every_thread_count(built: tuple, n: int) -> None:
    fs, mods = built
    rng = np.random.default_rng(n)
    before = pool.POOL.counts()[0]
    for name, f in fs.items():
        arrays = [rng.integers(-2, 3, p.type.concrete({"N": n})).astype(np.float32)
                  if name.startswith("wmax") else        # small integers: ties in windows
                  rng.standard_normal(p.type.concrete({"N": n})).astype(np.float32)
                  for p in f.params]
        args = {p.attrs["name"]: a for p, a in zip(f.params, arrays)}
        got = {t: mod.call(name, args) for t, mod in mods.items()}
        assert_matches(got[1], reference(f, arrays), f"{name} N={n}")
        for t in THREADS[1:]:
            np.testing.assert_array_equal(got[1][0], got[t][0], err_msg=f"{name} {t} threads")
    if n == 40 and not mods[1].debug:   # enough work to go to the pool, in every kernel
        assert pool.POOL.counts()[0] - before >= 2 * len(fs)      # (a debug build: one thread)


def test_winograd_conv2d_and_its_gradients_at_every_thread_count() -> None:
    """A relu'd Winograd conv2d (the benchmark's second layer, smaller): result and both
    gradients natively against the interpreter, the same bits at 1, 2 and 3 threads."""
    x = make("arg", name="x", dtype=DType.f32, shape=(N, 8, 7, 16))
    w = make("arg", name="w", dtype=DType.f32, shape=(3, 3, 16, 24))
    r = make("arg", name="r", dtype=DType.f32, shape=(N, 8, 7, 24))
    out = make("relu", make("conv2d", x, w, padding="same"))
    gx, gw = grad_of(make("sum", out * r, axis=None), [x, w])
    func = Func("g", (x, w, r), (out, gx, gw))
    mods = {t: compile_module({"g": func}, threads=t) for t in THREADS}
    for n in (0, 1, 40):
        rng = np.random.default_rng(n)
        arrays = [rng.standard_normal(s).astype(np.float32)
                  for s in ((n, 8, 7, 16), (3, 3, 16, 24), (n, 8, 7, 24))]
        got = {t: mod.call("g", dict(zip("xwr", arrays))) for t, mod in mods.items()}
        want = reference(func, [a.astype(np.float64) for a in arrays])
        # f32 against f64: the sums of 144 products (and the transforms' few adds) differ
        # by rounding, a few ulp of their magnitude
        for a, b in zip(got[1], want):
            np.testing.assert_allclose(a, b, rtol=1e-4,
                                       atol=1e-4 * max(1, np.abs(b).max(initial=0)))
        for t in THREADS[1:]:
            for a, b in zip(got[1], got[t]):
                np.testing.assert_array_equal(a, b)
