"""Fusion, memory planning and checkpointing seen from the API and the command line: the memory
plan of a model (peak formula, buffer table, values saved for backward) is the arena the runtime
allocates, dumps show kernels and slots and read back, the fusion dump explains its rejections,
and checkpointing lowers the peak without changing results."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import graphc
from graphc.ir import parse
from graphc.ir.types import dim_eval
from graphc.passes.memplan import Report
from tests.e2e.conftest import EXAMPLES
from tests.e2e.test_cli import run_cli


@pytest.fixture(scope="module")
def mlp() -> graphc.Model:
    return graphc.compile(EXAMPLES / "mlp.graph", cache=False)


def batch(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, 784)).astype(np.float32),
            "y": np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]}


def test_memory_plan_is_the_arena_the_runtime_allocates() -> None:
    model = graphc.compile(EXAMPLES / "mlp.graph", cache=False)
    params = model.init_params(0)
    for n in (3, 64, 256):
        plan = model.memory_plan(N=n)
        model.value_and_grad(**batch(n), **params)
        assert model._native.arena.size == plan.peak_bytes
        assert dim_eval(parse_dim(plan.peak_formula), {"N": n}) == plan.peak_bytes


def parse_dim(text: str) -> object:
    from graphc.ir.text import parse_type
    return parse_type(f"f32[{text}]").shape[0]


def test_memory_plan_lists_buffers_and_what_backward_keeps(mlp: graphc.Model) -> None:
    plan = mlp.memory_plan(N=256)
    assert isinstance(plan, Report) and plan.func == "mlp.backward" and plan.kernels == 13
    first = plan.buffers[0]
    assert first.name.endswith("matmul.relu") and first.size == 256 * 256 * 4
    assert first.slot == 0 and first.offset == 0 and first.lifetime[0] == 0
    grads = [b for b in plan.buffers if b.out is not None]
    assert sorted(b.out for b in grads) == [0, 1, 2, 3, 4, 5] and all(b.slot is None
                                                                      for b in grads)
    assert [b.name.split()[1] for b in plan.saved] == ["row.sum", "loop.exp", "matmul.relu"]
    for a in plan.buffers:               # two buffers in one slot never live at the same time
        for b in plan.buffers:
            if a is not b and a.slot is not None and a.slot == b.slot \
                    and a.lifetime[0] < b.lifetime[0]:
                assert a.lifetime[1] <= b.lifetime[0]
    assert "saved for backward" in str(plan) and "1076*N" in str(plan)
    assert mlp.memory_plan("forward", N=256).peak_bytes < plan.peak_bytes


def test_peak_at_batch_2048_is_close_to_what_training_needs(mlp: graphc.Model) -> None:
    """Caller's arrays plus the arena vs params, gradients, inputs, outputs and the activations
    backward needs (the hidden layer and the class probabilities): within 1.3x."""
    n = 2048
    plan = mlp.memory_plan(N=n)
    params = sum(4 * int(np.prod(t.shape)) for t in mlp.params.values())
    inputs = 4 * n * (784 + 10)
    outputs = 4 * n * 10 + 4
    needed = 4 * n * (256 + 10)
    ideal = params + params + inputs + outputs + needed
    assert params + inputs + params + outputs + plan.peak_bytes <= 1.3 * ideal
    assert plan.peak_bytes <= 1.3 * needed


def test_dumps_show_kernels_and_slots_and_read_back(mlp: graphc.Model) -> None:
    text = mlp.dump_ir(func="backward")
    assert "fused" in text and "slot=0" in text and "offset=0" in text and "step=12" in text
    assert str(parse(text)).strip() == text.strip()
    after = mlp.dump_ir(func="backward", after="fusion")
    notes = [line for line in after.splitlines() if line.startswith("# fusion: ")]
    assert len(notes) == 6 and any("would form a cycle" in n for n in notes)
    assert any("duplicate expensive work" in n for n in notes)
    assert str(parse(after)).strip() == after[:after.index("\n# fusion")].strip()


def test_cli_dump_after_fusion_explains_rejections(capsys) -> None:  # type: ignore
    rc, out, _ = run_cli(capsys, "compile", str(EXAMPLES / "mlp.graph"), "--dump-after",
                         "fusion")
    assert rc == 0 and "// ----- after fusion -----" in out
    assert "# fusion: 'sum' f32[N] at " in out and "reductions over different axes" in out


@pytest.mark.parametrize("policy", ["elementwise", "all", {"budget": 2_200_000, "N": 2048}])
def test_checkpointing_lowers_the_peak_and_keeps_results(mlp: graphc.Model, policy: object
                                                         ) -> None:
    model = graphc.compile(EXAMPLES / "mlp.graph", cache=False, checkpoint=policy)
    assert model.memory_plan(N=2048).peak_bytes < mlp.memory_plan(N=2048).peak_bytes
    params = mlp.init_params(1)
    data = batch(32, 1)
    out, grads = model.value_and_grad(**data, **params)
    want_out, want_grads = mlp.value_and_grad(**data, **params)
    for k in want_grads:
        np.testing.assert_allclose(grads[k], want_grads[k], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out["loss"], want_out["loss"], rtol=1e-6)
    p1, p2 = ({k: v.copy() for k, v in params.items()} for _ in range(2))
    assert model.sgd_step(p1, 0.1, **data) == pytest.approx(mlp.sgd_step(p2, 0.1, **data))
    for k in p1:
        np.testing.assert_allclose(p1[k], p2[k], rtol=1e-5, atol=1e-7)


def test_checkpoint_budget_out_of_reach_warns() -> None:
    with pytest.warns(graphc.GraphWarning, match="out of reach"):
        model = graphc.compile(EXAMPLES / "mlp.graph", backend="interp",
                               checkpoint={"budget": 1000, "N": 2048})
    assert model.memory_plan(N=2048).peak_bytes > 1000


@pytest.mark.parametrize("policy, message", [
    ("sometimes", "checkpoint must be one of"), (-5, "checkpoint must be one of"),
    ({"budget": 10**6}, "add 'N': ..."), ({"budget": 10**6, "N": -1}, "checkpoint must")])
def test_bad_checkpoint_options_are_call_errors(policy: object, message: str) -> None:
    with pytest.raises(graphc.GraphCallError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graphc.compile(EXAMPLES / "mlp.graph", backend="interp", checkpoint=policy)


def test_memory_plan_needs_its_dims_and_the_kernel_pipeline(mlp: graphc.Model) -> None:
    with pytest.raises(graphc.GraphCallError, match="memory_plan needs a value for N"):
        mlp.memory_plan()
    bare = graphc.compile(EXAMPLES / "mlp.graph", backend="interp", passes="autodiff,simplify,dce")
    with pytest.raises(graphc.GraphCallError, match="no fusion and memplan passes"):
        bare.memory_plan(N=4)
