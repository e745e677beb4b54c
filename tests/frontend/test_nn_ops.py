"""conv2d, pooling, normalisation and the random ops from .graph source: keyword arguments,
strings and nested lists as attributes, a fresh random stream per call, and one small CNN on
both backends (same bits for the same key) with its gradients."""
from __future__ import annotations

import numpy as np
import pytest

import graphc
from tests.frontend.util import graph, run

CNN = """
graph cnn {
    input  x: f32[N, 6, 6, 1]
    input  key: i64[]
    input  rate: f32[]
    param  w1: f32[3, 3, 1, 4] = he_normal
    param  w2: f32[3, 3, 2, 4] = he_normal
    param  gamma: f32[4] = ones
    param  beta: f32[4]
    h = relu(conv2d(x, w1, padding="same"))
    h = batch_norm(conv2d(h, w2, stride=2, padding=[[1, 1], [0, 1]], groups=2), gamma, beta)
    p = max_pool2d(h, window=2, stride=1)
    a = avg_pool2d(h, [2, 3], padding="same")
    d1 = dropout(p, rate, key)
    d2 = dropout(p, rate, key)
    output d1
    output d2
    output noise = random_normal(key, [N, 2])
    output loss = sum(square(d1)) + mean(a) + mean(layer_norm(p, gamma, beta))
    output v = var(p, axis=[0, 1, 2], ddof=1)
    grad   loss
}
"""


@pytest.fixture(scope="module")
def models() -> tuple[graphc.Model, graphc.Model]:
    return (graphc.compile_source(CNN, backend="native"),
            graphc.compile_source(CNN, backend="interp"))


def inputs(n: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((n, 6, 6, 1)).astype(np.float32), "key": np.int64(11),
            "rate": np.float32(0.5)}


def test_native_matches_the_interpreter_and_random_bits_agree(models) -> None:
    native, interp = models
    params = interp.init_params(seed=1)
    for n in (3, 1):
        got = native(**inputs(n), **params)
        want = interp(**inputs(n), **params)
        assert got["d1"].shape == (n, 2, 2, 4)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=5e-6, err_msg=k)
        kept = want["d1"] != 0
        np.testing.assert_array_equal(got["d1"] != 0, kept)       # the same mask, bit for bit
        assert not np.array_equal(kept, want["d2"] != 0)          # two calls, two streams
    (_, g_native), (_, g_interp) = (m.value_and_grad(**inputs(), **params)
                                    for m in (native, interp))
    for k in g_interp:
        np.testing.assert_allclose(g_native[k], g_interp[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_each_random_call_gets_its_own_stream() -> None:
    fwd = graph(CNN).forward
    streams = [v.attrs["stream"] for v in fwd.values()
               if v.op in ("random_uniform", "random_normal")]
    assert len(streams) == 3 and len(set(streams)) == 3


def test_same_padding_and_explicit_stream() -> None:
    out = run("""
graph g {
    input x: f32[1, 5, 5, 2]
    input w: f32[3, 3, 1, 4]
    input k: i64[]
    output y = conv2d(x, w, stride=2, padding="same", groups=2)
    output u = random_uniform(k, [3], dtype=f64, stream=4)
    output z = conv1d(x[0], w[0], dilation=2, groups=2)
}""", x=np.ones((1, 5, 5, 2), np.float32), w=np.ones((3, 3, 1, 4), np.float32),
              k=np.int64(0))
    assert out["y"].shape == (1, 3, 3, 4) and out["y"][0, 1, 1, 0] == 9.0
    assert out["y"][0, 0, 0, 0] == 4.0                   # a corner sees 2x2 of the input
    assert out["u"].dtype == np.float64 and out["z"].shape == (5, 1, 4)


@pytest.mark.parametrize("expr", ["x[::-1]", "x[5:1:-2]", "x[-1:0:-1]", "x[1:5:-1]", "x[6::-3]",
                                  "x[:2:-1]", "x[::-2]", "x[-2::-1]"])
def test_negative_slice_steps_as_numpy(expr: str) -> None:
    x = np.arange(7.0, dtype=np.float32)
    got = run(f"graph g {{ input x: f32[7]\n output y = {expr} }}", x=x)["y"]
    np.testing.assert_array_equal(got, eval(expr))


def test_flip_and_negative_steps_on_symbolic_axes() -> None:
    src = """graph g {
    input x: f32[N, 3]
    output y = x[N-1::-1, ::-1]
    output w = x[N-2:0:-1, 2]
    output f = flip(x, axis=0)
    output p = pad(x, [[1, N], [0, 2]], value=-1)
}"""
    for n in (4, 2):
        x = np.arange(n * 3.0, dtype=np.float32).reshape(n, 3)
        out = run(src, x=x)
        np.testing.assert_array_equal(out["y"], x[::-1, ::-1])
        np.testing.assert_array_equal(out["w"], x[n - 2:0:-1, 2])
        np.testing.assert_array_equal(out["f"], x[::-1])
        np.testing.assert_array_equal(out["p"], np.pad(x, [[1, n], [0, 2]], constant_values=-1))


@pytest.mark.slow
def test_cnn_digits_example_reaches_98_percent(capsys) -> None:  # type: ignore[no-untyped-def]
    import importlib.util
    import pathlib
    import sys
    path = pathlib.Path(__file__).parents[2] / "examples" / "cnn_digits.py"
    spec = importlib.util.spec_from_file_location("cnn_digits", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["cnn_digits"] = mod
    spec.loader.exec_module(mod)
    acc = mod.main(epochs=6)
    assert acc >= 0.98, capsys.readouterr().out


def test_random_ops_take_literal_keys_and_rates() -> None:
    src = """graph g {
    input x: f32[2, 3]
    output y = dropout(x, 0.5, 7)
    output u = random_uniform(3, [4])
    output z = random_normal(5, [2], dtype=f64)
}"""
    out = run(src, x=np.ones((2, 3), np.float32))
    assert out["y"].dtype == np.float32 and set(np.unique(out["y"])) <= {0.0, 2.0}
    assert out["u"].shape == (4,) and out["z"].dtype == np.float64
    np.testing.assert_array_equal(run(src, x=np.ones((2, 3), np.float32))["u"], out["u"])


def test_pad_and_batch_norm_with_statistics_are_spelled_as_documented() -> None:
    """``pad(x, widths, value=)`` is the constant pad (the IR's pad_constant); batch_norm with
    mean and var given is the inference form (the IR's batch_norm_stats)."""
    src = """graph g {
        input x: f64[N, 3]
        input g: f64[3]
        input b: f64[3]
        input m: f64[3]
        input v: f64[3]
        output p = pad(x, [[1, 0], [0, 2]], value=-1)
        output y = batch_norm(x, g, b, m, v, eps=0.01)
        output z = batch_norm(x, g, b)
    }"""
    model = graphc.compile_source(src)
    rng = np.random.default_rng(0)
    x, g, b, m = (rng.standard_normal(s) for s in ((4, 3), 3, 3, 3))
    v = rng.uniform(0.5, 2.0, 3)
    out = model(x=x, g=g, b=b, m=m, v=v)
    np.testing.assert_array_equal(out["p"], np.pad(x, [[1, 0], [0, 2]], constant_values=-1))
    np.testing.assert_allclose(out["y"], (x - m) / np.sqrt(v + 0.01) * g + b, rtol=1e-12)
    mu, var = x.mean(0), x.var(0)
    np.testing.assert_allclose(out["z"], (x - mu) / np.sqrt(var + 1e-5) * g + b, rtol=1e-10)
