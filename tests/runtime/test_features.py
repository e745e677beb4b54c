"""Backend behaviour beyond single ops: one compile for every dim binding, views, run-time
bounds, argument checking and conversion (docs/runtime.md), in-place results, threads, the NaN
guard and generated vector code."""
from __future__ import annotations

import re
import threading

import numpy as np
import pytest

from graphc.ir.core import Func, at, const, make
from graphc.ir.errors import GraphCallError, Loc, NumericsError
from graphc.ir.types import Dim, DType
from graphc.runtime import compile_module
from tests.runtime.conftest import assert_matches, reference

N = Dim.sym("N")
M = Dim.sym("M")


def arg(name: str, shape: tuple, dtype: DType = DType.f32):
    return make("arg", name=name, dtype=dtype, shape=shape)


def mlp_like() -> Func:
    """Views (transpose, slice, broadcast), fused elementwise chains, reductions, a matmul of a
    transposed view, a tuple const and a dim value, over symbolic N."""
    x, w, b = arg("x", (N, 4)), arg("w", (4, 3)), arg("b", (3,))
    h = make("relu", x @ w + b)
    c = const((1.0, -2.0, 0.5), DType.f32, (3,))
    count = make("dim", value=N * 2 + 1, dtype=DType.f32)
    s = make("sum", make("exp", h * c), axis=(1,), keepdims=True) / count
    g = make("transpose", x, perm=(1, 0)) @ h                     # [4, 3]
    tail = make("slice", h, start=(1, 0), stop=(N, 3), step=(1, 2))
    arg_max = make("argmax", h * c, axis=(1,), keepdims=False)
    return Func("f", (x, w, b), (s, g, tail, arg_max, make("max", h, axis=(0,), keepdims=False)))


def test_one_compile_serves_every_binding() -> None:
    f = mlp_like()
    mod = compile_module({"f": f}, cache=False)
    assert mod.stats == {"llvm_compiles": 1, "cache_hits": 0}
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 64):
        arrays = [rng.standard_normal(s).astype(np.float32) for s in ((n, 4), (4, 3), (3,))]
        assert_matches(mod.call("f", dict(zip("xwb", arrays))), reference(f, arrays), f"N={n}")


def test_slice_out_of_range_at_run_time_is_a_call_error() -> None:
    f = mlp_like()
    mod = compile_module({"f": f})
    with pytest.raises(GraphCallError, match="slice"):
        mod.call("f", {"x": np.zeros((0, 4), np.float32), "w": np.zeros((4, 3), np.float32),
                       "b": np.zeros(3, np.float32)})


def test_take_index_out_of_range_is_a_call_error() -> None:
    x, i = arg("x", (N, 2)), arg("i", (M,), DType.i64)
    f = Func("f", (x, i), (make("take", x, i, axis=0),))
    mod = compile_module({"f": f})
    x0 = np.arange(6, dtype=np.float32).reshape(3, 2)
    got = mod.call("f", {"x": x0, "i": np.array([2, -1, 0])})[0]
    np.testing.assert_array_equal(got, x0[[2, -1, 0]])
    with pytest.raises(GraphCallError, match="out of range"):
        mod.call("f", {"x": x0, "i": np.array([3])})


def simple() -> Func:
    x, y = arg("x", (N, 3)), arg("y", (N, 3))
    return Func("f", (x, y), (x * y + 1.0,))


@pytest.mark.parametrize("args, message", [
    ({"x": np.zeros((2, 3))}, "missing argument 'y'"),
    ({"x": np.zeros((2, 3)), "y": np.zeros((2, 3)), "z": 1}, "unexpected argument 'z'"),
    ({"x": np.zeros((2, 3)), "yy": np.zeros((2, 3))}, "did you mean 'y'"),
    ({"x": np.zeros((2, 3)), "y": np.zeros(3)}, "rank 2"),
    ({"x": np.zeros((2, 3)), "y": np.zeros((2, 4))}, "shape"),
    ({"x": np.zeros((2, 3)), "y": np.zeros((4, 3))}, r"N = 2 \(x\) vs 4 \(y\)"),
    ({"x": np.zeros((2, 3)), "y": np.zeros((2, 3), np.complex64)}, "complex64"),
])
def test_bad_arguments_raise_call_errors(args: dict, message: str) -> None:
    mod = compile_module({"f": simple()})
    with pytest.raises(GraphCallError, match=message):
        mod.call("f", args)


def test_conversions_and_fresh_outputs() -> None:
    mod = compile_module({"f": simple()})
    big = np.arange(24, dtype=np.float64).reshape(4, 6)
    x = big[:, ::2]                                   # non-contiguous f64 -> f32
    y = np.ones((4, 3), np.int64)                     # int -> float is same_kind
    out = mod.call("f", {"x": x, "y": y})[0]
    np.testing.assert_array_equal(out, (x * y + 1).astype(np.float32))
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.flags.owndata
    again = mod.call("f", {"x": x, "y": y})[0]
    assert again is not out and not np.shares_memory(again, out)


def test_results_in_place_and_aliases() -> None:
    w, g = arg("w", (3, 2)), arg("g", (3, 2))
    new_w = w - g * 0.5
    f = Func("step", (w, g), (make("sum", w * w, axis=None, keepdims=False), new_w, w, new_w))
    mod = compile_module({"step": f})
    w0 = np.arange(6, dtype=np.float32).reshape(3, 2)
    g0 = np.ones((3, 2), np.float32)
    want = reference(f, [w0, g0])
    mine = w0.copy()
    got = mod.call("step", {"w": mine, "g": g0}, inplace={1: "w"})
    assert got[1] is mine
    np.testing.assert_array_equal(mine, want[1])
    assert_matches(got[:1] + got[2:], [want[0], want[2], want[3]])  # old w read before update
    with pytest.raises(GraphCallError, match="in place"):
        mod.call("step", {"w": np.zeros((3, 4), np.float32)[:, ::2], "g": g0}, inplace={1: "w"})


def test_threads_share_a_module() -> None:
    f = mlp_like()
    mod = compile_module({"f": f})
    rng = np.random.default_rng(1)
    jobs = []
    for n in (5, 9, 33, 2):
        arrays = [rng.standard_normal(s).astype(np.float32) for s in ((n, 4), (4, 3), (3,))]
        jobs.append((arrays, reference(f, arrays)))
    errors: list[BaseException] = []

    def work(arrays: list, want: list) -> None:
        try:
            for _ in range(200):
                assert_matches(mod.call("f", dict(zip("xwb", arrays))), want)
        except BaseException as e:   # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_numerics_guard_names_the_first_bad_op() -> None:
    x = arg("x", (N,))
    with at(Loc("net.graph", 3, 7)):
        lg = make("log", x)
    with at(Loc("net.graph", 4, 5)):
        y = make("sqrt", lg)
    f = Func("f", (x,), (y * 2.0,))
    mod = compile_module({"f": f}, check_numerics=True)
    np.testing.assert_allclose(mod.call("f", {"x": np.array([3.0, 4.0], np.float32)})[0],
                               2 * np.sqrt(np.log([3.0, 4.0])), rtol=1e-6)
    with pytest.raises(NumericsError, match="sqrt") as e:
        mod.call("f", {"x": np.array([0.5], np.float32)})   # log ok, sqrt(negative) is NaN
    assert e.value.loc == Loc("net.graph", 4, 5)
    with pytest.raises(NumericsError, match="log") as e:
        mod.call("f", {"x": np.array([0.0], np.float32)})   # log(0) = -inf
    assert str(e.value).startswith("net.graph:3:7")
    with pytest.raises(NumericsError, match="argument 'x'"):
        mod.call("f", {"x": np.array([np.nan], np.float32)})
    plain = compile_module({"f": f})                          # without the guard: NaN, no error
    assert np.isnan(plain.call("f", {"x": np.array([0.5], np.float32)})[0][0])


def test_unbound_dim_needs_a_binding() -> None:
    f = Func("f", (), (const(1.5, DType.f64, (N, 2)),))
    mod = compile_module({"f": f})
    with pytest.raises(GraphCallError, match="not bound"):
        mod.call("f", {})
    np.testing.assert_array_equal(mod.call("f", {}, dims={"N": 3})[0], np.full((3, 2), 1.5))


@pytest.mark.parametrize("dtype", [DType.f32, DType.f64])
def test_exp_loop_uses_vector_registers(dtype: DType) -> None:
    x = arg("x", (N,), dtype)
    mod = compile_module({"f": Func("f", (x,), (make("exp", x),))}, debug=False)
    asm = mod.asm("f")
    assert re.search(r"vfmadd\w*p[sd]\s+%?[zy]mm", asm), "the exp loop did not vectorise"
    assert not re.search(r"call.*\bexpf?\b", asm), "exp must not call libm"
    text = mod.llvm_ir("f", optimized=False)
    assert "graphc_entry" in text and "llvm.fma" in text


def test_layout_ops_are_views_and_chains_fuse() -> None:
    """Plain ops run one step each, as the IR shows them (the runtime fuses nothing itself);
    after the fusion pass the chain is one loop nest. A transpose is a view either way."""
    from graphc.passes import run_pipeline
    from graphc.runtime.plan import View, make_plan
    x = arg("x", (N, 4))
    t = make("transpose", x, perm=(1, 0))
    e = make("exp", make("tanh", t) * 2.0)
    s = make("sum", e, axis=(1,), keepdims=False)
    f = Func("f", (x,), (s, make("slice", t, start=(1, 0), stop=(3, N), step=(1, 1))))
    plain = make_plan(f)
    assert [st.value.op for st in plain.steps] == ["tanh", "mul", "exp", "sum"]
    assert isinstance(plain.operands[id(t)], View) and plain.operands[id(t)].strides == (1, 4)
    fused = make_plan(run_pipeline(f, "fusion", required=False))
    assert len(fused.steps) == 1                    # one loop nest in all
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal((5, 4)).astype(np.float32)]
    assert_matches(compile_module({"f": f}).call("f", {"x": arrays[0]}), reference(f, arrays))


def test_take_checks_indices_even_when_nothing_is_gathered() -> None:
    # the interpreter rejects index 7 of an axis of 3 whatever the other axes hold
    x, i = arg("x", (N, M)), arg("i", (Dim.sym("K"),), DType.i64)
    f = Func("f", (x, i), (make("take", x, i, axis=0),))
    mod = compile_module({"f": f})
    args = {"x": np.zeros((3, 0), np.float32), "i": np.array([1, 7])}
    with pytest.raises(GraphCallError, match="out of range"):
        reference(f, list(args.values()))
    with pytest.raises(GraphCallError, match="out of range"):
        mod.call("f", args)
    assert mod.call("f", {**args, "i": np.array([1, -3])})[0].shape == (2, 0)
