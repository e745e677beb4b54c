"""Compile time grows about linearly with the graph: an unrolled elementwise chain of 4x the ops
compiles in about 4x the time, and no kernel recomputes a whole chain. The fast versions of the
passes' inner loops (fusion growing a kernel one value at a time, which inputs a kernel reads
only at the element it writes, the memory plan's scheduler and slot allocator) give exactly what
the plain quadratic versions below give, on random graphs."""
from __future__ import annotations

import time
import warnings
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphc
from graphc.elaborate import elaborate_source
from graphc.ir.core import Func, Value
from graphc.ir.ops.kernelshape import Pattern, analyze, depends, role, same_index_inputs
from graphc.ir.ops.registry import ELEMENTWISE, get
from graphc.ir.slots import Interval, at_ref, dominates
from graphc.ir.types import DimLike, DType
from graphc.model import build_funcs
from graphc.passes import fusion, memplan, run_pipeline
from graphc.passes.memplan import nbytes
from graphc.passes.schedule import schedule_sizes
from tests.conftest import canonical, parse_one
from tests.runtime.test_arena import with_gradients
from tests.runtime.test_random_graphs import graphs


def chain(steps: int, grad: bool) -> str:
    tail = "loss = sum(h)\n    output loss\n    grad loss" if grad else "output h"
    return f"""
graph g {{
    input x: f32[N, 4]
    param W: f32[4, 4]
    h = x @ W
    for i in 0..{steps} {{
        h = tanh(h) * 0.5 + h
    }}
    {tail}
}}"""


def compile_seconds(src: str) -> float:
    best = float("inf")
    for _ in range(2):
        start = time.process_time()
        graphc.compile_source(src, backend="interp", opt_level=2)
        best = min(best, time.process_time() - start)
    return best


@pytest.fixture(name="as_users_compile")
def _as_users_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    """Time what a user waits for: no IR round trip after every pass (the tests' default)."""
    from graphc.passes.manager import VERIFY_ENV
    monkeypatch.setenv(VERIFY_ENV, "0")


@pytest.mark.slow
@pytest.mark.usefixtures("as_users_compile")
def test_compile_time_of_a_20000_op_chain_grows_linearly() -> None:
    """6667 steps of 3 ops against a quarter of that, in the same run (a ratio, not a time):
    before, fusion re-analyzed the whole kernel for every op it added (1000 steps: 9 s,
    2000 steps: 61 s)."""
    small, big = (compile_seconds(chain(k, grad=False)) for k in (1667, 6667))
    assert big / small < 6, f"1667 steps: {small:.2f}s, 6667 steps: {big:.2f}s"


@pytest.mark.slow
@pytest.mark.usefixtures("as_users_compile")
def test_compile_time_of_a_chain_with_its_gradient_grows_linearly() -> None:
    """forward, backward and sgd_step of 1000 steps against 250."""
    small, big = (compile_seconds(chain(k, grad=True)) for k in (250, 1000))
    assert big / small < 6, f"250 steps: {small:.2f}s, 1000 steps: {big:.2f}s"


def test_kernels_of_a_chain_with_its_gradient_stay_linear_in_size() -> None:
    """The backward keeps every tanh, so each ``h`` has a kernel of its own tanh and one of the
    next step's; recomputing ``h`` (an add, cheap) in every kernel that reads it put all the
    steps before into each later kernel: 16064 values in the bodies at 100 steps, 62114 at
    200. A value is now recomputed in at most MAX_COPIES kernels."""
    sizes = []
    for steps in (100, 200):
        func = build_funcs(elaborate_source(chain(steps, grad=True), "<s>")["g"])["sgd_step"]
        out = run_pipeline(func, 2, verify_each=False)
        sizes.append(sum(len(k.attrs["body"].values()) for k in out.values()
                         if k.op == "fused"))
    assert sizes[0] < 30 * 100 and sizes[1] < 2.2 * sizes[0], sizes


def many_users(n: int) -> str:
    lines = "\n".join(f"      %{k} = exp %0 : f32[N]" for k in range(1, n + 1))
    results = ", ".join(f"%{k}" for k in range(1, n + 1))
    types = ", ".join(["f32[N]"] * n)
    return f"""
    func @f(%x: f32[N]) -> ({types}) {{
      %0 = neg %x : f32[N]  # a.graph:1:5
{lines}
      return {results}
    }}"""


@pytest.mark.parametrize("users", [fusion.MAX_COPIES, fusion.MAX_COPIES + 1])
def test_fusion_recomputes_a_cheap_value_in_at_most_max_copies_kernels(users: int) -> None:
    func = parse_one(canonical(many_users(users)))
    kernels = [v for v in fusion.run(func).values() if v.op == "fused"]
    copied = users <= fusion.MAX_COPIES
    assert len(kernels) == users + (not copied)
    assert fusion.explain(func) == ([] if copied else [
        (f"fusion: 'neg' f32[N] at a.graph:1:5 is materialized: {users} kernels use it, "
         f"more than the {fusion.MAX_COPIES} that may each recompute it")])

# ---------------------------------------------------------------------------- the oracles


def reference_same_index_inputs(body: Func, pattern: Pattern) -> tuple[int, ...]:
    """One walk of the kernel per input (what ``same_index_inputs`` did before)."""
    if pattern.kind not in ("loop", "row", "matmul"):
        return ()

    def read_in_place(p: Value) -> bool:
        reach = depends(list(pattern.members), [p])
        for v in pattern.members:
            if id(v) not in reach or v is p:
                continue
            if v is pattern.anchor and pattern.kind == "matmul":
                return False
            if role(v) == "fold" and pattern.kind == "row":
                continue
            if get(v.op).kind != ELEMENTWISE or v.shape != pattern.root.shape:
                return False
            if any(id(i) in reach and i.shape != v.shape for i in v.inputs):
                return False
        return not (pattern.kind == "row" and any(id(f) in reach for f in pattern.reductions)
                    and pattern.root.shape != pattern.space)
    return tuple(k for k, p in enumerate(body.params) if p.shape == pattern.root.shape
                 and p.dtype.itemsize == pattern.root.dtype.itemsize and read_in_place(p))


def incremental_schedule(kernels: list[Value], reads: list[list[int]], same: list[list[int]],
                         outs: dict[int, int], keep: set[int],
                         after: dict[int, set[int]]) -> list[int]:
    """The scheduler memplan runs (``schedule_sizes``), with each kernel its own node."""
    return schedule_sizes([at_ref(nbytes(k)) for k in kernels], reads, same, set(outs), keep,
                          after)


def reference_schedule(kernels: list[Value], reads: list[list[int]], same: list[list[int]],
                       outs: dict[int, int], keep: set[int],
                       after: dict[int, set[int]]) -> list[int]:
    """Every ready kernel scored afresh at every step."""
    pending = [set(rs) for rs in reads]
    readers: dict[int, set[int]] = {n: set() for n in range(len(kernels))}
    for n, rs in enumerate(reads):
        for u in rs:
            readers[u].add(n)
    size = [at_ref(nbytes(k)) for k in kernels]
    done: set[int] = set()
    order: list[int] = []
    while len(order) < len(kernels):
        ready = [n for n in range(len(kernels)) if n not in done and pending[n] <= done]
        ready = [n for n in ready if after.get(n, set()) <= done] or ready

        def delta(n: int) -> int:
            dying = [u for u in reads[n] if readers[u] - done == {n} and u not in keep
                     and u not in outs]
            inplace = any(u in dying for u in same[n])
            alloc = 0 if n in outs or inplace else size[n]
            return alloc - sum(size[u] for u in dying if not (inplace and u in same[n]))
        freeing = [s for s in ((delta(n), n) for n in ready) if s[0] <= 0]
        n = min(freeing)[1] if freeing else min(ready)
        order.append(n)
        done.add(n)
    return order


def reference_slots(intervals: list[Interval]) -> dict[int, int]:
    """Every live buffer and free slot looked at for every new buffer: key -> slot."""
    sizes: list[DimLike] = []
    slot_of: dict[int, int] = {}
    free: list[int] = []
    live: list[Interval] = []
    for iv in sorted(intervals, key=lambda iv: iv.start):
        for gone in [x for x in live if x.end < iv.start]:
            live.remove(gone)
            free.append(slot_of[gone.key])
        if iv.takes is not None and iv.takes in slot_of:
            old = next(x for x in live if x.key == iv.takes)
            live.remove(old)
            slot = slot_of[old.key]
        else:
            big = [s for s in free if dominates(sizes[s], iv.size)]
            small = [s for s in free if dominates(iv.size, sizes[s])]
            pick = min(big, key=lambda s: (at_ref(sizes[s]), s)) if big else \
                max(small, key=lambda s: (at_ref(sizes[s]), -s)) if small else None
            if pick is None:
                sizes.append(iv.size)
                slot = len(sizes) - 1
            else:
                slot = pick
                free.remove(slot)
                sizes[slot] = sizes[slot] if dominates(sizes[slot], iv.size) else iv.size
        slot_of[iv.key] = slot
        live.append(iv)
    return slot_of


class CheckedPartitioner(fusion._Partitioner):
    """Fusion that also analyzes every grown region afresh and compares the verdicts."""
    checked = 0

    def grow(self, kern: Any, v: Value) -> Any:
        got = super().grow(kern, v)
        full = analyze(kern.root, lambda x: kern.inside(x) or x is v)
        want = full if isinstance(full, str) else (full.kind, full.anchor)
        assert got == want, (v, kern.root, got, want)
        CheckedPartitioner.checked += 1
        return got


SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def optimized(func: Func, after: str) -> Func:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                # gradients that are zero warn
        return run_pipeline(func, 2, verify_each=False, after=after)


@SETTINGS
@given(st.data(), st.sampled_from([DType.f32, DType.f64]),
       st.sampled_from(fusion.RECOMPUTE))
def test_fusion_grows_kernels_as_a_fresh_analysis_would(
        data: st.DataObject, dtype: DType, recompute: str) -> None:
    forward = data.draw(graphs(dtype))
    with mock.patch.object(fusion, "_Partitioner", CheckedPartitioner):
        for func in (forward, with_gradients(forward)):
            fusion.partition(optimized(func, "dce"), recompute)


def test_the_fusion_check_checks_something() -> None:
    CheckedPartitioner.checked = 0
    with mock.patch.object(fusion, "_Partitioner", CheckedPartitioner):
        fusion.partition(parse_one(canonical("""
            func @f(%x: f32[N,4], %W: f32[4,4]) -> (f32[N,4]) {
              %0 = matmul %x, %W : f32[N,4]
              %1 = tanh %0 : f32[N,4]
              %2 = sum %1 {axis=[1], keepdims=true} : f32[N,1]
              %3 = div %1, %2 : f32[N,4]
              return %3
            }""")))
    assert CheckedPartitioner.checked >= 3


def check_memplan_matches_the_plain_versions(fused: Func) -> None:
    kernels = memplan.kernels_of(fused)
    assert kernels is not None
    for k in kernels:
        body = k.attrs["body"]
        pattern = analyze(body.results[0], lambda v: v.op != "arg")
        if isinstance(pattern, Pattern):
            assert same_index_inputs(body, pattern) == reference_same_index_inputs(body, pattern)
    g = memplan._Graph(fused, kernels)
    edges: list[dict[int, set[int]]] = [{}] + [{n: g.readers_first(n, p)}
                                               for n, p in g.updates.items()]
    for after in edges:
        args = (kernels, g.reads, g.same, g.outs, g.keep, after)
        assert incremental_schedule(*args) == reference_schedule(*args)
        plan = g.plan(after)
        assert same_partition(plan.layout.slot_of, reference_slots(list(plan.intervals)))


def same_partition(a: dict[int, int], b: dict[int, int]) -> bool:
    """The same buffers share slots (the layout renumbers slots in arena order)."""
    return sorted(sorted(k for k in a if a[k] == s) for s in set(a.values())) == \
        sorted(sorted(k for k in b if b[k] == s) for s in set(b.values()))


@SETTINGS
@given(st.data(), st.sampled_from([DType.f32, DType.f64]))
def test_memplan_decides_as_the_plain_versions_do(data: st.DataObject, dtype: DType) -> None:
    forward = data.draw(graphs(dtype))
    for func in (forward, with_gradients(forward)):
        check_memplan_matches_the_plain_versions(optimized(func, "fusion"))


@pytest.mark.parametrize("entry", ["forward", "backward", "sgd_step"])
def test_memplan_of_a_chain_decides_as_the_plain_versions_do(entry: str) -> None:
    func = build_funcs(elaborate_source(chain(12, grad=True), "<s>")["g"])[entry]
    check_memplan_matches_the_plain_versions(optimized(func, "fusion"))


def test_no_kernel_holds_more_than_max_members_ops() -> None:
    # a 600-step chain used to fuse into one kernel whose expression tree was too deep for the
    # backend (RecursionError natively) and too large for LLVM to optimise quickly
    f = build_funcs(elaborate_source(chain(600, False), "<chain>")["g"])["forward"]
    out = fusion.run(run_pipeline(f, 2, after="dce"))
    sizes = [len(v.attrs["body"].values()) for v in out.values() if v.op == "fused"]
    assert max(sizes) <= fusion.MAX_MEMBERS + 8        # + the body's params and consts
    assert len(sizes) >= 600 * 4 // fusion.MAX_MEMBERS


@pytest.mark.slow
def test_a_long_chain_compiles_natively() -> None:
    import numpy as np
    src = chain(700, False)
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    w = np.eye(4, dtype=np.float32)
    native = graphc.compile_source(src, cache=False)(x=x, W=w)["h"]
    np.testing.assert_allclose(native, graphc.compile_source(src, backend="interp")(x=x, W=w)["h"],
                               rtol=1e-4)


def test_no_kernel_holds_more_than_max_reductions() -> None:
    """An unrolled loop's per-step reductions (an RNN's activity penalty) joined by adds: one
    row kernel would hold all T of them (its code growing with T); kernels stop at
    MAX_REDUCTIONS, each refusal explained."""
    from graphc.passes import fusion
    src = ("graph g {\n input x: f32[N, 6]\n e = zeros([], f32)\n"
           " for t in 0..20 {\n  e = e + sum(x * (x + 0.1 * t))\n }\n output e\n}\n")
    model = graphc.compile_source(src, backend="interp")
    ir = model.dump_ir(func="forward", after="fusion")
    bodies = ir.split("= fused")[1:]
    assert bodies and all(b.split("}, ")[0].count(" = sum ") <= fusion.MAX_REDUCTIONS
                          for b in bodies)
    assert "reductions, the most one kernel may" in ir
    x = np.linspace(-1, 1, 18, dtype=np.float32).reshape(3, 6)
    want = sum(float(np.sum(x * (x + np.float32(0.1 * t)))) for t in range(20))
    np.testing.assert_allclose(model(x=x)["e"], want, rtol=1e-5)
