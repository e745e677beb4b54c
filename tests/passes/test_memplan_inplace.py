"""When the memplan pass lets a kernel write over one of its inputs: a param update over the
caller's array of the param (``inplace=``), or a kernel over a buffer that dies there (the same
``slot``). Only when every read of that buffer in the kernel is at the element being written: a
transposed, sliced or broadcast view of it as another input, or a matmul operand, is read at
elements that may already be overwritten, so it keeps its own buffer."""
from __future__ import annotations

import pytest

from graphc.passes import memplan
from tests.conftest import canonical, check_pass, parse_one

# A param update whose gradient reads the param only through ``%in1``.
UPDATE = """
    func @f(%W: f32[4,4], %lr: f32[], %g: f32[4,4]) -> (W: f32[4,4]) {{
      {view}
      %{n} = fused %W, %{other}, %lr {{body=func @loop.sub(%W: f32[4,4], %in1: {ty}, %lr: f32[]) -> (f32[4,4]) {{
        %0 = sub %W, %in1 : f32[4,4]
        %1 = mul %0, %lr : f32[4,4]
        %2 = sub %W, %1 : f32[4,4]
        return %2
      }}{plan}}} : f32[4,4]
      return %{n}
    }}"""


def update(views: tuple[str, ...], ty: str, plan: str) -> str:
    """``W - lr * (W - in1)``, ``in1`` the last of ``views`` (else the param ``g``)."""
    n = len(views)
    return UPDATE.format(view="\n      ".join(views), n=n, other=n - 1 if views else "g", ty=ty,
                         plan=plan).replace("\n      \n", "\n")


def test_memplan_updates_a_param_in_place_when_read_at_the_element_written() -> None:
    """The positive case the views below must not reach: ``W - lr * (W - g)``."""
    check_pass("memplan", update((), "f32[4,4]", ""),
               update((), "f32[4,4]", ', inplace="W", out=0, step=0'))


ROW = "%0 = slice %W {start=[0, 0], step=[1, 1], stop=[1, 4]} : f32[1,4]"


@pytest.mark.parametrize("views, ty", [
    (("%0 = transpose %W {perm=[1, 0]} : f32[4,4]",), "f32[4,4]"),
    ((ROW,), "f32[1,4]"),
    (("%0 = slice %W {start=[0, 3], step=[1, 1], stop=[4, 4]} : f32[4,1]",), "f32[4,1]"),
    ((ROW, "%1 = broadcast_to %0 {shape=[4, 4]} : f32[4,4]"), "f32[4,4]"),
    (("%0 = transpose %W {perm=[1, 0]} : f32[4,4]",
      "%1 = slice %0 {start=[3, 0], step=[1, 1], stop=[4, 4]} : f32[1,4]",
      "%2 = broadcast_to %1 {shape=[4, 4]} : f32[4,4]"), "f32[4,4]"),
], ids=["transpose", "row-slice", "column-slice", "broadcast-row", "chain"])
def test_memplan_never_updates_a_param_the_kernel_also_reads_through_a_view(
        views: tuple[str, ...], ty: str) -> None:
    """``W - lr * (W - view(W))``: writing W[i, j] would change what ``view(W)`` reads for a
    later element (W[j, i], row 0, column 3), so the update is staged, not written over W."""
    check_pass("memplan", update(views, ty, ""), update(views, ty, ", out=0, step=0"))


def fill(text: str, *plans: str) -> str:
    """``text`` with its ``<plan>`` marks replaced by ``plans`` in turn (the rest by nothing)."""
    for plan in plans:
        text = text.replace("<plan>", plan, 1)
    return text.replace("<plan>", "")


MATMUL_UPDATE = """
    func @f(%W: f32[4,4], %lr: f32[]) -> (W: f32[4,4]) {
      %0 = transpose %W {perm=[1, 0]} : f32[4,4]
      %1 = fused %0, %W, %lr {body=func @matmul.sub(%in0: f32[4,4], %W: f32[4,4], %lr: f32[]) -> (f32[4,4]) {
        %0 = matmul %in0, %in0 : f32[4,4]
        %1 = mul %0, %lr : f32[4,4]
        %2 = sub %W, %1 : f32[4,4]
        return %2
      }<plan>} : f32[4,4]
      return %1
    }"""


def test_memplan_never_updates_a_param_whose_view_is_a_matmul_operand() -> None:
    """``W - lr * W.T @ W.T`` (the shape of ``sum(square(W @ W))``'s update): the epilogue reads
    W at the element written, but the GEMM reads W.T for every output tile."""
    check_pass("memplan", fill(MATMUL_UPDATE), fill(MATMUL_UPDATE, ", out=0, step=0"))


TRANSPOSED_SUM = """
    func @f(%x: f32[N,N]) -> (f32[N,N]) {
      %0 = fused %x {body=func @loop.exp(%x: f32[N,N]) -> (f32[N,N]) {
        %0 = exp %x : f32[N,N]
        return %0
      }<plan>} : f32[N,N]
      %1 = transpose %0 {perm=[1, 0]} : f32[N,N]
      %2 = fused %0, %1 {body=func @loop.add(%in0: f32[N,N], %in1: f32[N,N]) -> (f32[N,N]) {
        %0 = add %in0, %in1 : f32[N,N]
        return %0
      }<plan>} : f32[N,N]
      %3 = fused %2, %x {body=func @matmul.matmul(%in0: f32[N,N], %x: f32[N,N]) -> (f32[N,N]) {
        %0 = matmul %in0, %x : f32[N,N]
        return %0
      }<plan>} : f32[N,N]
      return %3
    }"""


def test_memplan_never_writes_a_kernel_over_a_buffer_it_reads_transposed() -> None:
    """``e + transpose(e)``: e dies here and is read at the element written, but also through the
    transpose, so the sum gets a slot of its own instead of e's."""
    check_pass("memplan", fill(TRANSPOSED_SUM), fill(
        TRANSPOSED_SUM, ", offset=0, slot=0, step=0", ", offset=4*N*N, slot=1, step=1",
        ", out=0, step=2"))


def test_in_place_inputs_names_only_buffers_read_nowhere_else() -> None:
    func = parse_one(canonical(fill(TRANSPOSED_SUM)))
    e, _, add, mm = [v for v in func.values() if v.op != "arg"]
    assert memplan.in_place_inputs(add) == []
    assert memplan.in_place_inputs(e) == [e.inputs[0]]
    assert memplan.in_place_inputs(mm) == []                 # matmul operands never
