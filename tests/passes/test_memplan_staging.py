"""The planner's trade between staging a param update (a write and a copy on every call) and
holding it back until the param's other readers ran (a larger workspace peak)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc.passes import memplan

MLP3 = Path(__file__).parents[2] / "examples" / "mlp3.graph"


@pytest.fixture(scope="module")
def step():
    return graphc.compile(MLP3, backend="interp").optimized["sgd_step"]


def test_every_weight_update_of_the_mlp_step_writes_in_place(step) -> None:
    plan = memplan.plan(step)
    updates = memplan._Graph(step, memplan.kernels_of(step)).updates
    assert len(updates) == 3 and set(updates) <= set(plan.inplace)


def test_a_staged_byte_costing_one_byte_of_peak_stages_w2_and_w3(step, monkeypatch) -> None:
    monkeypatch.setattr(memplan, "STAGING_COST", 1)
    plan = memplan.plan(step)
    updates = memplan._Graph(step, memplan.kernels_of(step)).updates
    assert len(set(updates) - set(plan.inplace)) == 2


def test_the_in_place_step_equals_the_interpreter() -> None:
    native = graphc.compile(MLP3)
    interp = graphc.compile(MLP3, backend="interp")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 784)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 5)]
    p1, p2 = native.init_params(seed=1), interp.init_params(seed=1)
    for _ in range(3):
        native.sgd_step(p1, 0.1, x=x, y=y)
        interp.sgd_step(p2, 0.1, x=x, y=y)
    for k in p1:
        np.testing.assert_allclose(p1[k], p2[k], rtol=1e-5, atol=1e-6)
