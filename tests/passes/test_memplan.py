"""The memplan pass: IR text in and out, the slot allocator on its own, and on random graphs the
plan's invariants at several bindings: kernels scheduled after what they read, two buffers that
live at the same time never overlap unless one is written in place of the other where that is
legal, every buffer aligned for its dtype, and the peak formula bounding them all."""
from __future__ import annotations

import warnings

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphc.ir.core import Func, Value
from graphc.ir.ops.fused import is_sibling, kernel_of
from graphc.ir.ops.kernelshape import analyze, same_index_inputs
from graphc.ir.slots import Interval, allocate, dominates, poly_max, round_up
from graphc.ir.types import Dim, DType, dim_eval
from graphc.passes import fusion, memplan, run_pipeline
from graphc.passes.memplan import storage
from tests.conftest import canonical, check_pass, parse_one
from tests.runtime.test_arena import with_gradients
from tests.runtime.test_random_graphs import graphs

N = Dim.sym("N")
M = Dim.sym("M")

CHAIN = """
    func @f(%x: f32[N,4], %W: f32[4,4]) -> (f32[N,4]) {
      %0 = fused %x, %W {body=func @matmul.tanh(%x: f32[N,4], %W: f32[4,4]) -> (f32[N,4]) {
        %0 = matmul %x, %W : f32[N,4]
        %1 = tanh %0 : f32[N,4]
        return %1
      }} : f32[N,4]
      %1 = fused %0, %W {body=func @matmul.matmul(%in0: f32[N,4], %W: f32[4,4]) -> (f32[N,4]) {
        %0 = matmul %in0, %W : f32[N,4]
        return %0
      }} : f32[N,4]
      %2 = fused %1, %0 {body=func @row.mul(%in0: f32[N,4], %in1: f32[N,4]) -> (f32[N,4]) {
        %0 = exp %in0 : f32[N,4]
        %1 = sum %in1 {axis=[1], keepdims=true} : f32[N,1]
        %2 = mul %0, %1 : f32[N,4]
        return %2
      }} : f32[N,4]
      %3 = fused %2, %W {body=func @matmul.matmul(%in0: f32[N,4], %W: f32[4,4]) -> (f32[N,4]) {
        %0 = matmul %in0, %W : f32[N,4]
        return %0
      }} : f32[N,4]
      return %3
    }"""


def test_memplan_assigns_steps_slots_and_writes_in_place() -> None:
    """%1 cannot overwrite %0 (still read later); %2 reads %1 only at the element it writes and
    %1 dies there, so %2 takes %1's slot; the result is written to the caller's array."""
    check_pass("memplan", CHAIN, """
        func @f(%x: f32[N,4], %W: f32[4,4]) -> (f32[N,4]) {
          %0 = fused %x, %W {body=func @matmul.tanh(%x: f32[N,4], %W: f32[4,4]) -> (f32[N,4]) {
            %0 = matmul %x, %W : f32[N,4]
            %1 = tanh %0 : f32[N,4]
            return %1
          }, offset=0, slot=0, step=0} : f32[N,4]
          %1 = fused %0, %W {body=func @matmul.matmul(%in0: f32[N,4], %W: f32[4,4]) -> (f32[N,4]) {
            %0 = matmul %in0, %W : f32[N,4]
            return %0
          }, offset=16*N, slot=1, step=1} : f32[N,4]
          %2 = fused %1, %0 {body=func @row.mul(%in0: f32[N,4], %in1: f32[N,4]) -> (f32[N,4]) {
            %0 = exp %in0 : f32[N,4]
            %1 = sum %in1 {axis=[1], keepdims=true} : f32[N,1]
            %2 = mul %0, %1 : f32[N,4]
            return %2
          }, offset=16*N, slot=1, step=2} : f32[N,4]
          %3 = fused %2, %W {body=func @matmul.matmul(%in0: f32[N,4], %W: f32[4,4]) -> (f32[N,4]) {
            %0 = matmul %in0, %W : f32[N,4]
            return %0
          }, out=0, step=3} : f32[N,4]
          return %3
        }""")


def test_memplan_leaves_plain_ops_to_the_runtime() -> None:
    check_pass("memplan", """
        func @f(%x: f32[N,4]) -> (f32[N,4]) {
          %0 = exp %x : f32[N,4]
          return %0
        }""", """
        func @f(%x: f32[N,4]) -> (f32[N,4]) {
          %0 = exp %x : f32[N,4]
          return %0
        }""")


def test_allocator_shares_slots_only_between_comparable_sizes() -> None:
    big, small, const = Interval(0, 1024 * N, 4, 0, 1), Interval(1, 40 * N, 4, 2, 3), \
        Interval(2, 8192, 4, 2, 3)
    layout = allocate([big, small, const])
    assert layout.slot_of[1] == layout.slot_of[0] != layout.slot_of[2]      # 8192 vs 1024*N
    assert layout.slots == (1024 * N, 8192) and layout.peak == 1024 * N + 8192


def test_allocator_grows_a_slot_and_orders_by_alignment() -> None:
    layout = allocate([Interval(0, 12 * N, 4, 0, 0), Interval(1, 64 * N, 8, 1, 1),
                       Interval(2, 3, 1, 1, 1)])
    assert layout.slot_of[0] == layout.slot_of[1] == 0            # grew from 12*N to 64*N
    assert layout.offsets == {0: 0, 1: 0, 2: 64 * N} and layout.peak == 64 * N + 3


def test_allocator_gives_a_dying_buffer_to_an_in_place_result() -> None:
    a, b = Interval(0, 16 * N, 4, 0, 1), Interval(1, 16 * N, 4, 1, 2, takes=0)
    other = Interval(2, 16 * N, 4, 1, 2)
    layout = allocate([a, b, other])
    assert layout.offsets[1] == layout.offsets[0] != layout.offsets[2]


def test_polynomial_helpers() -> None:
    assert dominates(4 * N + 4, 4 * N) and not dominates(4 * N, 8) and dominates(N * M, 0)
    assert poly_max([1024 * N, 8192, 4 * N * M]) == 1024 * N + 4 * N * M + 8192
    assert round_up(40 * N + 3, 64) == 64 * N + 64 and round_up(4 * N - 4, 8) == 8 * N


def check_plan(func: Func) -> None:
    """The invariants of a function the memplan pass annotated, at several bindings."""
    kernels = [v for v in func.values() if v.op == "fused"]
    if not kernels:
        return
    step = {id(k): k.attrs["step"] for k in kernels}
    steps = sorted(set(step.values()))
    assert steps == list(range(len(steps)))
    shared: dict[int, set[tuple]] = {}                 # kernels share a step only as siblings
    for k in kernels:
        shared.setdefault(k.attrs["step"], set()).add(kernel_of(k) if is_sibling(k) else (id(k),))
    assert all(len(keys) == 1 for keys in shared.values())
    last = dict(step)
    for k in kernels:
        for i in k.inputs:
            s = storage(i)
            if id(s) in step:
                assert step[id(s)] < step[id(k)], "a kernel runs before what it reads"
                last[id(s)] = max(last[id(s)], step[id(k)])
    for r in func.results:
        if id(storage(r)) in step and storage(r) is not r:
            last[id(storage(r))] = len(kernels)
    check_param_updates(func)
    arena = [k for k in kernels if "offset" in k.attrs]
    assert all(("out" in k.attrs) != ("offset" in k.attrs) for k in kernels)
    peak = poly_max([k.attrs["offset"] + memplan.nbytes(k) for k in arena])
    symbols = {s for k in kernels for s in k.type.symbols} | (
        set(peak.symbols) if isinstance(peak, Dim) else set())
    for n in (0, 1, 3, 64):
        env = {s: n for s in symbols}
        span = {id(k): (dim_eval(k.attrs["offset"], env),
                        dim_eval(k.attrs["offset"] + memplan.nbytes(k), env)) for k in arena}
        for k in arena:
            assert span[id(k)][0] % k.dtype.itemsize == 0
            assert span[id(k)][1] <= dim_eval(peak, env)
        for a in arena:
            for b in arena:
                if step[id(a)] >= step[id(b)] or last[id(a)] < step[id(b)]:
                    continue                         # b starts after a is dead
                (a0, a1), (b0, b1) = span[id(a)], span[id(b)]
                if a0 < b1 and b0 < a1:
                    assert in_place(b, a, last), f"{b.attrs['body'].name} overlaps a live buffer"


def in_place(b: Value, a: Value, last: dict[int, int]) -> bool:
    """``b`` may overwrite ``a``: ``a`` dies at ``b``, which reads it only element by element."""
    body = b.attrs["body"]
    pattern = analyze(body.results[0], lambda v: v.op != "arg")
    assert not isinstance(pattern, str)
    legal = [b.inputs[p] for p in same_index_inputs(body, pattern)]
    return last[id(a)] == b.attrs["step"] and any(x is a for x in legal) \
        and a.attrs["slot"] == b.attrs["slot"] and only_direct_reader(b, a)


def only_direct_reader(k: Value, a: Value) -> bool:
    """``k`` reads ``a``'s buffer through ``a`` itself, never through a view of it."""
    return all(i is a or storage(i) is not a for i in k.inputs)


def check_param_updates(func: Func) -> None:
    """A kernel that overwrites a param's array is its last reader, and reads it only at the
    element it writes."""
    kernels = [v for v in func.values() if v.op == "fused"]
    params = {p.attrs["name"]: p for p in func.params}
    for k in kernels:
        if "inplace" not in k.attrs:
            continue
        p = params[k.attrs["inplace"]]
        body = k.attrs["body"]
        pattern = analyze(body.results[k.attrs.get("result", 0)], lambda v: v.op != "arg")
        assert not isinstance(pattern, str)
        assert any(k.inputs[i] is p for i in same_index_inputs(body, pattern))
        assert only_direct_reader(k, p), f"{body.name} also reads a view of %{p.attrs['name']}"
        # a sibling (same step, one loop nest) may read it too, at the element written
        assert all(j.attrs["step"] < k.attrs["step"] or (
                   j.attrs["step"] == k.attrs["step"] and p in memplan.in_place_inputs(j))
                   for j in kernels if j is not k and any(storage(i) is p for i in j.inputs))


def test_the_chain_plan_holds_its_invariants() -> None:
    check_plan(memplan.run(parse_one(canonical(CHAIN))))


SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(st.data(), st.sampled_from([DType.f32, DType.f64]))
def test_plans_of_random_graphs_hold_their_invariants(data: st.DataObject, dtype: DType) -> None:
    forward = data.draw(graphs(dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for func in (forward, with_gradients(forward)):
            out = run_pipeline(func, 2, verify_each=False)
            check_plan(out)
            assert memplan.plan(fusion.run(run_pipeline(func, 2, after="dce"))) is not None
