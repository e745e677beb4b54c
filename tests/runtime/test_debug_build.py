"""The debug build: every load and store of a buffer is checked against the buffer's size, so a
planning or lowering bug that reads or writes outside a buffer becomes ERR_DEBUG_BOUNDS, where
the normal build would touch whatever memory lies there. On correct plans it changes nothing."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import graphc
from graphc.ir.core import Func, make
from graphc.ir.types import Dim, DType, dim_add
from graphc.passes import run_pipeline
from graphc.runtime import call, compile_module, module
from graphc.runtime.plan import ERR_DEBUG_BOUNDS, Plan, View

N = Dim.sym("N")
EXAMPLES = sorted(Path(__file__).resolve().parents[2].glob("examples/*.graph"))


def arg(name: str, shape: tuple, dtype: DType = DType.f32) -> Any:
    return make("arg", name=name, dtype=dtype, shape=shape)


def elementwise() -> Func:
    x = arg("x", (N,))
    return Func("f", (x,), (make("exp", x) * 2.0 + 1.0,))


def gemm() -> Func:
    x, w, b = arg("x", (N, 8)), arg("w", (8, 32)), arg("b", (32,))
    return Func("f", (x, w, b), (make("relu", x @ w + b),))


def rows() -> Func:
    x = arg("x", (N, 8))
    return Func("f", (x,), (make("softmax", x, axis=-1), make("sum", x, axis=(0,))))


def inputs(func: Func, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {p.attrs["name"]: rng.standard_normal(p.type.concrete({"N": n})).astype(p.dtype.np)
            for p in func.params}


def shrink(which: Callable[[Plan], int]) -> Callable[[Plan], None]:
    """Tell the plan that one buffer is a vector of elements shorter than it is."""
    def edit(plan: Plan) -> None:
        b = plan.buffers[which(plan)]
        b.size = dim_add(b.size, -(64 // b.dtype.itemsize))
    return edit


def param(k: int) -> Callable[[Plan], int]:
    return lambda plan: next(i for i, b in enumerate(plan.buffers)
                             if b.kind == "param" and b.index == k)


def written(plan: Plan) -> int:
    return plan.steps[-1].out.buf


def compiled(func: Func, edit: Callable[[Plan], None], debug: bool,
             monkeypatch: pytest.MonkeyPatch) -> Any:
    """``func`` at -O2 with its plan edited (a wrong extent, a shifted view) before codegen."""
    def make_plan(f: Func, **kw: Any) -> Plan:
        plan = real(f, **kw)
        edit(plan)
        return plan
    real = module.make_plan
    with monkeypatch.context() as m:
        m.setattr(module, "make_plan", make_plan)
        return compile_module({"f": run_pipeline(func, 2)}, cache=False, debug=debug)


def error_code(mod: Any, args: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> int:
    """The native error code of a call (0 when it succeeds)."""
    class Failed(Exception):
        pass
    monkeypatch.setattr(call, "error_for", lambda plan, rc, *more, **kw: Failed(rc))
    try:
        mod.call("f", args)
    except Failed as e:
        return int(e.args[0])
    return 0


@pytest.mark.parametrize("build, which", [
    (elementwise, param(0)),            # scalar loads
    (gemm, param(1)),                   # vector loads of B in the matmul tiles
    (gemm, param(2)),                   # the bias of the epilogue (vector loads)
    (gemm, written),                    # vector stores of C
    (rows, param(0)),                   # a row kernel and a reduction
], ids=["elementwise", "matmul-B", "epilogue", "store", "rows"])
def test_debug_build_catches_a_wrong_extent(build: Callable[[], Func], which: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    func = build()
    args = inputs(func, 37)
    want = compile_module({"f": func}, cache=False).call("f", args)
    # the normal build trusts the plan (here the access is in fact inside the real array)
    normal = compiled(func, shrink(which), False, monkeypatch)
    assert error_code(normal, args, monkeypatch) == 0
    debug = compiled(func, shrink(which), True, monkeypatch)
    rc = error_code(debug, args, monkeypatch)
    assert rc >> 24 == ERR_DEBUG_BOUNDS, hex(rc)
    assert (rc & 0xFFFFFF) < len(debug.entry("f").plan.steps)
    # and on the true plan, the debug build computes what the normal build does
    got = compile_module({"f": run_pipeline(func, 2)}, cache=False, debug=True).call("f", args)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_debug_build_stops_a_read_past_the_array(monkeypatch: pytest.MonkeyPatch) -> None:
    """A view shifted past its buffer's end: the debug build never touches that memory (the
    normal build would read beyond the caller's array, so it is not run)."""
    def shift(plan: Plan) -> None:
        s = plan.steps[0]
        s.args = tuple(View(a.buf, a.dtype, a.shape, a.strides, dim_add(a.offset, 1 << 20))
                       if isinstance(a, View) else a for a in s.args)
    x = arg("x", (N,))
    func = Func("f", (x,), (make("neg", x),))
    debug = compiled(func, shift, True, monkeypatch)
    rc = error_code(debug, {"x": np.ones(100, np.float32)}, monkeypatch)
    assert rc == ERR_DEBUG_BOUNDS << 24


def run_example(model: graphc.Model, n: int) -> tuple[dict, dict, dict]:
    rng = np.random.default_rng(1)
    env = {"N": n}
    args = {}
    for name, ty in model.inputs.items():
        shape = ty.concrete(env)
        args[name] = rng.integers(0, 5, shape).astype(ty.dtype.np) if not ty.dtype.is_float \
            else rng.standard_normal(shape).astype(ty.dtype.np)
    params = model.init_params(seed=0)
    out = model(**args, **params)
    vout, grads = model.value_and_grad(**args, **params)
    return out, vout, grads


def check_example(path: Path) -> None:
    first = re.search(r"^graph (\w+)", path.read_text(), re.M)     # a file may hold several
    graph = first.group(1) if first else None
    normal = graphc.compile(path, graph, cache=False)
    debug = graphc.compile(path, graph, cache=False, debug=True)
    for want, got in zip(run_example(normal, 7), run_example(debug, 7)):
        assert want.keys() == got.keys()
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{path.name}: {name}")


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_debug_build_matches_on_every_example(path: Path) -> None:
    check_example(path)


# ---------------------------------------------------------------------------- error details


def with_details(func: Func, monkeypatch: pytest.MonkeyPatch, debug: bool = False,
                 edit: Callable[[Plan], None] | None = None) -> tuple[Any, list[np.ndarray]]:
    """``func`` built with ``details``, its native entry wrapped so that each call passes a dims
    array with DETAIL_WORDS words of room (what runtime.call is to allocate); returns the
    module and a list that receives each call's detail words."""
    from graphc.runtime.codegen import build_module
    from graphc.runtime.plan import DETAIL_WORDS
    seen: list[np.ndarray] = []
    with monkeypatch.context() as m:
        m.setattr(module, "build_module",
                  lambda plan, *a, **kw: build_module(plan, *a, **{**kw, "details": True}))
        mod = compiled(func, edit or (lambda plan: None), debug, m)
    e = mod.entry("f")
    real, nsym = e.native, len(e.plan.symbols)
    at = len(func.params) + len(func.results)          # the dims pointer's place in the block

    def native(block: int) -> int:
        import ctypes
        ptrs = (ctypes.c_void_p * (at + 1)).from_address(block)
        dims = np.zeros(nsym + DETAIL_WORDS, np.int64)
        dims[:nsym] = np.ctypeslib.as_array((ctypes.c_int64 * max(nsym, 1)).from_address(
            ptrs[at]))[:nsym]
        ptrs[at] = dims.ctypes.data
        rc = real(block)
        seen.append(dims[nsym:].copy())
        return rc
    e.native = native
    return mod, seen


M = Dim.sym("M")


@pytest.mark.parametrize("axis, xs, idx, want", [
    (0, (3, 2), [2, -1, 0, 7, 5], (7, 3, 3)),            # the first bad index, where, bound
    (1, (2, 3), [[0, 1], [-4, 1]], (-4, 2, 3)),           # -4 wraps once, to -1: still bad
], ids=["axis0", "axis1-2d"])
def test_take_describes_the_bad_index(axis: int, xs: tuple, idx: list, want: tuple,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    i = np.array(idx, np.int64)
    x = arg("x", (N, xs[1]) if axis == 0 else (xs[0], N))
    ii = arg("i", tuple(M if k == 0 else Dim.sym("K") for k in range(i.ndim)), DType.i64)
    mod, seen = with_details(Func("f", (x, ii), (make("take", x, ii, axis=axis),)),
                             monkeypatch)
    rc = error_code(mod, {"x": np.zeros(xs, np.float32), "i": i}, monkeypatch)
    assert rc >> 24 == 5                                       # ERR_INDEX
    assert tuple(seen[-1][:3]) == want


def test_one_hot_describes_the_bad_label(monkeypatch: pytest.MonkeyPatch) -> None:
    labels = arg("labels", (N,), DType.i32)
    f = Func("f", (labels,), (make("one_hot", labels, depth=4, strict=True),))
    mod, seen = with_details(f, monkeypatch)
    rc = error_code(mod, {"labels": np.array([1, 3, 9, 2, -1], np.int32)}, monkeypatch)
    assert rc >> 24 == 5
    assert tuple(seen[-1][:3]) == (9, 2, 4)
    assert error_code(mod, {"labels": np.array([1, 3], np.int32)}, monkeypatch) == 0


def test_debug_bounds_describes_the_access(monkeypatch: pytest.MonkeyPatch) -> None:
    def shift(plan: Plan) -> None:
        s = plan.steps[0]
        s.args = tuple(View(a.buf, a.dtype, a.shape, a.strides, dim_add(a.offset, 1000))
                       if isinstance(a, View) else a for a in s.args)
    x = arg("x", (N,))
    mod, seen = with_details(Func("f", (x,), (make("neg", x),)), monkeypatch, True, shift)
    rc = error_code(mod, {"x": np.ones(100, np.float32)}, monkeypatch)
    assert rc == ERR_DEBUG_BOUNDS << 24
    plan = mod.entry("f").plan
    xbuf = next(i for i, b in enumerate(plan.buffers) if b.kind == "param")
    assert tuple(seen[-1]) == (1000, xbuf, 400, 4)       # element, buffer, its bytes, access
