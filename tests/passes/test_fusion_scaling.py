"""Compile time of an unrolled loop grows with its distinct kernels, not its steps (issue 12):
a kernel reads at most MAX_INPUTS inputs, so a sum over every step (a weight's gradient, a loss
over the steps) becomes a chain of alike pieces that the backend compiles once; and kernels
alike in structure share one body object, so what is asked of a body is worked out once."""
from __future__ import annotations

import dataclasses
import warnings
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphc
from graphc.elaborate import elaborate_source
from graphc.ir.core import Func, Value, make
from graphc.ir.errors import Loc
from graphc.ir.ops.fused import body_patterns, in_place_params, result_pattern
from graphc.ir.text import print_func
from graphc.ir.types import DType
from graphc.model import build_funcs
from graphc.passes import fusion, run_pipeline
from tests.conftest import check_pass
from tests.runtime.test_arena import with_gradients
from tests.runtime.test_random_graphs import graphs

WIDE_SUM = """
    func @f(%a: f32[4], %b: f32[4], %c: f32[4], %d: f32[4], %e: f32[4], %f: f32[4], %g: f32[4]) -> (f32[4]) {
      %0 = add %a, %b : f32[4]
      %1 = add %0, %c : f32[4]
      %2 = add %1, %d : f32[4]
      %3 = add %2, %e : f32[4]
      %4 = add %3, %f : f32[4]
      %5 = add %4, %g : f32[4]
      return %5
    }"""


def test_fusion_cuts_a_kernel_at_max_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Grown from its root, the sum stops before its fifth input; the value refused starts a
    piece of its own, which grows the same way."""
    monkeypatch.setattr(fusion, "MAX_INPUTS", 4)
    check_pass("fusion", WIDE_SUM, """
        func @f(%a: f32[4], %b: f32[4], %c: f32[4], %d: f32[4], %e: f32[4], %f: f32[4], %g: f32[4]) -> (f32[4]) {
          %0 = fused %a, %b, %c, %d {body=func @loop.add(%a: f32[4], %b: f32[4], %c: f32[4], %d: f32[4]) -> (f32[4]) {
            %0 = add %a, %b : f32[4]
            %1 = add %0, %c : f32[4]
            %2 = add %1, %d : f32[4]
            return %2
          }} : f32[4]
          %1 = fused %0, %e, %f, %g {body=func @loop.add(%in0: f32[4], %e: f32[4], %f: f32[4], %g: f32[4]) -> (f32[4]) {
            %0 = add %in0, %e : f32[4]
            %1 = add %0, %f : f32[4]
            %2 = add %1, %g : f32[4]
            return %2
          }} : f32[4]
          return %1
        }""")
    assert fusion.explain(parse(WIDE_SUM)) == [
        ("fusion: 'add' f32[4] stays out of the kernel of 'add' f32[4]: that kernel would "
         "read 5 inputs, more than the 4 one kernel may")]


def test_fusion_under_max_inputs_is_one_kernel() -> None:
    check_pass("fusion", WIDE_SUM, """
        func @f(%a: f32[4], %b: f32[4], %c: f32[4], %d: f32[4], %e: f32[4], %f: f32[4], %g: f32[4]) -> (f32[4]) {
          %0 = fused %a, %b, %c, %d, %e, %f, %g {body=func @loop.add(%a: f32[4], %b: f32[4], %c: f32[4], %d: f32[4], %e: f32[4], %f: f32[4], %g: f32[4]) -> (f32[4]) {
            %0 = add %a, %b : f32[4]
            %1 = add %0, %c : f32[4]
            %2 = add %1, %d : f32[4]
            %3 = add %2, %e : f32[4]
            %4 = add %3, %f : f32[4]
            %5 = add %4, %g : f32[4]
            return %5
          }} : f32[4]
          return %0
        }""")


def parse(text: str) -> Func:
    from tests.conftest import canonical, parse_one
    return parse_one(canonical(text))


def sum_of_products(steps: int) -> str:
    """A weight's gradient in an unrolled loop: one product per step, summed."""
    return f"""
graph g {{
    input xs: f32[{steps}, N, 3]
    param W: f32[3, 5]
    h = zeros([N, 5], f32)
    for t in 0..{steps} {{
        h = tanh(xs[t] @ W) + h
    }}
    output loss = sum(h * h)
    grad loss
}}"""


def fused_kernels(func: Func) -> list[Value]:
    return [v for v in func.values() if v.op == "fused"]


@pytest.fixture(scope="module", name="sgd_step")
def _sgd_step() -> Func:
    func = build_funcs(elaborate_source(sum_of_products(70), "<s>")["g"])["sgd_step"]
    return run_pipeline(func, 2, verify_each=False)


def test_a_sum_over_70_steps_is_a_chain_of_alike_pieces(sgd_step: Func) -> None:
    """W's gradient sums 70 products: no kernel reads more than MAX_INPUTS; the pieces of the
    sum are loops (the product each reads is its own kernel, shared by every step) and all
    but the first and last have one body object."""
    kernels = fused_kernels(sgd_step)
    assert max(len(k.inputs) for k in kernels) <= fusion.MAX_INPUTS
    pieces = [k for k in kernels if k.attrs["body"].name == "loop.add"
              and k.type.shape == (3, 5)]
    assert len(pieces) >= 2
    assert len({id(k.attrs["body"]) for k in pieces}) < len(pieces)
    products = [k for k in kernels if k.attrs["body"].name == "matmul.matmul"
                and k.type.shape == (3, 5)]
    assert len(products) >= 70 - fusion.MAX_INPUTS
    assert len({id(k.attrs["body"]) for k in products}) == 1


def test_alike_kernels_share_one_body_and_its_facts(sgd_step: Func) -> None:
    """Kernels whose bodies print alike hold one body object (and only those do); what a pass
    asks of a body is worked out once and equals a fresh analysis."""
    by_text: dict[str, set[int]] = {}
    bodies = {}
    for k in fused_kernels(sgd_step):
        body = k.attrs["body"]
        by_text.setdefault(print_func(body), set()).add(id(body))
        bodies[id(body)] = body
    assert all(len(ids) == 1 for ids in by_text.values())
    assert len(bodies) < len(fused_kernels(sgd_step)) / 4
    for body in bodies.values():
        assert body_patterns(body) is body_patterns(body)
        fresh = Func(body.name, body.params, body.results)        # not a Body: no memo
        assert body_patterns(body) == body_patterns(fresh)
        for r in range(len(body.results)):
            assert result_pattern(body, r) == result_pattern(fresh, r)
            assert in_place_params(body, r) == in_place_params(fresh, r)


def unshared(root: Value, inside: object, new: dict, kind: str | None = None,
             bodies: object = None, *, make: object = fusion._make_kernel) -> Value:
    return make(root, inside, new, kind)  # type: ignore[operator, no-any-return]


def alone(func: Func) -> Func:
    """Fusion without horizontal fusion (which would merge kernels that read one input)."""
    return fusion.partition(func, horizontal=False).func


def test_a_constant_of_another_sign_or_a_loc_of_another_gradient_is_another_body() -> None:
    """Alike means printing alike (0.0 == -0.0 in Python, but they are other constants) and
    naming the same op in an error (a Loc compares without autodiff's mark)."""
    func = parse("""
        func @f(%x: f32[4], %y: f32[4]) -> (f32[4], f32[4]) {
          %0 = const 0.0 : f32[]
          %1 = mul %x, %0 : f32[4]
          %2 = const -0.0 : f32[]
          %3 = mul %y, %2 : f32[4]
          return %1, %3
        }""")
    one, two = fused_kernels(fusion.run(func))
    assert one.attrs["body"] is not two.attrs["body"]
    x, y = func.params
    here = Loc("a.graph", 1, 5)
    marked = dataclasses.replace(here, grad_of="tanh")
    func = Func("f", (x, y), (make("tanh", x, loc=here), make("tanh", x, loc=marked)))
    one, two = fused_kernels(alone(func))
    assert one.attrs["body"] is not two.attrs["body"]
    func = Func("f", (x, y), (make("tanh", x, loc=here), make("tanh", x, loc=here)))
    one, two = fused_kernels(alone(func))
    assert one.attrs["body"] is two.attrs["body"]


SETTINGS = settings(max_examples=30, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def check_sharing_prints_alike(func: Func, recompute: str = "cheap") -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                # gradients that are zero warn
        func = run_pipeline(func, 2, verify_each=False, after="dce")
    shared = fusion.partition(func, recompute).func
    with mock.patch.object(fusion, "_make_kernel", unshared):
        one_each = fusion.partition(func, recompute).func
    assert print_func(shared) == print_func(one_each)


@SETTINGS
@given(st.data(), st.sampled_from([DType.f32, DType.f64]), st.sampled_from(fusion.RECOMPUTE))
def test_shared_bodies_print_as_a_body_per_kernel_does(data: st.DataObject, dtype: DType,
                                                       recompute: str) -> None:
    forward = data.draw(graphs(dtype))
    for func in (forward, with_gradients(forward)):
        check_sharing_prints_alike(func, recompute)


@pytest.mark.parametrize("entry", ["forward", "sgd_step"])
def test_an_unrolled_loop_prints_as_with_a_body_per_kernel(entry: str) -> None:
    check_sharing_prints_alike(
        build_funcs(elaborate_source(sum_of_products(20), "<s>")["g"])[entry])


LOOP_SUM = """
graph g {
    input xs: f32[60, N, 4]
    param w: f32[4] = normal(1.0)
    s = zeros([N, 4], f32)
    for t in 0..60 {
        s = s + tanh(xs[t]) * w
    }
    output s
}"""


def test_a_60_input_sum_runs_as_shared_pieces_like_the_interpreter() -> None:
    """One kernel would read 60 slices of xs: cut into pieces, the middle ones compile to one
    function (their slices are offsets passed in), and the sum is what the interpreter gives."""
    native = graphc.compile_source(LOOP_SUM, cache=False)
    counts = native.compile_stats.counts
    assert counts["kernels"] >= 60 // fusion.MAX_INPUTS
    assert counts["kernel functions"] < counts["kernels"]
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((60, 3, 4)).astype(np.float32)
    w = rng.standard_normal(4).astype(np.float32)
    want = graphc.compile_source(LOOP_SUM, backend="interp")(xs=xs, w=w)["s"]
    np.testing.assert_allclose(native(xs=xs, w=w)["s"], want, rtol=1e-5, atol=1e-5)
