"""Horizontal fusion (issue 13): an optimiser's update of a param and of its state is one
multi-result kernel, as is a gradient's norm with its non-finite count; natively it equals the
interpreter (which runs the fused IR, each sibling on its own), is bitwise the same on 1 and 2
threads, and bitwise what the separate kernels computed."""
from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.ir.ops.fused import is_sibling, kernel_of
from graphc.optim import Adam

SRC = """
graph mlp {
    input  x: f32[N, 6]
    input  y: f32[N, 3]
    param  W1: f32[6, 8] = glorot_uniform
    param  b1: f32[8]    = zeros
    param  W2: f32[8, 3] = glorot_uniform
    h    = relu(x @ W1 + b1)
    loss = mean(softmax_cross_entropy(h @ W2, y))
    output loss
    grad   loss
}
"""


# the default pipeline with kernels fused vertically only (fusion{horizontal=false})
VERTICAL = "autodiff,constant_fold,simplify,cse,dce,checkpoint,fusion{horizontal=false},memplan"


@pytest.fixture(scope="module")
def models() -> dict[str, graphc.Model]:
    opt = Adam(lr=1e-2, clip_norm=1.0)
    return {"native1": graphc.compile_source(SRC, optimizer=opt, num_threads=1),
            "native2": graphc.compile_source(SRC, optimizer=opt, num_threads=2),
            "interp": graphc.compile_source(SRC, optimizer=opt, backend="interp"),
            "vertical": graphc.compile_source(SRC, optimizer=opt, num_threads=1,
                                              passes=VERTICAL)}


def batch(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((5, 6)).astype(np.float32),
            "y": np.eye(3, dtype=np.float32)[rng.integers(0, 3, 5)]}


def test_the_update_of_a_param_and_its_state_is_one_kernel(models: dict[str, graphc.Model]
                                                           ) -> None:
    func = models["native1"].optimized["train_step"]
    kernels = [v for v in func.values() if v.op == "fused"]
    groups: dict[tuple, list] = {}
    for k in kernels:
        if is_sibling(k):
            groups.setdefault(kernel_of(k), []).append(k)
    assert groups and all(len({k.attrs["step"] for k in g}) == 1 for g in groups.values())
    writes = [sorted(k.attrs.get("inplace", "") for k in g) for g in groups.values()]
    assert ["W1", "W1.exp_avg", "W1.exp_avg_sq"] in writes
    text = models["native1"].dump_ir(func="train_step")
    assert "result=2" in text and ".x3(" in text          # the siblings read as IR


def test_native_equals_the_interpreter_and_threads_agree_bitwise(
        models: dict[str, graphc.Model]) -> None:
    runs = {}
    for name, m in models.items():
        params = m.init_params(seed=0)
        state = m.init_state(params)
        stats = [m.train_step(params, state, **batch(k)) for k in range(4)]
        runs[name] = (params, state, stats)
    one, two = runs["native1"], runs["native2"]
    assert not any(is_sibling(v) for v in models["vertical"].optimized["train_step"].values())
    for k in (0, 1):                    # horizontal fusion changes no bit of the step
        for key in runs["vertical"][k]:
            assert np.array_equal(one[k][key], runs["vertical"][k][key])
    for key in one[0]:
        assert np.array_equal(one[0][key], two[0][key])
        np.testing.assert_allclose(one[0][key], runs["interp"][0][key], rtol=1e-5, atol=1e-6)
    for key in one[1]:
        assert np.array_equal(one[1][key], two[1][key])
        np.testing.assert_allclose(one[1][key], runs["interp"][1][key], rtol=1e-5, atol=1e-7)
    assert [s["grad_norm"] for s in one[2]] == [s["grad_norm"] for s in two[2]]
    np.testing.assert_allclose([s["grad_norm"] for s in one[2]],
                               [s["grad_norm"] for s in runs["interp"][2]], rtol=1e-6)


def test_a_planted_nan_is_counted_and_skipped_by_the_fused_kernels(
        models: dict[str, graphc.Model]) -> None:
    m = models["native1"]
    params = m.init_params(seed=0)
    state = m.init_state(params)
    bad = batch(1)
    bad["x"][2, 3] = np.nan
    before = {k: v.copy() for k, v in {**params, **state}.items()}
    stats = m.train_step(params, state, **bad)
    assert stats["skipped"] and stats["nonfinite"] > 0
    assert all(np.array_equal(before[k], v) for k, v in {**params, **state}.items())
