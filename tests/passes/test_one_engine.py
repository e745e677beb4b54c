"""One fusion engine: every -O level ends with the fusion and memplan passes, and the runtime
plans exactly the kernels the IR holds, in the memory plan's order and at its offsets, never a
kernel of its own. A kernel the backend cannot lower is refused by fusion (with a ``fusion:``
note) and an error in the runtime, never quietly split. Plans only: no LLVM compile here."""
from __future__ import annotations

import pathlib

import pytest

import graphc
from graphc.ir.core import Func, make
from graphc.ir.errors import GraphError
from graphc.ir.ops.fused import FUSED
from graphc.ir.ops.kernelshape import analyze
from graphc.passes import fusion, run_pipeline
from graphc.runtime.kernelplan import make_plan, plan_kernels
from tests.conftest import canonical, parse_one

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def models() -> dict[int, graphc.Model]:
    return {level: graphc.compile(EXAMPLES / "mlp.graph", backend="interp", opt_level=level)
            for level in range(4)}


@pytest.mark.parametrize("level", range(4))
def test_the_runtime_runs_the_kernels_the_ir_shows(models: dict[int, graphc.Model],
                                                   level: int) -> None:
    for name, func in models[level].optimized.items():
        # one kernel per step: a kernel with several results is one fused value per result
        # (``result=k`` from the second on), all of them one step
        kernels = [v for v in func.values() if v.op == FUSED and not v.attrs.get("result", 0)]
        assert kernels, f"-O{level} {name} holds no kernels"
        plan = plan_kernels(func)
        assert plan is not None, f"-O{level} {name} left ops outside kernels:\n{func}"
        assert len(plan.steps) == len(kernels)
        by_step = sorted(kernels, key=lambda k: k.attrs["step"])
        for step, k in zip(plan.steps, by_step):    # the memory plan's order, kernel by kernel
            body_root = k.attrs["body"].results[0]
            assert step.value is k or step.value is body_root


def test_o0_puts_each_op_in_a_kernel_of_its_own(models: dict[int, graphc.Model]) -> None:
    text = models[0].dump_ir("backward")
    bodies = [v.attrs["body"] for v in models[0].optimized["backward"].values()
              if v.op == FUSED]
    assert all(sum(x.op not in ("arg", "const") for x in b.values()) == 1 for b in bodies)
    assert "fused" in text and "slot=" in text
    # and -O2 fuses: fewer kernels for the same function
    o2 = [v for v in models[2].optimized["backward"].values() if v.op == FUSED]
    assert len(o2) < len(bodies)


def test_single_policy_is_an_option_of_the_fusion_pass() -> None:
    f = parse_one(canonical("""
        func @f(%x: f32[N]) -> (f32[]) {
          %0 = exp %x : f32[N]
          %1 = sum %0 {axis=[0], keepdims=false} : f32[]
          return %1
        }"""))
    one = run_pipeline(f, "fusion{policy=single}", required=False)
    assert [v.attrs["body"].name for v in one.values() if v.op == FUSED] == ["loop.exp",
                                                                            "row.sum"]
    fused = run_pipeline(f, "fusion", required=False)
    assert [v.attrs["body"].name for v in fused.values() if v.op == FUSED] == ["row.sum"]
    with pytest.raises(graphc.GraphCallError, match="policy must be one of"):
        run_pipeline(f, "fusion{policy=greedy}", required=False)


TWO_MATMULS = """
    func @f(%x: f32[N,3], %w: f32[3,3]) -> (f32[N,3]) {
      %0 = matmul %x, %w : f32[N,3]  # m.graph:1:5
      %1 = matmul %0, %w : f32[N,3]
      %2 = tanh %1 : f32[N,3]
      return %2
    }"""


def test_fusion_refuses_what_the_backend_cannot_lower_and_says_why() -> None:
    f = parse_one(canonical(TWO_MATMULS))
    notes = fusion.explain(f)
    assert any(n.startswith("fusion: 'matmul' f32[N,3] at m.graph:1:5") for n in notes), notes
    out = fusion.run(f)
    for b in [v.attrs["body"] for v in out.values() if v.op == FUSED]:
        assert not isinstance(analyze(b.results[0], lambda x: x.op != "arg"), str), b
    assert len(make_plan(out).steps) == 2            # two kernels, as the IR shows


def test_a_kernel_the_backend_cannot_lower_is_an_error_not_a_replan() -> None:
    f = parse_one(canonical(TWO_MATMULS))
    x, w = f.params
    body = Func("two", (x, w), f.results)
    xo = make("arg", name="x", dtype=x.dtype, shape=x.shape)
    wo = make("arg", name="w", dtype=w.dtype, shape=w.shape)
    g = Func("g", (xo, wo), (make(FUSED, xo, wo, body=body),))
    with pytest.raises(GraphError, match="cannot lower kernel two: a kernel holds at most one "
                                         "matmul"):
        make_plan(g)


def test_ops_outside_kernels_run_one_step_each() -> None:
    """A pipeline without fusion (or a hand-made function): each op is its own step, nothing
    fused behind the IR's back."""
    f = parse_one(canonical("""
        func @f(%x: f32[N]) -> (f32[]) {
          %0 = exp %x : f32[N]
          %1 = mul %0, %0 : f32[N]
          %2 = sum %1 {axis=[0], keepdims=false} : f32[]
          return %2
        }"""))
    assert [s.value.op for s in make_plan(f).steps] == ["exp", "mul", "sum"]
    assert plan_kernels(f) is None
