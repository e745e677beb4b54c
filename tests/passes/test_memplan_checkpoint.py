"""The checkpoint pass as IR text in and out: which forward values each policy recomputes for
the backward (the copy is what fusion then folds into backward kernels), results unchanged; and
that without a policy the pass leaves the function alone."""
from __future__ import annotations

import pytest

from graphc.ir.text import print_func
from graphc.passes import checkpoint, fusion, memplan
from graphc.passes.rewrite import PassContext
from tests.conftest import canonical, parse_one, same_results

# forward: the loss (result 0); backward: W's gradient. exp is an elementwise kernel's output,
# tanh a matmul's, and the backward reads both.
SOURCE = """
    func @f(%x: f32[N,4], %W: f32[4,4]) -> (f32[], f32[4,4]) {
      %0 = exp %x : f32[N,4]
      %1 = matmul %x, %W : f32[N,4]
      %2 = tanh %1 : f32[N,4]
      %3 = mul %0, %2 : f32[N,4]
      %4 = sum %3 {axis=[0, 1], keepdims=false} : f32[]
      %5 = transpose %x {perm=[1, 0]} : f32[4,N]
      %6 = mul %0, %2 : f32[N,4]
      %7 = neg %6 : f32[N,4]
      %8 = matmul %5, %7 : f32[4,4]
      return %4, %8
    }"""


def ckpt(policy: str) -> str:
    func = parse_one(canonical(SOURCE))
    out = checkpoint.apply(func, checkpoint.Policy(policy), forward=1)
    same_results(func, out)
    return print_func(out)


def test_elementwise_recomputes_exp_and_keeps_the_matmul_output() -> None:
    assert ckpt("elementwise") == canonical("""
        func @f(%x: f32[N,4], %W: f32[4,4]) -> (f32[], f32[4,4]) {
          %0 = exp %x : f32[N,4]
          %1 = matmul %x, %W : f32[N,4]
          %2 = tanh %1 : f32[N,4]
          %3 = mul %0, %2 : f32[N,4]
          %4 = sum %3 {axis=[0, 1], keepdims=false} : f32[]
          %5 = transpose %x {perm=[1, 0]} : f32[4,N]
          %6 = exp %x : f32[N,4]
          %7 = mul %6, %2 : f32[N,4]
          %8 = neg %7 : f32[N,4]
          %9 = matmul %5, %8 : f32[4,4]
          return %4, %9
        }""")


def test_the_recomputed_value_leaves_the_plan() -> None:
    """Kept, exp is its own kernel whose buffer lives from the forward into the backward;
    recomputed, each side computes it inside a kernel it already has."""
    func = parse_one(canonical(SOURCE))
    kept = fusion.run(func)
    again = fusion.run(checkpoint.apply(func, checkpoint.Policy("elementwise"), forward=1))
    names = [[v.attrs["body"].name for v in f.values() if v.op == "fused"] for f in (kept, again)]
    assert names == [["loop.exp", "matmul.tanh", "row.sum", "loop.neg", "matmul.matmul"],
                     ["matmul.tanh", "row.sum", "loop.neg", "matmul.matmul"]]
    n = func.params[0].shape[0]
    assert (memplan.plan(kept).peak, memplan.plan(again).peak) == (32 * n, 16 * n)


def test_all_keeps_only_matmul_outputs() -> None:
    assert ckpt("all") == ckpt("elementwise")        # nothing else is saved here


@pytest.mark.parametrize("text", [SOURCE])
def test_without_a_policy_the_pass_changes_nothing(text: str) -> None:
    func = parse_one(canonical(text))
    assert checkpoint.run(func) is func
    assert checkpoint.run(func, PassContext(), checkpoint.Options(None, forward=1)) is func
