"""The arena: allocated once per model and thread, grown only when a binding needs more, exactly
the memory plan's peak (the formula evaluated at the call's dims), with results written in
place of the caller's arrays staged after it; and random functions through the -O2 pipeline
run their kernels (never the op-by-op fallback) with the interpreter's results."""
from __future__ import annotations

import threading
import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphc.ir.core import Func, make
from graphc.ir.types import Dim, DType, dim_eval
from graphc.passes import memplan, run_pipeline
from graphc.runtime import compile_module
from graphc.runtime.kernelplan import plan_kernels
from tests.runtime.conftest import assert_matches, reference
from tests.runtime.test_random_graphs import graphs

N = Dim.sym("N")


def mlp() -> Func:
    x, w1, w2 = (make("arg", name=n, dtype=DType.f32, shape=s)
                 for n, s in (("x", (N, 24)), ("w1", (24, 40)), ("w2", (40, 8))))
    h = make("relu", x @ w1)
    logits = h @ w2
    loss = make("sum", make("exp", logits - make("max", logits, axis=1, keepdims=True)))
    return run_pipeline(Func("f", (x, w1, w2), (loss, make("sum", h * h, axis=0))), 2)


def call(mod, n: int) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(n)
    return mod.call("f", {"x": rng.standard_normal((n, 24)).astype(np.float32),
                          "w1": rng.standard_normal((24, 40)).astype(np.float32),
                          "w2": rng.standard_normal((40, 8)).astype(np.float32)})


def test_the_arena_is_the_planned_peak_and_grows_only_when_needed() -> None:
    f = mlp()
    peak = memplan.plan(f).peak
    assert isinstance(peak, Dim) and peak.symbols == ("N",)
    mod = compile_module({"f": f}, cache=False)
    assert mod.entries["f"].plan.peak == peak          # the runtime places what the plan says
    call(mod, 16)
    first = mod.arena.address
    assert mod.arena.size == dim_eval(peak, {"N": 16})
    call(mod, 16)
    call(mod, 3)
    assert (mod.arena.address, mod.arena.size) == (first, dim_eval(peak, {"N": 16}))
    for n in (17, 100, 1000):
        call(mod, n)
        assert mod.arena.size == dim_eval(peak, {"N": n})


def test_each_thread_has_its_own_arena() -> None:
    mod = compile_module({"f": mlp()}, cache=False)
    want = call(mod, 8)
    seen: list[int] = []
    errors: list[BaseException] = []
    gate = threading.Barrier(3)

    def work() -> None:
        try:
            for _ in range(20):
                got = call(mod, 8)
                np.testing.assert_array_equal(got[1], want[1])
            seen.append(mod.arena.address)
            gate.wait()                              # all alive: their arenas all exist
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            gate.abort()
    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(set(seen)) == 3


def test_results_overwrite_their_param_in_place_or_are_staged() -> None:
    """The update of w reads w only at the element it writes and runs after the sum that also
    reads w, so it writes over the caller's w directly; written over g instead (not planned),
    it is staged after the peak and copied at the end."""
    w, g = (make("arg", name=n, dtype=DType.f32, shape=(N, 3)) for n in "wg")
    f = run_pipeline(Func("step", (w, g), (w - make("exp", g) * 0.5, make("sum", w)),
                          ("w", "total")), 2)
    assert f.results[0].attrs["inplace"] == "w"
    mod = compile_module({"step": f}, cache=False)
    plan = mod.entries["step"].plan
    w0, g0 = np.ones((4, 3), np.float32), np.zeros((4, 3), np.float32)
    mine = w0.copy()
    got = mod.call("step", {"w": mine, "g": g0}, inplace={0: "w"})
    assert got[0] is mine and np.allclose(mine, 0.5) and got[1] == 12
    assert mod.arena.size == dim_eval(plan.peak, {"N": 4})
    theirs = g0.copy()
    got = mod.call("step", {"w": w0, "g": theirs}, inplace={0: "g"})
    assert got[0] is theirs and np.allclose(theirs, 0.5) and got[1] == 12
    assert mod.arena.size == dim_eval(plan.stage_ends[0], {"N": 4}) > dim_eval(plan.peak,
                                                                                {"N": 4})


def with_gradients(func: Func) -> Func:
    """``func``'s results and the gradient of the sum of its float results w.r.t. x and w."""
    loss = None
    for r in func.results:
        term = make("sum", make("tanh", r))
        loss = term if loss is None else loss + term
    x, w = func.params[0], func.params[1]
    return Func("g", func.params, func.results + (make("grad", loss, x), make("grad", loss, w)))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from([DType.f32, DType.f64]))
def test_random_pipelines_run_their_kernels(data: st.DataObject, dtype: DType) -> None:
    func = with_gradients(data.draw(graphs(dtype)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")             # gradients that are zero warn
        want, got = run_pipeline(func, 0), run_pipeline(func, 2)
    assert plan_kernels(got) is not None
    mod = compile_module({"g": got}, cache=False)
    rng = np.random.default_rng(0)
    for n in (0, 1, 5):
        arrays = [rng.uniform(-2, 2, s).astype(dtype.np) for s in ((n, 3), (3, 3), (3,))]
        assert_matches(mod.call("g", dict(zip("xwb", arrays))), reference(want, arrays),
                       f"N={n}\n{got}")
