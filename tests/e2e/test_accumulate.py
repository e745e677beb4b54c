"""Gradient accumulation over micro-batches keeps one gradient buffer per param: each slice's
gradient is added to a running sum (the ``accumulate`` op) that its own kernel overwrites in
place, the slice's matmul fused into it (C += A @ B in the packed GEMM). Checked by the memory
plan of the digits-sized MLP and, natively, against the full-batch step where the slices are
deeper than the GEMM's k block, at every thread count."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc.optim import SGD, Adam

MLP = Path(__file__).resolve().parents[2] / "examples" / "mlp.graph"

WIDE = """
graph wide {
    input  x: f32[N, 40]
    input  y: f32[N, 3]
    param  W1: f32[40, 24]
    param  b1: f32[24] = normal(0.1)
    param  W2: f32[24, 3]
    param  b2: f32[3] = normal(0.1)
    h    = relu(x @ W1 + b1)
    loss = mean(softmax_cross_entropy(h @ W2 + b2, y))
    output loss
    grad loss
}
"""


def test_micro_batches_halve_the_peak_of_the_mlp() -> None:
    """Before the running sum, every slice's 784x256 gradient stayed live until one add at
    the end: k=4 peaked at 0.95 of k=1 on this model."""
    peaks = {}
    for k in (1, 4):
        model = graphc.compile(MLP, optimizer=SGD(lr=0.1), micro_batches=k, backend="interp")
        peaks[k] = model.memory_plan(N=2048, func="train_step").peak_bytes
    assert peaks[4] <= 0.5 * peaks[1], peaks


def test_the_running_sum_is_its_own_kernel_written_in_place() -> None:
    model = graphc.compile(MLP, optimizer=SGD(lr=0.1), micro_batches=4, backend="interp")
    text = str(model.memory_plan(N=2048, func="train_step"))
    rows = [line for line in text.splitlines() if "matmul.accumulate" in line]
    assert len(rows) == 6                   # W1 and W2: slices 2, 3 and 4 each
    w1 = [line.split("slot")[1] for line in rows if "802816" in line]
    assert len(w1) == 3 and len(set(w1)) == 1, rows     # one buffer for W1's running sum


@pytest.mark.parametrize("threads,opt_level", [(2, 2)])
def test_accumulating_slices_deeper_than_the_k_block(threads: int, opt_level: int) -> None:
    """Slices of 300 rows: each W gradient is a product over 300 > KC = 256 examples, so the
    in-place C += A @ B runs over two k blocks."""
    opt = Adam(lr=0.01)
    full = graphc.compile_source(WIDE, optimizer=opt, num_threads=threads, opt_level=opt_level)
    micro = graphc.compile_source(WIDE, optimizer=opt, micro_batches=2, num_threads=threads,
                                  opt_level=opt_level)
    rng = np.random.default_rng(3)
    p1 = full.init_params(seed=0)
    p2 = {n: a.copy() for n, a in p1.items()}
    s1, s2 = full.init_state(p1), micro.init_state(p2)
    for _ in range(3):
        x = rng.normal(size=(600, 40)).astype(np.float32)
        y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 600)]
        a = full.train_step(p1, s1, x=x, y=y)
        b = micro.train_step(p2, s2, x=x, y=y)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)
    for n in p1:
        np.testing.assert_allclose(p2[n], p1[n], rtol=1e-5, atol=1e-6)


RANDOM = """
graph g {
    input x: f64[N, 3]
    param w: f64[3]
    u    = random_uniform(7, [N], dtype=f64)
    d    = dropout(x, 0.5, 11)
    loss = mean(sum(d * w, axis=-1) * u)
    output loss
    grad loss
}
"""


@pytest.mark.parametrize("backend,ks", [("interp", (1, 2, 4)), ("native", (1, 2))])
def test_each_slice_draws_its_rows_of_the_batchs_random_numbers(backend: str,
                                                                ks: tuple[int, ...]) -> None:
    """Every slice drew the first rows of the batch's draw: k slices of one batch saw one
    dropout mask k times, and the step differed from the whole batch's."""
    x = np.random.default_rng(0).normal(size=(8, 3))
    got = []
    for k in ks:
        m = graphc.compile_source(RANDOM, optimizer=SGD(lr=0.1), micro_batches=k,
                                  backend=backend)
        params = {"w": np.array([1.0, 2.0, 3.0])}
        stats = m.train_step(params, m.init_state(params), x=x)
        got.append((float(stats["loss"]), params["w"]))
    for loss, w in got[1:]:
        assert loss == pytest.approx(got[0][0], rel=1e-12)
        np.testing.assert_allclose(w, got[0][1], rtol=1e-12)
