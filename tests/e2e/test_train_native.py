"""``train_step``'s results come from a native method (``Model._train_outs``, the table of
runtime/call.py ``Signatures`` with two dicts): a call whose params, state, learning rate and
inputs match an earlier call's dtypes and shapes runs without Python's checks, updates params
and state in place and gives bitwise what the Python path gives; anything else takes the Python
path with its errors; a run-time error is raised once, never by running the step again."""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import graphc
from graphc import model as model_module
from graphc import train
from tests.native_calls import MLP, Counting, copied, data, same_steps_without_native


@pytest.fixture(scope="module")
def net() -> graphc.Model:
    m = graphc.compile_source(MLP, num_threads=1, optimizer=graphc.optim.Adam(lr=0.05))
    if not m._native_train_state:
        pytest.skip("the native method is off on this interpreter")
    return m


def python_step(m: graphc.Model, params: dict, state: dict, lr: Any = None,
                **inputs: Any) -> dict[str, Any]:
    """train_step through the Python path alone."""
    lr = m.optimizer.lr if lr is None else lr
    return train.stats(m._train, list(model_module._PY_TRAIN(m, params, state, lr, **inputs)))


def test_a_hit_runs_natively_in_place_and_equals_the_python_path(net: graphc.Model) -> None:
    params, inputs = data(5)
    mine, ref = copied(params), copied(params)
    my_state, ref_state = net.init_state(mine), net.init_state(ref)
    objects = [*mine.values(), *my_state.values()]
    net.train_step(mine, my_state, **inputs)            # the Python path, which installs
    python_step(net, ref, ref_state, **inputs)
    with Counting(net) as c:
        for step in range(4):
            batch = data(5, seed=step + 1)[1]
            lr = None if step % 2 else 0.01
            got = net.train_step(mine, my_state, lr, **batch)
            want = python_step(net, ref, ref_state, lr, **batch)
            assert got == want and type(got["loss"]) is float and type(got["nonfinite"]) is int
        assert c.n == 4                                 # the reference calls alone
    assert [*mine.values(), *my_state.values()] == objects      # in place, never replaced
    for k in params:
        assert mine[k].tobytes() == ref[k].tobytes() and not np.array_equal(mine[k], params[k])
    for k in my_state:
        assert my_state[k].tobytes() == ref_state[k].tobytes()
    assert int(my_state["step"]) == 5


def test_the_steps_equal_the_interpreters(net: graphc.Model) -> None:
    ref = graphc.compile_source(MLP, backend="interp", optimizer=graphc.optim.Adam(lr=0.05))
    params, inputs = data(4, seed=7)
    mine, theirs = copied(params), copied(params)
    s1, s2 = net.init_state(mine), ref.init_state(theirs)
    for _ in range(3):
        got, want = net.train_step(mine, s1, **inputs), ref.train_step(theirs, s2, **inputs)
        np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
    for k in params:
        np.testing.assert_allclose(mine[k], theirs[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("change", [
    lambda p, s, i: (p, s, 1, i),                                        # an int lr
    lambda p, s, i: (p, s, np.float32(0.01), i),
    lambda p, s, i: ({**p, "W1": p["W1"].astype(np.float64)}, s, None, i),
    lambda p, s, i: (p, s, None, {**i, "x": np.asfortranarray(i["x"])}),
    lambda p, s, i: (p, {**s, "step": np.asarray(int(s["step"]))}, None, i),   # a new array
], ids=["int-lr", "numpy-lr", "f64-param", "fortran", "new-step-array"])
def test_other_arguments_take_the_python_path(net: graphc.Model, change: Callable) -> None:
    params, inputs = data(3, seed=2)
    state = net.init_state(params)
    net.train_step(copied(params), copied(state), **inputs)
    p, s, lr, i = change(copied(params), copied(state), inputs)
    q, t, _, _ = change(copied(params), copied(state), inputs)
    with Counting(net) as c:
        got = net.train_step(p, s, lr, **i)
        assert c.n <= 1
    assert got == python_step(net, q, t, lr, **i)
    for k in params:
        np.testing.assert_array_equal(p[k], q[k])


@pytest.mark.parametrize("call, message", [
    (lambda m, p, s, i: m.train_step({k: v for k, v in p.items() if k != "W1"}, s, **i,
                                     W1=p["W1"]), "passed in params, not as a keyword"),
    (lambda m, p, s, i: m.train_step({k: v for k, v in p.items() if k != "b1"}, s, **i),
     "missing argument 'b1'"),
    (lambda m, p, s, i: m.train_step(p, {k: v for k, v in s.items() if k != "step"}, **i),
     "state has no 'step'"),
    (lambda m, p, s, i: m.train_step(p, {**s, "W9.exp_avg": s["step"]}, **i),
     "state has 'W9.exp_avg'"),
    (lambda m, p, s, i: m.train_step({**p, "extra": p["b1"]}, s, **i), "unexpected argument"),
    (lambda m, p, s, i: m.train_step(p, s, "fast", **i), "lr must be a number"),
    (lambda m, p, s, i: m.train_step(p, s, x=i["x"]), "missing argument 'y'"),
    (lambda m, p, s, i: m.train_step(p, {**s, "W1.exp_avg": s["W1.exp_avg"][:2].copy()}, **i),
     "W1.exp_avg"),
], ids=["param-as-keyword", "missing-param", "missing-state", "extra-state", "extra-param",
        "lr-string", "missing-input", "state-shape"])
def test_bad_arguments_say_what_they_always_said(net: graphc.Model, call: Callable,
                                                 message: str) -> None:
    params, inputs = data(3, seed=4)
    state = net.init_state(params)
    net.train_step(copied(params), copied(state), **inputs)
    before, state_before = copied(params), copied(state)
    with pytest.raises(graphc.GraphError, match=message) as native:
        call(net, params, state, inputs)
    saved = model_module.Model._train_outs
    model_module.Model._train_outs = model_module._PY_TRAIN    # type: ignore[method-assign]
    try:
        with pytest.raises(graphc.GraphError) as python:
            call(net, copied(before), copied(state_before), inputs)
    finally:
        model_module.Model._train_outs = saved                 # type: ignore[method-assign]
    assert str(native.value) == str(python.value)
    for k in before:
        np.testing.assert_array_equal(params[k], before[k])     # nothing ran
    for k in state_before:
        np.testing.assert_array_equal(state[k], state_before[k])


def test_a_run_time_error_is_raised_once_without_running_again() -> None:
    src = ("graph t {\n  input x: f32[N, 3]\n  input i: i64[M]\n  param W: f32[3, 2] = zeros\n"
           "  loss = sum(take(x @ W, i))\n  output loss\n  grad loss\n}\n")
    m = graphc.compile_source(src, filename="take.graph", num_threads=1,
                              optimizer=graphc.optim.SGD(lr=0.1, momentum=0.9))
    if not m._native_train_state:
        pytest.skip("the native method is off on this interpreter")
    x = np.ones((3, 3), np.float32)
    params = {"W": np.ones((3, 2), np.float32)}
    state = m.init_state(params)
    m.train_step(params, state, x=x, i=np.array([0, 2]))        # cached
    before, state_before = params["W"].copy(), copied(state)
    with Counting(m) as c:
        with pytest.raises(graphc.GraphCallError, match="out of range") as e:
            m.train_step(params, state, x=x, i=np.array([0, 3]))
        assert c.n == 0                         # raised by the native method, not run again
    assert "take.graph:5:" in str(e.value)
    np.testing.assert_array_equal(params["W"], before)
    for k in state:
        np.testing.assert_array_equal(state[k], state_before[k])


def test_monitor_stats_and_references(net: graphc.Model) -> None:
    m = graphc.compile_source(MLP, num_threads=1, monitor=True,
                              optimizer=graphc.optim.SGD(lr=0.1, momentum=0.9))
    params, inputs = data(6)
    ref = copied(params)
    state, ref_state = m.init_state(params), m.init_state(ref)
    for _ in range(3):
        got = m.train_step(params, state, **inputs)
        assert got == python_step(m, ref, ref_state, **inputs)
    assert set(got["grad_norms"]) == {"W1", "b1", "W2"}
    objs = [params, state, *params.values(), *state.values(), *inputs.values()]
    before = [sys.getrefcount(o) for o in objs]
    for _ in range(1000):
        m.train_step(params, state, **inputs)
    assert [sys.getrefcount(o) for o in objs] == before


STEPS = """
import numpy as np

def steps(m):
    rng = np.random.default_rng(5)
    p = {"W1": rng.standard_normal((3, 4)).astype(np.float32),
         "b1": rng.standard_normal(4).astype(np.float32),
         "W2": rng.standard_normal((4, 2)).astype(np.float32)}
    s = m.init_state(p)
    x = rng.standard_normal((6, 3)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 6)]
    losses = [repr(m.train_step(p, s, x=x, y=y)["loss"]) for _ in range(4)]
    return [type(type(m)._train_outs).__name__, *losses,
            *(a.tobytes().hex() for a in [*p.values(), *s.values()])]
"""
RUN = "import sys, graphc\nm = graphc.compile_source(sys.stdin.read(), num_threads=1, " \
    "optimizer=graphc.optim.Adam(lr=0.05))\nprint(*steps(m))\n"


def test_without_the_native_method_the_steps_are_the_same(net: graphc.Model) -> None:
    same_steps_without_native(net, STEPS, RUN)
