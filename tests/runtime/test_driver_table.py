"""The table driver (runtime/driver.py) runs what the direct driver runs: the same results bit for
bit (symbolic dims, view offsets, results written in place or staged), the same error codes (the
step's index added to a shared kernel's code, bounds checks by their number), and an unrolled
loop's driver no longer grows its LLVM code with the steps."""
from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import graphc
from graphc.ir.core import Func, make
from graphc.ir.errors import GraphCallError
from graphc.ir.types import Dim, DType
from graphc.runtime import call, compile_module, driver
from graphc.runtime.errcodes import ERR_BOUNDS, ERR_INDEX
from graphc.runtime.kernel import Call

TABLE, DIRECT = True, False         # what driver.use_table answers

LOOP = """
const T = {t}
graph g {{
    input  xs: f32[T, N, 4]
    input  zs: f32[T, N, L]
    input  idx: i64[T, 2]
    param  w: f32[4, 3]
    h = zeros([N, 3], f32)
    for t in 0..T {{
        h = tanh(xs[t] @ w + h) * 0.5
    }}
    picked = take(zs[0], idx[0], axis=1)
    for t in 1..T {{
        picked = picked + take(zs[t], idx[t], axis=1)
    }}
    loss = sum(h * h) + sum(picked)
    output loss, h
    grad loss
}}
"""


def compiled(form: bool, monkeypatch: pytest.MonkeyPatch, t: int = 5) -> graphc.Model:
    with monkeypatch.context() as m:
        m.setattr(driver, "use_table", lambda calls: form)
        return graphc.compile_source(LOOP.format(t=t), cache=False, debug=False)


@pytest.fixture(scope="module")
def models() -> dict[bool, graphc.Model]:
    with pytest.MonkeyPatch.context() as mp:
        return {form: compiled(form, mp) for form in (TABLE, DIRECT)}


def loop_args(model: graphc.Model, n: int = 3, m: int = 5) -> dict[str, np.ndarray]:
    """Symbolic N and L: the views' offsets are polynomials (t * N * L)."""
    rng = np.random.default_rng(0)
    t = model.inputs["xs"].shape[0]
    return {"xs": rng.standard_normal((t, n, 4)).astype(np.float32),
            "zs": rng.standard_normal((t, n, m)).astype(np.float32),
            "idx": rng.integers(0, m, (t, 2))} | model.init_params(seed=1)


def native_code(model: graphc.Model, name: str, args: dict[str, np.ndarray],
                monkeypatch: pytest.MonkeyPatch) -> int:
    """The error code entry ``name`` returns (0: none)."""
    class Failed(Exception):
        pass
    with monkeypatch.context() as m:
        m.setattr(call, "error_for", lambda plan, rc, *more, **kw: Failed(rc))
        try:
            model._native.call(name, args)
        except Failed as e:
            return int(e.args[0])
    return 0


def test_the_table_and_direct_drivers_compute_the_same_bits(
        models: dict[bool, graphc.Model]) -> None:
    args = loop_args(models[TABLE])
    got = {form: (m(**args), m.value_and_grad(**args)) for form, m in models.items()}
    (out_t, (_, g_t)), (out_d, (_, g_d)) = got[TABLE], got[DIRECT]
    for k in out_d:
        np.testing.assert_array_equal(out_t[k], out_d[k], err_msg=k)
    for k in g_d:
        np.testing.assert_array_equal(g_t[k], g_d[k], err_msg=k)
    ref = graphc.compile_source(LOOP.format(t=5), backend="interp")
    want = ref(**args)
    for k in want:
        np.testing.assert_allclose(out_t[k], want[k], rtol=2e-5, atol=1e-5, err_msg=k)


def test_a_shared_kernel_error_names_its_step(models: dict[bool, graphc.Model],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """take's index check fails in one step of five that share one kernel: the driver adds
    that step's index to the code, in both forms."""
    codes = {}
    for form, model in models.items():
        args = loop_args(model)
        assert native_code(model, "forward", args, monkeypatch) == 0
        args["idx"][3, 1] = 7                       # past L = 5, in step t = 3 only
        codes[form] = native_code(model, "forward", args, monkeypatch)
        plan = model._native.entry("forward").plan
        assert codes[form] >> 24 == ERR_INDEX
        step = plan.steps[codes[form] & 0xFFFFFF]
        assert step.value.op == "take" or "take" in str(step.value.attrs.get("body"))
        with pytest.raises(GraphCallError, match="7"):
            model(**args)
    assert codes[TABLE] == codes[DIRECT]
    # and the step is the fourth take: the first three take steps are earlier
    plan = models[TABLE]._native.entry("forward").plan
    takes = [s.index for s in plan.steps if "take" in repr(s.value.attrs.get("body"))
             or s.value.op == "take"]
    assert codes[TABLE] & 0xFFFFFF == takes[3]


def test_bounds_checks_report_their_number(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two run-time slice checks on symbolic dims; only the second fails."""
    src = ("graph g {\n input x: f32[N]\n input y: f32[K, 3]\n"
           " a = x[1]\n b = y[2]\n output s = a + sum(b)\n}\n")
    for form in (TABLE, DIRECT):
        with monkeypatch.context() as m:
            m.setattr(driver, "use_table", lambda calls, form=form: form)
            model = graphc.compile_source(src, filename="b.graph", cache=False, debug=False)
        ok = {"x": np.arange(3.0, dtype=np.float32), "y": np.ones((3, 3), np.float32)}
        assert float(model(**ok)["s"]) == 4.0
        bad = dict(ok, y=np.ones((2, 3), np.float32))
        rc = native_code(model, "forward", bad, monkeypatch)
        plan = model._native.entry("forward").plan
        assert rc >> 24 == ERR_BOUNDS and len(plan.checks) >= 2
        assert "K" in str(plan.checks[rc & 0xFFFFFF].hi)
        with pytest.raises(GraphCallError) as e:
            model(**bad)
        assert "b.graph:5:" in str(e.value)


def test_results_in_place_and_staged(monkeypatch: pytest.MonkeyPatch) -> None:
    """A result written over a param (the ``direct`` flag on) or staged and copied (off), and a
    result that is a param itself, through the table driver."""
    def arg(name: str) -> Any:
        return make("arg", name=name, dtype=DType.f32, shape=(Dim.sym("N"), 2))
    w, g = arg("w"), arg("g")
    new_w = w - g * 0.5
    f = Func("step", (w, g), (make("sum", w * w, axis=None, keepdims=False), new_w, w, new_w))
    with monkeypatch.context() as m:
        m.setattr(driver, "use_table", lambda calls: TABLE)
        mod = compile_module({"step": f}, cache=False)
    w0 = np.arange(6, dtype=np.float32).reshape(3, 2)
    g0 = np.ones((3, 2), np.float32)
    staged = mod.call("step", {"w": w0.copy(), "g": g0})
    mine = w0.copy()
    got = mod.call("step", {"w": mine, "g": g0}, inplace={1: "w"})
    assert got[1] is mine
    for out in (staged, got):
        np.testing.assert_array_equal(out[1], w0 - g0 * 0.5)
        np.testing.assert_array_equal(out[3], w0 - g0 * 0.5)
        np.testing.assert_array_equal(out[2], w0)          # the old w, read before the update
        assert float(out[0]) == float((w0 * w0).sum())


def test_the_drivers_llvm_does_not_grow_with_the_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Twice the steps: the table driver keeps its call sites (one per distinct kernel) and
    grows by less than two lines per step (only by the arguments of a kernel whose inputs grow
    with the loop, the gradient sum over the steps; the direct driver adds 5 or more a step)."""
    sizes = {}
    for t in (4, 8):
        model = compiled(TABLE, monkeypatch, t)
        with monkeypatch.context() as m:
            m.setattr(driver, "use_table", lambda calls: TABLE)
            text = model._native._ir_text("backward")
            shown = model._native.llvm_ir("backward", optimized=False)
        # the one call site of a shared kernel is annotated with every step it runs
        assert re.search(r"; steps \d+, \d+, \d+, .* at <source>:", shown)
        start = text.index('define i32 @"graphc_entry"')
        body = text[start:text.index("\n}\n", start)]
        steps = len(model._native.entry("backward").plan.steps)
        sizes[t] = (body.count("\n"), body.count("call i32"), steps)
    (lines4, calls4, steps4), (lines8, calls8, steps8) = sizes[4], sizes[8]
    assert calls8 == calls4 and steps8 > steps4 + 20
    assert lines8 - lines4 < 2 * (steps8 - steps4)


def test_the_table_is_for_many_calls_that_repeat() -> None:
    """An MLP's few calls and a debug build's unshared kernels keep the direct form."""
    def calls(n: int, distinct: int) -> list[Call]:
        fns = [SimpleNamespace(name=f"k{j}") for j in range(distinct)]
        return [Call(fns[j % distinct], [0], [], j) for j in range(n)]      # type: ignore
    assert driver.use_table(calls(2000, 23))
    assert not driver.use_table(calls(40, 20))
    assert not driver.use_table(calls(2000, 2000))          # a debug build: one kernel a step
