"""``Model.sgd_step`` as a native method (runtime/fastmethod.py with a ``scalar`` table): a call
``sgd_step(params, lr, **inputs)`` whose dict, float and arrays match a cached signature runs
without Python, writes each update into the caller's array (or stages it, as the plan says) and
gives bitwise what the Python path gives; every other call takes the Python path, with its
errors word for word; a run-time error is raised once, never by running the step again."""
from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import graphc
from graphc import model as model_module
from tests.native_calls import MLP, Counting, copied, data, same_steps_without_native

# MLP has two layers: W2's update runs before the backward reads W2, so the plan stages it
# (flag 0), while W1's update writes straight into the caller's array (flag 1)
TAKE = """graph t {
  input x: f32[N, 3]
  input i: i64[M]
  param W: f32[3, 2] = glorot_uniform
  loss = sum(take(x @ W, i))
  output loss
  grad loss
}
"""


@pytest.fixture(scope="module")
def net() -> graphc.Model:
    m = graphc.compile_source(MLP, num_threads=1)
    if not m._native_sgd_state:
        pytest.skip("the native method is off on this interpreter")
    return m


def python_sgd(m: graphc.Model, params: dict, lr: Any, **inputs: Any) -> np.ndarray:
    return model_module._PY_SGD(m, params, lr, **inputs)


def test_the_native_method_is_on_and_stages_what_the_plan_says(net: graphc.Model) -> None:
    method = vars(graphc.Model)["sgd_step"]
    assert type(method).__name__ == "method_descriptor"
    assert method.__doc__ == model_module._PY_SGD.__doc__
    sig = net._sgd_signatures
    assert sig.names == ["x", "y", "W1", "b1", "W2"] and sig.targets == [-1, 2, 3, 4]
    assert sig.direct[0] and sig.direct[1] and not all(sig.direct)   # both kinds are covered


def test_a_hit_runs_natively_in_place_and_equals_the_python_path(net: graphc.Model) -> None:
    params, inputs = data(5)
    mine, ref = copied(params), copied(params)
    same_objects = dict(mine)
    net.sgd_step(mine, 0.1, **inputs)                   # the Python path, which installs
    python_sgd(net, ref, 0.1, **inputs)
    with Counting(net) as c:
        for step in range(4):
            batch = data(5, seed=step + 1)[1]           # other values, the same signature
            got = net.sgd_step(mine, 0.1, **batch)
            want = python_sgd(net, ref, 0.1, **batch)
            assert type(got) is np.ndarray and got.shape == () and got.dtype == np.float32
            assert got.tobytes() == want.tobytes()
        got = net.sgd_step(mine, 0.05, y=inputs["y"], x=inputs["x"])   # any keyword order
        want = python_sgd(net, ref, 0.05, **inputs)
        assert c.n == 5                                 # the reference calls alone
    assert got.tobytes() == want.tobytes()
    for k in params:
        assert mine[k] is same_objects[k]               # updated in place, never replaced
        assert mine[k].tobytes() == ref[k].tobytes()
        assert not np.array_equal(mine[k], params[k])


def test_the_updates_equal_the_interpreters(net: graphc.Model) -> None:
    ref = graphc.compile_source(MLP, backend="interp")
    params, inputs = data(4, seed=7)
    mine, theirs = copied(params), copied(params)
    for _ in range(3):
        got = net.sgd_step(mine, 0.2, **inputs)
        want = ref.sgd_step(theirs, 0.2, **inputs)
        np.testing.assert_allclose(got, want, rtol=1e-5)
    for k in params:
        np.testing.assert_allclose(mine[k], theirs[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("change", [
    lambda p, i: (p, 1, i),                                       # an int lr
    lambda p, i: (p, np.float64(0.1), i),                         # a NumPy scalar lr
    lambda p, i: ({**p, "W1": p["W1"].astype(np.float64)}, 0.1, i),   # converted, copied back
    lambda p, i: (p, 0.1, {**i, "x": np.asfortranarray(i["x"])}),
    lambda p, i: (p, 0.1, {**i, "x": i["x"].tolist()}),
    lambda p, i: (p, 0.1, {**i, "x": np.zeros((0, 3), np.float32),
                           "y": np.zeros((0, 2), np.float32)}),    # empty: never cached
], ids=["int-lr", "numpy-lr", "f64-param", "fortran", "list", "empty"])
def test_other_arguments_take_the_python_path(net: graphc.Model, change: Callable) -> None:
    params, inputs = data(3, seed=2)
    net.sgd_step(copied(params), 0.1, **inputs)
    p, lr, i = change(copied(params), inputs)
    q, _, _ = change(copied(params), inputs)
    with Counting(net) as c:
        got = net.sgd_step(p, lr, **i)
        assert c.n == 1
    want = python_sgd(net, q, lr, **i)
    np.testing.assert_array_equal(got, want)
    for k in params:
        np.testing.assert_array_equal(p[k], q[k])


def test_lr_by_keyword_and_the_bound_method(net: graphc.Model) -> None:
    params, inputs = data(3, seed=3)
    a, b, c_ = copied(params), copied(params), copied(params)
    step = net.sgd_step
    np.testing.assert_array_equal(step(a, 0.1, **inputs), net.sgd_step(b, lr=0.1, **inputs))
    python_sgd(net, c_, 0.1, **inputs)
    for k in params:
        np.testing.assert_array_equal(a[k], c_[k])
        np.testing.assert_array_equal(b[k], c_[k])


def test_arguments_that_share_memory_are_staged_by_the_python_path() -> None:
    src = ("graph s {\n  input x: f32[4]\n  param a: f32[4] = zeros\n  param b: f32[4] = zeros\n"
           "  loss = sum(x * a) + sum(square(b))\n  output loss\n  grad loss\n}\n")
    m = graphc.compile_source(src, num_threads=1)
    rng = np.random.default_rng(0)
    x, a, b = (rng.standard_normal(4).astype(np.float32) for _ in range(3))
    m.sgd_step({"a": a.copy(), "b": b.copy()}, 0.5, x=x.copy())      # cached
    shared = a.copy()
    cases = [({"a": shared, "b": b.copy()}, shared),     # the input is a param's own array
             ({"a": shared.copy(), "b": shared}, shared)]  # ... another param's
    for params, xs in cases:
        want_params = {k: v.copy() for k, v in params.items()}
        want = python_sgd(m, want_params, 0.5, x=xs.copy())
        with Counting(m) as c:
            got = m.sgd_step(params, 0.5, x=xs)
            assert c.n == 1
        np.testing.assert_array_equal(got, want)
        for k in params:
            np.testing.assert_array_equal(params[k], want_params[k])
    p = {"a": a.copy(), "b": b.copy()}
    p["b"] = p["a"]                                    # one array for two params
    with Counting(m) as c:
        m.sgd_step(p, 0.5, x=x)
        assert c.n == 1


@pytest.mark.parametrize("call, message", [
    (lambda m, p, i: m.sgd_step({k: v for k, v in p.items() if k != "b1"}, 0.1, **i),
     "missing argument 'b1'"),
    (lambda m, p, i: m.sgd_step({**p, "extra": p["b1"]}, 0.1, **i), "unexpected argument 'extra'"),
    (lambda m, p, i: m.sgd_step({**p, "W1": p["W1"][:, :2].copy()}, 0.1, **i),
     "argument 'W1' must have shape"),
    (lambda m, p, i: m.sgd_step({**p, "W1": p["W1"].astype(np.complex64)}, 0.1, **i),
     "sgd_step updates 'W1' in place|argument 'W1' must be"),
    (lambda m, p, i: m.sgd_step(p, 0.1, x=i["x"]), "missing argument 'y'"),
    (lambda m, p, i: m.sgd_step(p, 0.1, **i, z=i["x"]), "unexpected argument 'z'"),
    (lambda m, p, i: m.sgd_step({**p, "W1": readonly(p["W1"])}, 0.1, **i),
     "sgd_step updates 'W1' in place"),
    (lambda m, p, i: m.sgd_step(p, "fast", **i), "lr"),
], ids=["missing-param", "extra-key", "shape", "dtype", "missing-input", "extra-input",
        "read-only", "lr-string"])
def test_bad_arguments_say_what_they_always_said(net: graphc.Model, call: Callable,
                                                 message: str) -> None:
    params, inputs = data(3, seed=4)
    net.sgd_step(copied(params), 0.1, **inputs)
    before = copied(params)
    with pytest.raises(graphc.GraphError, match=message) as native:
        call(net, params, inputs)
    saved = model_module.Model.sgd_step
    model_module.Model.sgd_step = model_module._PY_SGD      # type: ignore[method-assign]
    try:
        with pytest.raises(graphc.GraphError) as python:
            call(net, copied(before), inputs)
    finally:
        model_module.Model.sgd_step = saved                 # type: ignore[method-assign]
    assert str(native.value) == str(python.value)
    for k in before:
        np.testing.assert_array_equal(params[k], before[k])   # nothing ran


def readonly(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


def test_an_input_named_lr_comes_in_the_params_dict() -> None:
    src = ("graph g {\n  input lr: f32[2]\n  param w: f32[2] = zeros\n"
           "  loss = sum(square(w - lr))\n  output loss\n  grad loss\n}\n")
    m = graphc.compile_source(src, num_threads=1)
    if not m._native_sgd_state:
        pytest.skip("the native method is off on this interpreter")
    target = np.array([1.0, -2.0], np.float32)
    params, ref = {"w": np.zeros(2, np.float32)}, {"w": np.zeros(2, np.float32)}
    m.sgd_step({**params, "lr": target}, 0.25)
    python_sgd(m, {**ref, "lr": target}, 0.25)
    with Counting(m) as c:
        for _ in range(3):
            got = m.sgd_step({"lr": target, **params}, 0.25)
            want = python_sgd(m, {**ref, "lr": target}, 0.25)
            assert got == want
        assert c.n == 3                                 # the reference calls alone
    np.testing.assert_array_equal(params["w"], ref["w"])
    assert params["w"][0] > 0.5


def test_positional_arguments_are_a_type_error(net: graphc.Model) -> None:
    params, inputs = data(3)
    with pytest.raises(TypeError):
        net.sgd_step(params, 0.1, inputs["x"], inputs["y"])
    with pytest.raises(TypeError):
        net.sgd_step()


def test_a_run_time_error_is_raised_once_without_running_again() -> None:
    m = graphc.compile_source(TAKE, filename="take.graph", num_threads=1)
    if not m._native_sgd_state:
        pytest.skip("the native method is off on this interpreter")
    x = np.ones((3, 3), np.float32)
    params = {"W": np.ones((3, 2), np.float32)}
    m.sgd_step(params, 0.1, x=x, i=np.array([0, 2]))           # cached
    before = params["W"].copy()
    for _ in range(2):
        with Counting(m) as c:
            with pytest.raises(graphc.GraphCallError, match="out of range") as e:
                m.sgd_step(params, 0.1, x=x, i=np.array([0, 3]))
            assert c.n == 0                    # raised by the native method, not run again
        assert "take.graph:5:" in str(e.value)
        np.testing.assert_array_equal(params["W"], before)
    saved = model_module.Model.sgd_step
    model_module.Model.sgd_step = model_module._PY_SGD      # type: ignore[method-assign]
    try:
        with pytest.raises(graphc.GraphCallError) as python:
            m.sgd_step(params, 0.1, x=x, i=np.array([0, 3]))
    finally:
        model_module.Model.sgd_step = saved                 # type: ignore[method-assign]
    assert str(python.value) == str(e.value)


def test_references_are_neither_leaked_nor_lost(net: graphc.Model) -> None:
    params, inputs = data(6)
    out = net.sgd_step(params, 1e-3, **inputs)
    lr = 1e-3
    objs = [params, lr, *params.values(), *inputs.values(), np.dtype(np.float32)]
    before = [sys.getrefcount(o) for o in objs]
    for _ in range(2000):
        out = net.sgd_step(params, lr, **inputs)
    assert [sys.getrefcount(o) for o in objs] == before
    assert sys.getrefcount(out) == 2
    # calls that the method gives up on after taking the arrays: a layout that does not fit,
    # and an input that shares memory with a param (found after the results are made)
    fortran = {**inputs, "x": np.asfortranarray(inputs["x"])}
    shared = {"y": inputs["y"][:1].copy(), "x": params["W1"].reshape(-1)[:3].reshape(1, 3)}
    many = {"x": np.repeat(inputs["x"][:1], 6, axis=0)[::-1], "y": inputs["y"]}
    net.sgd_step(params, lr, **shared)
    for args in (fortran, many, shared):
        objs = [params, *params.values(), *args.values()]
        before = [sys.getrefcount(o) for o in objs]
        for _ in range(300):
            net.sgd_step(params, lr, **args)
        assert [sys.getrefcount(o) for o in objs] == before


def test_many_threads_step_at_once(net: graphc.Model) -> None:
    sizes = [3, 5, 64, 1, 2048]
    work = [data(n, seed=k) for k, n in enumerate(sizes)]
    wants = []
    for params, inputs in work:
        p = copied(params)
        for _ in range(20):
            python_sgd(net, p, 0.01, **inputs)
        wants.append(p)
    errors: list[BaseException] = []
    gate = threading.Barrier(len(sizes))

    def run(k: int) -> None:
        try:
            p, inputs = copied(work[k][0]), work[k][1]
            gate.wait()
            for i in range(20):
                if k == 0 and i == 10:
                    net.release_memory()
                net.sgd_step(p, 0.01, **inputs)
            for name in p:
                np.testing.assert_array_equal(p[name], wants[k][name])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(sizes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


STEPS = """
import numpy as np

def steps(m):
    rng = np.random.default_rng(5)
    p = {"W1": rng.standard_normal((3, 4)).astype(np.float32),
         "b1": rng.standard_normal(4).astype(np.float32),
         "W2": rng.standard_normal((4, 2)).astype(np.float32)}
    x = rng.standard_normal((6, 3)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[rng.integers(0, 2, 6)]
    losses = [m.sgd_step(p, 0.3, x=x, y=y).tobytes().hex() for _ in range(4)]
    return [type(type(m).sgd_step).__name__, *losses, *(p[k].tobytes().hex() for k in p)]
"""
RUN = "import sys, graphc\nm = graphc.compile_source(sys.stdin.read(), num_threads=1)\n" \
    "print(*steps(m))\n"


def test_without_the_native_method_the_steps_are_the_same(net: graphc.Model) -> None:
    same_steps_without_native(net, STEPS, RUN)
