"""Why ``flush_denormals`` exists: Adam's first moment of a weight whose gradient stops
decays by beta1 = 0.9 per step, through the subnormal range (slow on x86) on its way to zero.
Trained with the option, the state holds no subnormal and the params are what IEEE training
gives (an update from a subnormal moment is far below a param's rounding)."""
from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.runtime import fpmode

MLP = """graph m {
  input x: f32[N, 12]
  input y: f32[N, 3]
  param W1: f32[12, 16] = glorot_uniform
  param b1: f32[16] = zeros
  param W2: f32[16, 3] = glorot_uniform
  loss = mean(softmax_cross_entropy(relu(x @ W1 + b1) @ W2, y))
  output loss
  grad loss
}
"""
TINY = np.finfo(np.float32).tiny


def subnormal(a: np.ndarray) -> int:
    return int(((a != 0) & (np.abs(a) < TINY)).sum())


@pytest.mark.skipif(not fpmode.supported(), reason="no flush-to-zero mode on this machine")
def test_adam_with_flushed_denormals_keeps_no_subnormal_state() -> None:
    rng = np.random.default_rng(0)
    steps = 860                  # 0.9 ** n of a ~1e-3 moment is subnormal from ~n = 790 on
    xs = rng.random((steps, 1, 12)).astype(np.float32)
    xs[1:, :, :4] = 0            # features 0-3 are lit on the first step only
    ys = np.eye(3, dtype=np.float32)[rng.integers(0, 3, steps)][:, None, :]
    runs = {}
    for flush in (False, True):
        m = graphc.compile_source(MLP, optimizer=graphc.optim.Adam(lr=1e-3),
                                  flush_denormals=flush)
        params = m.init_params(seed=0)
        state = m.init_state(params)
        for x, y in zip(xs, ys):
            m.train_step(params, state, x=x, y=y)
        runs[flush] = params, state
    (p_ieee, s_ieee), (p_flush, s_flush) = runs[False], runs[True]
    assert subnormal(s_ieee["W1.exp_avg"][:4]) > 0          # IEEE: the decaying moments
    assert all(subnormal(v) == 0 for v in s_flush.values() if v.dtype == np.float32)
    np.testing.assert_array_equal(s_flush["W1.exp_avg"][:4], 0)
    for name in p_ieee:
        np.testing.assert_allclose(p_flush[name], p_ieee[name], rtol=1e-6, atol=1e-7,
                                   err_msg=name)
