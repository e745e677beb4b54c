"""The fusion pass as IR text in, IR text out (each case also checked on the interpreter
before and after), and the one-line explanations of rejected candidates."""
from __future__ import annotations

import pytest

from graphc.passes import fusion
from graphc.passes.rewrite import Counter, PassContext
from tests.conftest import canonical, check_pass, parse_one


def test_fusion_chain() -> None:
    """An elementwise chain with a broadcast bias is one loop kernel."""
    check_pass("fusion", """
        func @f(%x: f32[N,4], %b: f32[4]) -> (f32[N,4]) {
          %0 = add %x, %b : f32[N,4]
          %1 = tanh %0 : f32[N,4]
          %2 = mul %1, %1 : f32[N,4]
          return %2
        }""", """
        func @f(%x: f32[N,4], %b: f32[4]) -> (f32[N,4]) {
          %0 = fused %x, %b {body=func @loop.mul(%x: f32[N,4], %b: f32[4]) -> (f32[N,4]) {
            %0 = add %x, %b : f32[N,4]
            %1 = tanh %0 : f32[N,4]
            %2 = mul %1, %1 : f32[N,4]
            return %2
          }} : f32[N,4]
          return %0
        }""")


def test_fusion_softmax() -> None:
    """Softmax is one row kernel: both reductions and the division, per row."""
    check_pass("fusion", """
        func @f(%x: f32[N,4]) -> (f32[N,4]) {
          %0 = max %x {axis=[1], keepdims=true} : f32[N,1]
          %1 = sub %x, %0 : f32[N,4]
          %2 = exp %1 : f32[N,4]
          %3 = sum %2 {axis=[1], keepdims=true} : f32[N,1]
          %4 = div %2, %3 : f32[N,4]
          return %4
        }""", """
        func @f(%x: f32[N,4]) -> (f32[N,4]) {
          %0 = fused %x {body=func @row.div(%x: f32[N,4]) -> (f32[N,4]) {
            %0 = max %x {axis=[1], keepdims=true} : f32[N,1]
            %1 = sub %x, %0 : f32[N,4]
            %2 = exp %1 : f32[N,4]
            %3 = sum %2 {axis=[1], keepdims=true} : f32[N,1]
            %4 = div %2, %3 : f32[N,4]
            return %4
          }} : f32[N,4]
          return %0
        }""")


def test_fusion_epilogue() -> None:
    """Bias and relu fuse into the forward GEMM; relu's derivative (where of the mask) into
    the backward GEMM."""
    check_pass("fusion", """
        func @f(%x: f32[N,3], %W: f32[3,4], %b: f32[4], %g: f32[N,4]) -> (f32[N,4], f32[N,3]) {
          %0 = matmul %x, %W : f32[N,4]
          %1 = add %0, %b : f32[N,4]
          %2 = relu %1 : f32[N,4]
          %3 = const 0.0 : f32[]
          %4 = gt %x, %3 : bool[N,3]
          %5 = transpose %W {perm=[1, 0]} : f32[4,3]
          %6 = matmul %g, %5 : f32[N,3]
          %7 = where %4, %6, %3 : f32[N,3]
          return %2, %7
        }""", """
        func @f(%x: f32[N,3], %W: f32[3,4], %b: f32[4], %g: f32[N,4]) -> (f32[N,4], f32[N,3]) {
          %0 = fused %x, %W, %b {body=func @matmul.relu(%x: f32[N,3], %W: f32[3,4], %b: f32[4]) -> (f32[N,4]) {
            %0 = matmul %x, %W : f32[N,4]
            %1 = add %0, %b : f32[N,4]
            %2 = relu %1 : f32[N,4]
            return %2
          }} : f32[N,4]
          %1 = transpose %W {perm=[1, 0]} : f32[4,3]
          %2 = fused %x, %g, %1 {body=func @matmul.where(%x: f32[N,3], %g: f32[N,4], %in2: f32[4,3]) -> (f32[N,3]) {
            %0 = const 0.0 : f32[]
            %1 = gt %x, %0 : bool[N,3]
            %2 = matmul %g, %in2 : f32[N,3]
            %3 = where %1, %2, %0 : f32[N,3]
            return %3
          }} : f32[N,3]
          return %0, %2
        }""")


def test_fusion_mean() -> None:
    """A mean of squared differences is one reduction with its producers and the division."""
    check_pass("fusion", """
        func @f(%x: f32[N,4], %y: f32[N,4]) -> (f32[]) {
          %0 = sub %x, %y : f32[N,4]
          %1 = square %0 : f32[N,4]
          %2 = sum %1 {axis=[0, 1], keepdims=false} : f32[]
          %3 = dim {dtype=f32, value=N} : f32[]
          %4 = div %2, %3 : f32[]
          return %4
        }""", """
        func @f(%x: f32[N,4], %y: f32[N,4]) -> (f32[]) {
          %0 = fused %x, %y {body=func @row.div(%x: f32[N,4], %y: f32[N,4]) -> (f32[]) {
            %0 = sub %x, %y : f32[N,4]
            %1 = square %0 : f32[N,4]
            %2 = sum %1 {axis=[0, 1], keepdims=false} : f32[]
            %3 = dim {dtype=f32, value=N} : f32[]
            %4 = div %2, %3 : f32[]
            return %4
          }} : f32[]
          return %0
        }""")


def test_fusion_expensive() -> None:
    """exp feeds a reduction kernel and a GEMM epilogue: recomputing it in both would duplicate
    expensive work, so it is materialized."""
    check_pass("fusion", """
        func @f(%x: f32[N,4], %W: f32[4,4]) -> (f32[N], f32[N,4]) {
          %0 = exp %x : f32[N,4]
          %1 = sum %0 {axis=[1], keepdims=false} : f32[N]
          %2 = matmul %x, %W : f32[N,4]
          %3 = mul %2, %0 : f32[N,4]
          return %1, %3
        }""", """
        func @f(%x: f32[N,4], %W: f32[4,4]) -> (f32[N], f32[N,4]) {
          %0 = fused %x {body=func @loop.exp(%x: f32[N,4]) -> (f32[N,4]) {
            %0 = exp %x : f32[N,4]
            return %0
          }} : f32[N,4]
          %1 = fused %0 {body=func @row.sum(%in0: f32[N,4]) -> (f32[N]) {
            %0 = sum %in0 {axis=[1], keepdims=false} : f32[N]
            return %0
          }} : f32[N]
          %2 = fused %x, %W, %0 {body=func @matmul.mul(%x: f32[N,4], %W: f32[4,4], %in2: f32[N,4]) -> (f32[N,4]) {
            %0 = matmul %x, %W : f32[N,4]
            %1 = mul %0, %in2 : f32[N,4]
            return %1
          }} : f32[N,4]
          return %1, %2
        }""")


def test_fusion_cheap() -> None:
    """The same graph with neg: cheap, so each kernel recomputes it."""
    check_pass("fusion", """
        func @f(%x: f32[N,4], %W: f32[4,4]) -> (f32[N], f32[N,4]) {
          %0 = neg %x : f32[N,4]
          %1 = sum %0 {axis=[1], keepdims=false} : f32[N]
          %2 = matmul %x, %W : f32[N,4]
          %3 = mul %2, %0 : f32[N,4]
          return %1, %3
        }""", """
        func @f(%x: f32[N,4], %W: f32[4,4]) -> (f32[N], f32[N,4]) {
          %0 = fused %x {body=func @row.sum(%x: f32[N,4]) -> (f32[N]) {
            %0 = neg %x : f32[N,4]
            %1 = sum %0 {axis=[1], keepdims=false} : f32[N]
            return %1
          }} : f32[N]
          %1 = fused %x, %W {body=func @matmul.mul(%x: f32[N,4], %W: f32[4,4]) -> (f32[N,4]) {
            %0 = matmul %x, %W : f32[N,4]
            %1 = neg %x : f32[N,4]
            %2 = mul %0, %1 : f32[N,4]
            return %2
          }} : f32[N,4]
          return %0, %1
        }""")


def test_fusion_cycle() -> None:
    """exp is read by the sum and by the division, whose kernel also reads the sum: fusing exp
    into the division's kernel alone would form a cycle."""
    check_pass("fusion", """
        func @f(%x: f32[N,4]) -> (f32[N,4], f32[N,1]) {
          %0 = max %x {axis=[1], keepdims=true} : f32[N,1]
          %1 = sub %x, %0 : f32[N,4]
          %2 = exp %1 : f32[N,4]
          %3 = sum %2 {axis=[1], keepdims=true} : f32[N,1]
          %4 = div %2, %3 : f32[N,4]
          return %4, %3
        }""", """
        func @f(%x: f32[N,4]) -> (f32[N,4], f32[N,1]) {
          %0 = fused %x {body=func @row.exp(%x: f32[N,4]) -> (f32[N,4]) {
            %0 = max %x {axis=[1], keepdims=true} : f32[N,1]
            %1 = sub %x, %0 : f32[N,4]
            %2 = exp %1 : f32[N,4]
            return %2
          }} : f32[N,4]
          %1 = fused %0 {body=func @row.sum(%in0: f32[N,4]) -> (f32[N,1]) {
            %0 = sum %in0 {axis=[1], keepdims=true} : f32[N,1]
            return %0
          }} : f32[N,1]
          %2 = fused %0, %1 {body=func @loop.div(%in0: f32[N,4], %in1: f32[N,1]) -> (f32[N,4]) {
            %0 = div %in0, %in1 : f32[N,4]
            return %0
          }} : f32[N,4]
          return %2, %1
        }""")


def test_fusion_axes() -> None:
    """A reduction over another shape starts a new kernel."""
    check_pass("fusion", """
        func @f(%x: f32[N,4]) -> (f32[]) {
          %0 = exp %x : f32[N,4]
          %1 = sum %0 {axis=[1], keepdims=false} : f32[N]
          %2 = sum %1 {axis=[0], keepdims=false} : f32[]
          return %2
        }""", """
        func @f(%x: f32[N,4]) -> (f32[]) {
          %0 = fused %x {body=func @row.sum(%x: f32[N,4]) -> (f32[N]) {
            %0 = exp %x : f32[N,4]
            %1 = sum %0 {axis=[1], keepdims=false} : f32[N]
            return %1
          }} : f32[N]
          %1 = fused %0 {body=func @row.sum(%in0: f32[N]) -> (f32[]) {
            %0 = sum %in0 {axis=[0], keepdims=false} : f32[]
            return %0
          }} : f32[]
          return %1
        }""")


def test_fusion_leading() -> None:
    """A reduction over the batch axis takes its producer and the SGD update epilogue."""
    check_pass("fusion", """
        func @f(%g: f32[N,4], %b: f32[4], %lr: f32[]) -> (f32[4]) {
          %0 = relu %g : f32[N,4]
          %1 = sum %0 {axis=[0], keepdims=false} : f32[4]
          %2 = mul %1, %lr : f32[4]
          %3 = sub %b, %2 : f32[4]
          return %3
        }""", """
        func @f(%g: f32[N,4], %b: f32[4], %lr: f32[]) -> (f32[4]) {
          %0 = fused %g, %lr, %b {body=func @reduce.sub(%g: f32[N,4], %lr: f32[], %b: f32[4]) -> (f32[4]) {
            %0 = relu %g : f32[N,4]
            %1 = sum %0 {axis=[0], keepdims=false} : f32[4]
            %2 = mul %1, %lr : f32[4]
            %3 = sub %b, %2 : f32[4]
            return %3
          }} : f32[4]
          return %0
        }""")


def test_fusion_views() -> None:
    """A transpose stays a view; a reshape of a transposed view becomes a copy kernel."""
    check_pass("fusion", """
        func @f(%x: f32[N,4], %W: f32[N,3]) -> (f32[4,3], f32[4,N]) {
          %0 = exp %x : f32[N,4]
          %1 = transpose %0 {perm=[1, 0]} : f32[4,N]
          %2 = matmul %1, %W : f32[4,3]
          %3 = reshape %1 {shape=[4, N]} : f32[4,N]
          return %2, %3
        }""", """
        func @f(%x: f32[N,4], %W: f32[N,3]) -> (f32[4,3], f32[4,N]) {
          %0 = fused %x {body=func @loop.exp(%x: f32[N,4]) -> (f32[N,4]) {
            %0 = exp %x : f32[N,4]
            return %0
          }} : f32[N,4]
          %1 = transpose %0 {perm=[1, 0]} : f32[4,N]
          %2 = fused %1, %W {body=func @matmul.matmul(%in0: f32[4,N], %W: f32[N,3]) -> (f32[4,3]) {
            %0 = matmul %in0, %W : f32[4,3]
            return %0
          }} : f32[4,3]
          %3 = fused %1 {body=func @loop.reshape(%in0: f32[4,N]) -> (f32[4,N]) {
            %0 = reshape %in0 {shape=[4, N]} : f32[4,N]
            return %0
          }} : f32[4,N]
          return %2, %3
        }""")


def test_fusion_syms() -> None:
    """A dim that no kernel input binds is recorded in syms."""
    check_pass("fusion", """
        func @f(%x: f32[N], %y: f32[M]) -> (f32[N], f32[M]) {
          %0 = dim {dtype=f32, value=M} : f32[]
          %1 = mul %x, %0 : f32[N]
          %2 = neg %y : f32[M]
          return %1, %2
        }""", """
        func @f(%x: f32[N], %y: f32[M]) -> (f32[N], f32[M]) {
          %0 = fused %x {body=func @loop.mul(%x: f32[N]) -> (f32[N]) {
            %0 = dim {dtype=f32, value=M} : f32[]
            %1 = mul %x, %0 : f32[N]
            return %1
          }, syms=[M]} : f32[N]
          %1 = fused %y {body=func @loop.neg(%y: f32[M]) -> (f32[M]) {
            %0 = neg %y : f32[M]
            return %0
          }} : f32[M]
          return %0, %1
        }""")


def notes(text: str, recompute: str = "cheap") -> list[str]:
    return fusion.explain(parse_one(canonical(text)), recompute)


EXPENSIVE = """
    func @f(%x: f32[N,4], %W: f32[4,4]) -> (f32[N], f32[N,4]) {
      %0 = exp %x : f32[N,4]  # a.graph:1:5
      %1 = sum %0 {axis=[1], keepdims=false} : f32[N]
      %2 = matmul %x, %W : f32[N,4]
      %3 = mul %2, %0 : f32[N,4]
      return %1, %3
    }"""


def test_explain_names_an_expensive_duplicate() -> None:
    assert notes(EXPENSIVE) == [
        ("fusion: 'exp' f32[N,4] at a.graph:1:5 is materialized: 2 kernels use it and "
         "recomputing 'exp' in each would duplicate expensive work")]


def test_recompute_elementwise_duplicates_exp_instead() -> None:
    out = fusion.partition(parse_one(canonical(EXPENSIVE)), "elementwise")
    assert out.notes == ()
    kernels = [v for v in out.func.values() if v.op == "fused"]
    assert [k.attrs["body"].name for k in kernels] == ["row.sum", "matmul.mul"]
    assert all(any(b.op == "exp" for b in k.attrs["body"].values()) for k in kernels)


def test_explain_names_a_cycle() -> None:
    assert notes("""
        func @f(%x: f32[N,4]) -> (f32[N,4], f32[N,1]) {
          %0 = max %x {axis=[1], keepdims=true} : f32[N,1]
          %1 = sub %x, %0 : f32[N,4]
          %2 = exp %1 : f32[N,4]
          %3 = sum %2 {axis=[1], keepdims=true} : f32[N,1]
          %4 = div %2, %3 : f32[N,4]
          return %4, %3
        }""") == [
        ("fusion: 'exp' f32[N,4] stays out of the kernel of 'div' f32[N,4]: that kernel also "
         "reads 'sum' f32[N,1], which needs it, so fusing would form a cycle")]


@pytest.mark.parametrize("text, reason", [
    ("""func @f(%x: f32[N,4]) -> (f32[]) {
          %0 = sum %x {axis=[1], keepdims=false} : f32[N]
          %1 = sum %0 {axis=[0], keepdims=false} : f32[]
          return %1
        }""", "reductions over different axes or shapes need separate kernels"),
    ("""func @f(%x: f32[N,4], %W: f32[4,4]) -> (f32[N,4]) {
          %0 = tanh %x : f32[N,4]
          %1 = matmul %0, %W : f32[N,4]
          return %1
        }""", ("a matmul reads each operand element many times, so its operands are "
               "materialized")),
    ("""func @f(%x: f32[N,4], %W: f32[4,4]) -> (f32[N]) {
          %0 = matmul %x, %W : f32[N,4]
          %1 = sum %0 {axis=[1], keepdims=false} : f32[N]
          return %1
        }""", "a matmul and a reduction need separate kernels"),
    ("""func @f(%x: f32[N,4]) -> (f32[4]) {
          %0 = sum %x {axis=[0], keepdims=false} : f32[4]
          %1 = broadcast_to %0 {shape=[N, 4]} : f32[N,4]
          %2 = mul %1, %x : f32[N,4]
          %3 = sum %2 {axis=[0], keepdims=false} : f32[4]
          return %3
        }""", "only reductions over trailing axes share a kernel"),
])
def test_explain_says_why_shapes_do_not_fuse(text: str, reason: str) -> None:
    (note,) = notes(text)
    assert note.endswith(": " + reason), note


def test_fused_kernels_need_no_explanation() -> None:
    assert notes("""
        func @f(%x: f32[N,4]) -> (f32[N,4]) {
          %0 = max %x {axis=[1], keepdims=true} : f32[N,1]
          %1 = sub %x, %0 : f32[N,4]
          %2 = exp %1 : f32[N,4]
          return %2
        }""") == []


def test_opt_bisect_counts_each_kernel_as_one_rewrite() -> None:
    """A kernel bisect cuts becomes one kernel per op (the backend runs only kernels), so
    bisecting to 0 gives what ``policy=single`` (-O0) gives."""
    f = parse_one(canonical(EXPENSIVE))
    out = fusion.run(f, PassContext(Counter(limit=1, pass_name="fusion")))
    assert {v.op for v in out.values()} == {"arg", "fused"}
    bodies = [v.attrs["body"] for v in out.values() if v.op == "fused"]
    assert bodies[0].name == "loop.exp"                      # the first kernel formed
    assert [b.name for b in bodies] == ["loop.exp", "row.sum", "matmul.matmul", "loop.mul"]
    assert all(len([x for x in b.values() if x.op != "arg"]) == 1 for b in bodies)
    single = fusion.run(f, options=fusion.Options(policy="single"))
    assert str(fusion.run(f, PassContext(Counter(limit=0, pass_name="fusion")))) == str(single)
