"""Identical kernels share one LLVM function (runtime/dedup.py): an unrolled loop compiles its
distinct kernels, not its steps; kernels that differ in a constant, an alias or a shape never
share; and shared kernels compute exactly what a kernel per step computes."""
from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.runtime import dedup

RNN = """
const T = {t}
fn cell(x, h, Wx, Wh, b) {{
    h2 = tanh(x @ Wx + h @ Wh + b)
    return h2, sum(h2 * h2)
}}
graph rnn {{
    input  xs: f32[T, N, 3]
    input  target: f32[N, 4]
    param  Wx: f32[3, 4]
    param  Wh: f32[4, 4] = normal(0.3)
    param  b:  f32[4]
    h = zeros([N, 4], f32)
    energy = zeros([], f32)
    for t in 0..T {{
        h, e = cell(xs[t], h, Wx, Wh, b)
        energy = energy + e
    }}
    loss = mse(h, target) + 0.001 * energy
    output loss, h
    grad loss
}}
"""


def inputs(model: graphc.Model, n: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {k: rng.standard_normal([n if not isinstance(d, int) else d for d in t.shape])
              for k, t in model.inputs.items()}
    return {k: a.astype(np.float32) for k, a in arrays.items()} | model.init_params(seed=1)


@pytest.fixture(scope="module")
def rnns() -> dict[int, graphc.Model]:
    return {t: graphc.compile_source(RNN.format(t=t), cache=False, debug=False) for t in (3, 6)}


def test_an_unrolled_loop_compiles_its_distinct_kernels(rnns: dict[int, graphc.Model]) -> None:
    small, big = (rnns[t].compile_stats.counts for t in (3, 6))
    assert big["kernels"] > small["kernels"] + 20           # twice the steps...
    assert big["kernel functions"] == small["kernel functions"]   # ...the same functions
    assert small["kernel functions"] < small["kernels"] / 2


def test_shared_kernels_match_the_interpreter_and_unshared_ones(
        rnns: dict[int, graphc.Model], monkeypatch: pytest.MonkeyPatch) -> None:
    model = rnns[6]
    args = inputs(model)
    out, grads = model.value_and_grad(**args)
    with monkeypatch.context() as m:
        # every step its own function (no key equals another): bitwise the same numbers
        m.setattr(dedup.KeyMaker, "key", lambda self, *a: object())
        apart = graphc.compile_source(RNN.format(t=6), cache=False, debug=False)
    assert apart.compile_stats.counts["kernel functions"] > \
        2 * model.compile_stats.counts["kernel functions"]
    out2, grads2 = apart.value_and_grad(**args)
    for got, want in ((out, out2), (grads, grads2)):
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    ref = graphc.compile_source(RNN.format(t=6), backend="interp")
    want_out, want_grads = ref.value_and_grad(**args)
    for got, want in ((out, want_out), (grads, want_grads)):
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=2e-5, atol=5e-6, err_msg=k)


LOOKALIKES = """
graph g {
    input x: f32[5, N]
    a = x[1] * 2.0
    b = x[2] * 2.0
    c = x[3] * 0.0
    d = x[4] * -0.0
    output a, b, c, d
}
"""


def test_kernels_that_differ_in_a_constant_do_not_share() -> None:
    """``x*0.0`` and ``x*-0.0`` differ (signs of zeros, NaN for inf): keys compare constants by
    repr, never by ``==`` (which calls 0.0 and -0.0 equal)."""
    model = graphc.compile_source(LOOKALIKES, cache=False, debug=False)
    x = np.array([[0.0, 0.0], [1.0, -2.0], [3.0, 4.0], [-5.0, 6.0], [-7.0, np.inf]],
                 np.float32)
    out = model(x=x)
    np.testing.assert_array_equal(out["a"], x[1] * 2)
    np.testing.assert_array_equal(out["b"], x[2] * 2)
    np.testing.assert_array_equal(np.signbit(out["c"]), np.signbit(x[3] * np.float32(0.0)))
    with np.errstate(invalid="ignore"):
        want = x[4] * np.float32(-0.0)
    np.testing.assert_array_equal(out["d"], want)
    counts = model.compile_stats.counts
    assert counts["kernel functions"] == counts["kernels"] - 1      # only a and b share
