"""Pipelines as text specs, passes as objects with explicit options, and the PassContext that
replaces the hidden globals (the checkpoint policy, the rewrite counter, verify-each)."""
from __future__ import annotations

import pytest

import graphc
from graphc.ir.errors import GraphArgumentTypeError, GraphCallError, GraphError
from graphc.ir.text import print_func
from graphc.passes import (
    LEVELS,
    PASSES,
    PIPELINES,
    Step,
    checkpoint,
    format_pipeline,
    fusion,
    parse_pipeline,
    pipeline,
    run_pipeline,
)
from graphc.passes.manager import VERIFY_ENV, run_steps, verify_from_env, with_required
from graphc.passes.rewrite import Counter, NoOptions, PassContext
from tests.conftest import canonical, parse_one
from tests.passes.test_manager import mlp
from tests.passes.test_memplan_checkpoint import SOURCE

SPEC = "autodiff,simplify,checkpoint{policy=elementwise,forward=1},fusion{recompute=none},memplan"

BACKWARD = canonical(SOURCE)      # exp is kept for the backward unless checkpointing recomputes it


def test_passes_are_objects_with_a_name_a_doc_and_frozen_options() -> None:
    for name, p in PASSES.items():
        assert p.name == name and p.doc.endswith(".")
        assert p.Options.__dataclass_params__.frozen          # type: ignore[attr-defined]
        p.Options()                                           # every option has a default
    assert PASSES["cse"].Options is NoOptions
    assert checkpoint.Options().policy is None and fusion.Options().recompute == "cheap"


def test_levels_are_specs_and_specs_print_back_as_themselves() -> None:
    assert [tuple(s.name for s in parse_pipeline(t)) for t in LEVELS] == list(PIPELINES)
    for n, text in enumerate(LEVELS):
        assert pipeline(n) == pipeline(f"O{n}") == pipeline(f"-O{n}") == parse_pipeline(text)
    steps = parse_pipeline(" " + SPEC.replace(",", " , ") + " ")
    assert format_pipeline(steps) == SPEC and parse_pipeline(format_pipeline(steps)) == steps
    assert steps[2] == Step("checkpoint", (("policy", "elementwise"), ("forward", 1)))
    assert parse_pipeline("checkpoint{policy=8000000}")[0].given == (("policy", 8000000),)


@pytest.mark.parametrize("spec, message", [
    ("autodiff,simplfy", "unknown pass 'simplfy' .*did you mean 'simplify'"),
    ("checkpoint{polcy=all}", "no option 'polcy' \\(it takes policy, forward\\).*'policy'"),
    ("cse{limit=1}", "pass 'cse' has no option 'limit' \\(it takes none\\)"),
    ("checkpoint{policy=some}", "checkpoint must be one of"),
    ("fusion{recompute=always}", "recompute must be one of cheap, elementwise, none"),
    ("autodiff,,dce", "bad pipeline spec 'autodiff,,dce' at column 10"),
    ("autodiff dce", "bad pipeline spec"),
    ("dce,", "ends with ','"),
    ("checkpoint{policy}", "write name=value"),
    ("", "empty pipeline spec"),
    ("O7", "opt_level must be 0..3"),
])
def test_a_bad_spec_is_one_clear_error(spec: str, message: str) -> None:
    with pytest.raises(GraphCallError, match=message):
        parse_pipeline(spec)


def test_required_passes_are_added_where_they_belong() -> None:
    def names(spec: str) -> str:
        return format_pipeline(pipeline(spec))
    assert names("simplify,cse") == "autodiff,simplify,cse,dce"
    assert names("simplify,fusion,memplan") == "autodiff,simplify,dce,fusion,memplan"
    assert names("dce,autodiff") == "dce,autodiff"                 # present: left as written
    assert format_pipeline(pipeline("simplify", required=False)) == "simplify"
    assert with_required(()) == (Step("autodiff"), Step("dce"))


def test_a_level_and_its_spec_give_the_same_ir() -> None:
    f = mlp()
    for n, text in enumerate(LEVELS):
        assert print_func(run_pipeline(f, text)) == print_func(run_pipeline(f, n))


def test_checkpoint_takes_its_policy_from_options_not_a_global() -> None:
    func = parse_one(BACKWARD)
    kept = run_pipeline(func, "fusion,memplan")
    again = run_pipeline(func, "checkpoint{policy=elementwise,forward=1},fusion,memplan")
    assert print_func(again) != print_func(kept)
    by_context = run_pipeline(func, "checkpoint,fusion,memplan",
                              options={"checkpoint": checkpoint.Options("elementwise", 1)})
    assert print_func(by_context) == print_func(again)
    spec_wins = run_pipeline(func, "checkpoint{policy=all},fusion,memplan",
                             options={"checkpoint": checkpoint.Options(None, 1)})
    assert print_func(spec_wins) == print_func(again)           # nothing but matmuls here
    with pytest.raises(GraphCallError, match="needs forward=K"):
        run_pipeline(func, "checkpoint{policy=elementwise}")
    with pytest.raises(GraphCallError, match="must be a graphc.passes.checkpoint.Options"):
        run_pipeline(func, "checkpoint", options={"checkpoint": "elementwise"})


def test_fusion_options_change_the_kernels() -> None:
    func = parse_one(canonical("""
        func @f(%x: f32[N,4]) -> (f32[4], f32[N]) {
          %0 = neg %x : f32[N,4]
          %1 = sum %0 {axis=[0], keepdims=false} : f32[4]
          %2 = max %0 {axis=[1], keepdims=false} : f32[N]
          return %1, %2
        }"""))

    def kernels(spec: str) -> list[str]:
        out = run_pipeline(func, spec, required=False)
        return [v.attrs["body"].name for v in out.values() if v.op == "fused"]
    assert kernels("fusion") == ["reduce.sum", "row.max"]            # neg recomputed in each
    assert kernels("fusion{recompute=none}") == ["loop.neg", "reduce.sum", "row.max"]


def test_the_counter_travels_in_the_context() -> None:
    f = run_pipeline(mlp(), "autodiff")
    ctx = PassContext(Counter(limit=0), verify_each=True)
    assert run_steps(f, parse_pipeline("constant_fold,simplify,cse"), ctx) is f
    assert ctx.counter.count > 0 and ctx.counter.applied == 0
    with pytest.raises(AttributeError):
        ctx.verify_each = False                                  # type: ignore[misc]


def test_verify_each_comes_from_one_environment_variable(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    src = "graph g {\n  input x: f32[N]\n  y = exp(x)\n  output y\n}\n"
    assert verify_from_env() is True                             # tests/conftest.py sets it
    assert graphc.compile_source(src, backend="interp").verify_each
    monkeypatch.setenv(VERIFY_ENV, "0")
    assert verify_from_env() is False
    assert not graphc.compile_source(src, backend="interp").verify_each
    assert graphc.compile_source(src, backend="interp", opt_level=0).verify_each
    monkeypatch.delenv(VERIFY_ENV)
    assert verify_from_env() is None
    monkeypatch.setenv(VERIFY_ENV, "maybe")
    with pytest.raises(GraphError, match=VERIFY_ENV):
        verify_from_env()


def test_compile_takes_a_pipeline_spec() -> None:
    src = "graph g {\n  input x: f32[N]\n  y = exp(x) * 1.0\n  output y\n}\n"
    model = graphc.compile_source(src, backend="interp", passes="simplify")
    assert format_pipeline(model.pipeline) == "autodiff,simplify,dce"
    assert "mul" not in model.dump_ir("forward")
    assert "mul" in graphc.compile_source(src, backend="interp", passes="O0").dump_ir("forward")
    with pytest.raises(GraphCallError, match="did you mean 'simplify'"):
        graphc.compile_source(src, backend="interp", passes="simplfy")
    with pytest.raises(GraphArgumentTypeError, match="passes must be a pipeline spec"):
        graphc.compile_source(src, backend="interp", passes=["simplify"])
