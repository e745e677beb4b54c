"""The native method behind ``Model.__call__`` (runtime/fastmethod.py ``native_method``): a call
whose arguments match a cached signature runs without Python and gives what the Python path
gives; every other call (other dtypes, layouts, types, shapes, dims, empty arrays, positional
or missing arguments, a run-time error) takes the Python path, with its errors word for word.
References are neither leaked nor lost, and threads calling at once each get their own
results."""
from __future__ import annotations

import ctypes
import gc
import inspect
import sys
import threading
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import graphc
from graphc import model as model_module
from graphc.runtime import fastmethod
from tests.native_calls import Counting

SRC = """graph g {
  input x: f32[N, 3]
  param W: f32[3, 2]
  param b: f32[2]
  h = tanh(x @ W + b)
  output h
  output s = sum(h, axis=0)
}
"""
LOSS = """graph l {
  input z: f32[N, 3]
  input labels: i64[N]
  output loss = sparse_softmax_cross_entropy(z, labels, reduction="mean")
}
"""


@pytest.fixture(scope="module")
def net() -> graphc.Model:
    m = graphc.compile_source(SRC, num_threads=1)
    if not m._native_state:
        pytest.skip("the native method is off on this interpreter")
    return m


def python_path(m: graphc.Model, **args: Any) -> dict[str, np.ndarray]:
    return model_module._PY_CALL(m, **args)


def args_for(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, 3)).astype(np.float32),
            "W": rng.standard_normal((3, 2)).astype(np.float32),
            "b": rng.standard_normal(2).astype(np.float32)}


def same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for k, w in want.items():
        assert type(got[k]) is np.ndarray and got[k].dtype == w.dtype
        np.testing.assert_array_equal(got[k], w)


def test_the_native_method_is_on_for_this_interpreter(net: graphc.Model) -> None:
    for name in ("__call__", "value_and_grad"):
        method = vars(graphc.Model)[name]
        assert type(method).__name__ == "method_descriptor"
        assert str(inspect.signature(method)) == "(self, /, **arrays)"
        assert method.__doc__ == getattr(model_module, "_PY_CALL" if name == "__call__"
                                         else "_PY_VG").__doc__
    assert fastmethod._array_offsets() is not None


def test_a_hit_runs_natively_and_equals_the_python_path(net: graphc.Model) -> None:
    a = args_for(5)
    want = python_path(net, **a)
    b = args_for(5, seed=1)                         # other values, same signature: a hit
    want_b = python_path(net, **b)
    with Counting(net) as c:
        for _ in range(3):
            same(net(**a), want)
        same(net(**b), want_b)
        same(net(b=a["b"], W=a["W"], x=a["x"]), want)     # any keyword order
        assert c.n == 0
    outs = net(**a)
    assert outs["h"] is not outs["s"] and not np.shares_memory(outs["h"], a["x"])


@pytest.mark.parametrize("change, python", [
    (lambda a: {**a, "x": a["x"].astype(np.float64)}, 2),             # another dtype
    (lambda a: {**a, "x": np.asfortranarray(np.tile(a["x"], (1, 1)))}, 2),
    (lambda a: {**a, "x": np.repeat(a["x"], 2, axis=0)[::2]}, 2),     # a strided view
    (lambda a: {**a, "x": a["x"].view(Sub)}, 2),                      # an ndarray subclass
    (lambda a: {**a, "x": a["x"].astype(">f4")}, 2),                  # other byte order
    (lambda a: {**a, "x": a["x"].tolist()}, 2),                       # not an array at all
    (lambda a: {**a, "x": unaligned(a["x"])}, 2),
    (lambda a: {**a, "x": np.zeros((0, 3), np.float32)}, 2),          # empty: never cached
], ids=["dtype", "fortran", "strided", "subclass", "byteorder", "list", "unaligned", "empty"])
def test_other_arguments_take_the_python_path(net: graphc.Model,
                                              change: Callable[[dict], dict],
                                              python: int) -> None:
    a = change(args_for(4, seed=2))
    want = python_path(net, **a)
    net(**args_for(4))
    with Counting(net) as c:
        same(net(**a), want)
        same(net(**a), want)
        assert c.n == python


class Sub(np.ndarray):
    pass


def unaligned(x: np.ndarray) -> np.ndarray:
    raw = np.zeros(x.nbytes + 1, np.uint8)[1:]
    out = raw.view(np.float32).reshape(x.shape)
    out[...] = x
    assert not out.flags.aligned
    return out


def test_symbolic_dims_bind_each_new_n(net: graphc.Model) -> None:
    ref = graphc.compile_source(SRC, backend="interp")
    for n in (1, 2, 3, 7, 2, 1, 9, 8, 7, 3, 1, 11):     # more sizes than the table holds
        a = args_for(n, seed=n)
        want = ref(**a)
        with Counting(net) as c:
            got = [net(**a), net(**a)]
            assert c.n <= 1                  # a new N takes the Python path once, then not
        for g in got:
            np.testing.assert_allclose(g["h"], want["h"], rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(g["s"], want["s"], rtol=1e-5, atol=1e-5)
    with Counting(net) as c:
        net(**args_for(11))
        assert c.n == 0


@pytest.mark.parametrize("call, message", [
    (lambda m, a: m(**{**a, "x": a["x"][:, :2].copy()}), "argument 'x' must have shape"),
    (lambda m, a: m(**{**a, "x": a["x"][0].copy()}), "argument 'x' must have rank 2"),
    (lambda m, a: m(**{**a, "x": a["x"].astype(np.complex64)}),
     "argument 'x' must be f32\\[N,3\\], got a complex64 array"),
    (lambda m, a: m(x=a["x"], W=a["W"]), "missing argument 'b'"),
    (lambda m, a: m(**a, y=a["x"]), "unexpected argument 'y'"),
])
def test_bad_arguments_say_what_they_always_said(net: graphc.Model, call: Callable,
                                                 message: str) -> None:
    a = args_for(4)
    net(**a)
    with pytest.raises(graphc.GraphCallError, match=message) as native:
        call(net, a)
    saved = model_module.Model.__call__
    model_module.Model.__call__ = model_module._PY_CALL    # type: ignore[method-assign]
    try:
        with pytest.raises(graphc.GraphCallError) as python:
            call(net, a)
    finally:
        model_module.Model.__call__ = saved                # type: ignore[method-assign]
    assert str(native.value) == str(python.value)


def test_positional_arguments_are_a_type_error(net: graphc.Model) -> None:
    a = args_for(4)
    net(**a)
    with pytest.raises(TypeError, match="positional"):
        net(a["x"], W=a["W"], b=a["b"])
    with pytest.raises(TypeError, match="3001 were given"):
        net(*range(3000))


def test_the_bound_method_and_many_keywords(net: graphc.Model) -> None:
    a = args_for(4)
    call = net.__call__                   # a bound builtin: its own calling convention
    same(call(**a), python_path(net, **a))
    with pytest.raises(graphc.GraphCallError, match="unexpected argument 'k0'"):
        net(**a, **{f"k{i}": i for i in range(5000)})



def test_a_run_time_error_is_raised_by_the_python_path() -> None:
    m = graphc.compile_source(LOSS, filename="loss.graph", num_threads=1)
    if not m._native_state:
        pytest.skip("the native method is off on this interpreter")
    z = np.zeros((2, 3), np.float32)
    ok = m(z=z, labels=np.array([0, 2]))["loss"]
    np.testing.assert_allclose(ok, np.log(3), rtol=1e-6)
    for _ in range(2):                              # the signature is cached: a native failure
        with pytest.raises(graphc.GraphCallError, match="label") as e:
            m(z=z, labels=np.array([0, 3]))
        assert "loss.graph:4:" in str(e.value)
    assert m(z=z, labels=np.array([1, 1]))["loss"] == ok
    name = "".join(["lab", "els"])  # noqa: FLY002 - made at run time: not the interned name
    assert name == "labels" and name is not sys.intern("labels")
    with Counting(m) as c:
        assert m(z=z, **{name: np.array([1, 1])})["loss"] == ok
        assert c.n == 0


def test_references_are_neither_leaked_nor_lost(net: graphc.Model) -> None:
    a = args_for(6)
    out = net(**a)
    f32 = np.dtype(np.float32)
    before = [sys.getrefcount(v) for v in a.values()] + [sys.getrefcount(f32)]
    for _ in range(2000):
        out = net(**a)
    after = [sys.getrefcount(v) for v in a.values()] + [sys.getrefcount(f32)]
    assert before == after
    slow = python_path(net, **a)
    assert [sys.getrefcount(v) for v in out.values()] == \
        [sys.getrefcount(v) for v in slow.values()]
    assert sys.getrefcount(out) == sys.getrefcount(slow) == 2
    tracemalloc.start()
    try:
        for _ in range(200):
            net(**a)
        start = tracemalloc.get_traced_memory()[0]
        for _ in range(3000):
            net(**a)
        grew = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    assert grew < 3000 * 16               # results never freed would hold over 100 bytes each


def test_many_threads_call_at_once(net: graphc.Model) -> None:
    sizes = [3, 5, 3, 64, 5, 3, 2048, 1, 8192, 8192]     # the last calls drop the GIL
    inputs = [args_for(n, seed=k) for k, n in enumerate(sizes)]
    wants = [python_path(net, **a) for a in inputs]
    errors: list[BaseException] = []
    gate = threading.Barrier(len(sizes))

    def work(k: int) -> None:
        try:
            gate.wait()
            for i in range(150):
                if k == 0 and i % 50 == 0:
                    net.release_memory()
                same(net(**inputs[k]), wants[k])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(sizes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_a_dead_models_workspace_entry_goes_with_it() -> None:
    from graphc.runtime import arena
    m = graphc.compile_source(SRC, num_threads=1)
    m(**args_for(2))
    key = m._native.arena.key
    assert key in arena._thread_dict()
    del m
    gc.collect()
    assert key not in arena._thread_dict()


def test_a_model_on_the_interpreter_takes_the_python_path() -> None:
    m = graphc.compile_source(SRC, backend="interp")
    a = args_for(3)
    assert m._native_state == 0
    same(m(**a), python_path(m, **a))


@pytest.mark.parametrize("off", ["env", "interpreter", "layout"])
def test_the_native_method_is_off_where_it_cannot_be_trusted(
        off: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if off == "env":
        monkeypatch.setenv("GRAPHC_NATIVE_CALL", "0")
    elif off == "interpreter":        # a debug or free-threaded build, another version
        monkeypatch.setattr(fastmethod, "_interpreter_ok", lambda: False)
    else:                             # an ndarray layout the probe does not recognise
        monkeypatch.setattr(fastmethod, "_array_offsets", lambda: None)

    class Thing:
        pass
    assert fastmethod.native_method(Thing, "_state", lambda self, **kw: kw) is None


def test_the_probe_finds_numpys_fields() -> None:
    off = fastmethod._array_offsets()
    assert off is not None
    a = np.ones((3, 4), np.float32)[:, 1:]
    assert fastmethod._word_at(a, off["data"]) == a.ctypes.data
    assert fastmethod._word_at(a, off["descr"]) == id(a.dtype)
    assert fastmethod._word_at(a, off["nd"], ctypes.c_int32) == 2
    assert fastmethod._word_at(a, off["flags"], ctypes.c_int32) == a.flags.num


GRAD = """graph q {
  input x: f32[N, 3]
  param W: f32[3, 2]
  output loss = sum(tanh(x @ W))
  output h = x @ W
  grad loss wrt W, x
}
"""


def test_value_and_grad_runs_natively_too() -> None:
    m = graphc.compile_source(GRAD, num_threads=1)
    if not m._native_state:
        pytest.skip("the native method is off on this interpreter")
    assert m._native_vg_state
    rng = np.random.default_rng(3)
    a = {"x": rng.standard_normal((4, 3)).astype(np.float32),
         "W": rng.standard_normal((3, 2)).astype(np.float32)}
    want = model_module._PY_VG(m, **a)
    with Counting(m) as c:
        for _ in range(3):
            got = m.value_and_grad(**a)
            assert type(got) is tuple and len(got) == 2
            same(got[0], want[0])
            same(got[1], want[1])
        assert c.n == 0
        assert list(got[1]) == ["W", "x"]
        same(m.value_and_grad(**{**a, "x": a["x"][:2].copy()})[1],
             model_module._PY_VG(m, **{**a, "x": a["x"][:2].copy()})[1])
        assert c.n == 2                     # a new N: the Python path (and the reference)
    before = [sys.getrefcount(v) for v in a.values()]
    for _ in range(1000):
        got = m.value_and_grad(**a)
    assert [sys.getrefcount(v) for v in a.values()] == before
    assert sys.getrefcount(got) == 2 and [sys.getrefcount(d) for d in got] == [3, 3]
    with pytest.raises(graphc.GraphCallError, match="missing argument 'W'"):
        m.value_and_grad(x=a["x"])
