"""Horizontal fusion as IR text in, IR text out (each case also checked on the interpreter,
which runs each sibling on its own): kernels over one iteration space that read a common operand
become one kernel with several results, one ``fused`` value per result. Then the memory plan
(siblings share a step) and the native code (one loop nest) against the interpreter."""
from __future__ import annotations

import numpy as np
import pytest

from graphc.ir.ops.fused import is_sibling, kernel_of
from graphc.ir.text import print_func
from graphc.passes import fusion, memplan
from graphc.runtime import compile_module
from graphc.runtime.kernelplan import plan_kernels
from tests.conftest import canonical, check_pass, parse_one
from tests.runtime.conftest import assert_matches, reference

UPDATE = """
    func @f(%p: f32[4,3], %m: f32[4,3], %g: f32[4,3], %ok: bool[]) -> (p: f32[4,3], m: f32[4,3]) {
      %0 = const 0.9 : f32[]
      %1 = mul %m, %0 : f32[4,3]
      %2 = add %1, %g : f32[4,3]
      %3 = sqrt %2 : f32[4,3]
      %4 = sub %p, %3 : f32[4,3]
      %5 = where %ok, %4, %p : f32[4,3]
      %6 = where %ok, %2, %m : f32[4,3]
      return %5, %6
    }"""

STATS = """
    func @f(%g: f32[N,3]) -> (f64[], i64[]) {
      %0 = cast %g {dtype=f64} : f64[N,3]
      %1 = mul %0, %0 : f64[N,3]
      %2 = sum %1 {axis=[0, 1], keepdims=false} : f64[]
      %3 = isfinite %g : bool[N,3]
      %4 = const 0 : i64[]
      %5 = const 1 : i64[]
      %6 = where %3, %4, %5 : i64[N,3]
      %7 = sum %6 {axis=[0, 1], keepdims=false} : i64[]
      return %2, %7
    }"""

def test_fusion_siblings_update_a_param_and_its_state_in_one_kernel() -> None:
    """The new param and the new state read m and g: one kernel of two results; the state's
    new value (``%2``) is computed once in it."""
    check_pass("fusion", UPDATE, """
        func @f(%p: f32[4,3], %m: f32[4,3], %g: f32[4,3], %ok: bool[]) -> (p: f32[4,3], m: f32[4,3]) {
          %0 = fused %m, %g, %p, %ok {body=func @loop.where.x2(%m: f32[4,3], %g: f32[4,3], %p: f32[4,3], %ok: bool[]) -> (f32[4,3], f32[4,3]) {
            %0 = const 0.9 : f32[]
            %1 = mul %m, %0 : f32[4,3]
            %2 = add %1, %g : f32[4,3]
            %3 = sqrt %2 : f32[4,3]
            %4 = sub %p, %3 : f32[4,3]
            %5 = where %ok, %4, %p : f32[4,3]
            %6 = where %ok, %2, %m : f32[4,3]
            return %5, %6
          }} : f32[4,3]
          %1 = fused %m, %g, %p, %ok {body=func @loop.where.x2(%m: f32[4,3], %g: f32[4,3], %p: f32[4,3], %ok: bool[]) -> (f32[4,3], f32[4,3]) {
            %0 = const 0.9 : f32[]
            %1 = mul %m, %0 : f32[4,3]
            %2 = add %1, %g : f32[4,3]
            %3 = sqrt %2 : f32[4,3]
            %4 = sub %p, %3 : f32[4,3]
            %5 = where %ok, %4, %p : f32[4,3]
            %6 = where %ok, %2, %m : f32[4,3]
            return %5, %6
          }, result=1} : f32[4,3]
          return %0, %1
        }""")


def test_fusion_siblings_norm_and_count_in_one_pass() -> None:
    body = """{body=func @row.sum.x2(%g: f32[N,3]) -> (f64[], i64[]) {
            %0 = cast %g {dtype=f64} : f64[N,3]
            %1 = mul %0, %0 : f64[N,3]
            %2 = sum %1 {axis=[0, 1], keepdims=false} : f64[]
            %3 = isfinite %g : bool[N,3]
            %4 = const 0 : i64[]
            %5 = const 1 : i64[]
            %6 = where %3, %4, %5 : i64[N,3]
            %7 = sum %6 {axis=[0, 1], keepdims=false} : i64[]
            return %2, %7
          }"""
    check_pass("fusion", STATS, f"""
        func @f(%g: f32[N,3]) -> (f64[], i64[]) {{
          %0 = fused %g {body}}} : f64[]
          %1 = fused %g {body}, result=1}} : i64[]
          return %0, %1
        }}""")


@pytest.mark.parametrize("text", [
    # reductions over rows keep their rows as the parallel axis: not merged
    """
    func @f(%x: f32[N,4]) -> (f32[N], f32[N]) {
      %0 = sum %x {axis=[1], keepdims=false} : f32[N]
      %1 = max %x {axis=[1], keepdims=false} : f32[N]
      return %0, %1
    }""",
    # one kernel reads the other's result: merging would form a cycle
    """
    func @f(%x: f32[4,3]) -> (f32[4,3], f32[]) {
      %0 = exp %x : f32[4,3]
      %1 = sum %0 {axis=[0, 1], keepdims=false} : f32[]
      %2 = div %x, %1 : f32[4,3]
      return %2, %1
    }""",
    # different iteration spaces
    """
    func @f(%x: f32[4,3], %y: f32[3]) -> (f32[4,3], f32[3]) {
      %0 = exp %x : f32[4,3]
      %1 = exp %y : f32[3]
      return %0, %1
    }"""], ids=["rows", "dependent", "shapes"])
def test_fusion_siblings_not_merged(text: str) -> None:
    out = fusion.run(parse_one(canonical(text)))
    assert not any(is_sibling(v) for v in out.values())


def test_memplan_runs_siblings_in_one_step_each_in_place() -> None:
    out = memplan.run(fusion.run(parse_one(canonical(UPDATE))))
    ks = [v for v in out.values() if v.op == "fused"]
    assert len(ks) == 2 and kernel_of(ks[0]) == kernel_of(ks[1])
    assert [k.attrs["step"] for k in ks] == [0, 0]
    assert [k.attrs["inplace"] for k in ks] == ["p", "m"]
    plan = plan_kernels(out)
    assert plan is not None and len(plan.steps) == 1          # one loop nest writes both
    text = print_func(out)
    assert print_func(parse_one(text)) == text                # the dump reads back


@pytest.mark.parametrize("debug", [False, True])
def test_siblings_natively_equal_the_interpreter_on_any_thread_count(debug: bool) -> None:
    rng = np.random.default_rng(0)
    cases = [(UPDATE, {}), (STATS, {"N": 7})]
    for text, env in cases:
        func = parse_one(canonical(text))
        fused = memplan.run(fusion.run(func))
        outs = []
        for threads in (1, 2):
            mod = compile_module({"f": fused}, cache=False, debug=debug, threads=threads)
            arrays = []
            for p in func.params:
                shape = p.type.concrete(env)
                a = rng.uniform(0.1, 2.0, shape) if p.dtype.is_float else np.asarray(True)
                arrays.append(np.asarray(a).astype(p.dtype.np))
            if "N" in env:
                arrays[0].flat[3] = np.inf            # the count sees it, the norm is inf
            got = mod.call("f", {p.attrs["name"]: a for p, a in zip(func.params, arrays)},
                           dims=env)
            assert_matches(got, reference(func, arrays, env))
            outs.append((arrays, got))
        rerun = compile_module({"f": fused}, cache=False, debug=debug, threads=2)
        again = rerun.call("f", {p.attrs["name"]: a for p, a in zip(func.params, outs[0][0])},
                           dims=env)
        assert all(np.array_equal(a, b) for a, b in zip(outs[0][1], again))
