"""``flush_denormals=True`` (runtime/fpmode.py): every native call of the model runs with
subnormal results flushed to zero (FTZ) and subnormal operands read as zero (DAZ), on the
caller's thread and on the pool's; the caller's own mode is back when the call returns, also
from a failing one; the default stays IEEE, as the reference interpreter is."""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import numpy as np
import pytest

import graphc
from graphc import model as model_module
from graphc.ir import interp
from graphc.runtime import fpmode, jit, pool

needs_flush = pytest.mark.skipif(not fpmode.supported(),
                                 reason="no flush-to-zero mode on this machine")
x86 = pytest.mark.skipif(fpmode.kind() != "x86", reason="reads MXCSR")

SCALE = """graph g {
  input x: F[N]
  output y = x * S
}
"""
TINY_F32 = np.float32(1e-39)          # subnormal in f32 (smallest normal ~1.2e-38)


def scale(dtype: str = "f32", s: str = "1e-30", **options: object) -> graphc.Model:
    return graphc.compile_source(SCALE.replace("F", dtype).replace("S", s), **options)


# -- the caller's control register, read and set from native code ------------------------------
MXCSR_IR = """
declare void @llvm.x86.sse.stmxcsr(ptr)
declare void @llvm.x86.sse.ldmxcsr(ptr)
define i32 @get_mxcsr() {
  %p = alloca i32
  call void @llvm.x86.sse.stmxcsr(ptr %p)
  %v = load i32, ptr %p
  ret i32 %v
}
define void @set_mxcsr(i32 %v) {
  %p = alloca i32
  store i32 %v, ptr %p
  call void @llvm.x86.sse.ldmxcsr(ptr %p)
  ret void
}
"""


CONTROL = 0xFFC0     # MXCSR's mode bits; bits 0-5 are sticky status flags, NumPy's to clear


@pytest.fixture(scope="module")
def mxcsr() -> tuple[ctypes._CFuncPtr, ctypes._CFuncPtr]:
    if fpmode.kind() != "x86":
        pytest.skip("reads MXCSR")
    loaded = jit.link(jit.compile_object(MXCSR_IR, 2), ["get_mxcsr", "set_mxcsr"])
    read = ctypes.CFUNCTYPE(ctypes.c_uint32)(loaded.addresses["get_mxcsr"])

    def get() -> int:
        """The mode bits (NumPy's ufuncs clear and raise the status flags in between)."""
        return int(read()) & CONTROL
    put = ctypes.CFUNCTYPE(None, ctypes.c_uint32)(loaded.addresses["set_mxcsr"])
    put.loaded = loaded
    return get, put


def numpy_is_ieee() -> bool:
    """NumPy (this thread) still computes subnormals."""
    return bool(TINY_F32 * np.float32(1) != 0) and bool(np.float32(1e-20) * np.float32(1e-20)
                                                       != 0)


# -- results ---------------------------------------------------------------------------------
@needs_flush
@pytest.mark.parametrize("dtype, x", [("f32", 1e-10), ("f64", 1e-290)])
def test_a_subnormal_result_is_flushed_and_ieee_without(dtype: str, x: float) -> None:
    xs = np.full(37, x, np.float32 if dtype == "f32" else np.float64)
    ieee = scale(dtype)(x=xs)["y"]
    want = interp.run(scale(dtype, backend="interp").optimized["forward"], {"x": xs})[0]
    np.testing.assert_array_equal(ieee, want)
    assert (ieee != 0).all() and (np.abs(ieee) < np.finfo(xs.dtype).tiny).all()
    flushed = scale(dtype, flush_denormals=True)(x=xs)["y"]
    np.testing.assert_array_equal(flushed, np.zeros_like(xs))


@needs_flush
def test_a_subnormal_operand_reads_as_zero() -> None:
    xs = np.full(19, TINY_F32)
    np.testing.assert_allclose(scale(s="1e30")(x=xs)["y"], 1e-9, rtol=1e-5)
    np.testing.assert_array_equal(scale(s="1e30", flush_denormals=True)(x=xs)["y"], 0)


def test_normal_numbers_are_the_same_with_the_option() -> None:
    xs = np.random.default_rng(0).standard_normal(100).astype(np.float32)
    np.testing.assert_array_equal(scale(s="0.5", flush_denormals=True)(x=xs)["y"], xs * 0.5)


def test_the_interpreter_stays_ieee() -> None:
    xs = np.full(5, 1e-10, np.float32)
    y = scale(backend="interp", flush_denormals=True)(x=xs)["y"]
    assert (y != 0).all()


# -- the caller's mode -----------------------------------------------------------------------
@needs_flush
def test_the_callers_mode_is_back_after_a_call(mxcsr: tuple) -> None:
    get, _ = mxcsr
    m = scale(flush_denormals=True)
    xs = np.full(8, 1e-10, np.float32)
    for _ in range(3):                       # the Python path, then the native method
        before = get()
        assert (m(x=xs)["y"] == 0).all()
        assert get() == before
        assert numpy_is_ieee()
    assert (model_module._PY_CALL(m, x=xs)["y"] == 0).all()
    assert get() == before and numpy_is_ieee()


@needs_flush
def test_the_callers_own_mode_is_kept(mxcsr: tuple) -> None:
    """A caller that set FTZ itself still has it after the call: the wrapper restores the
    word it saved, not a default."""
    get, put = mxcsr
    saved = get()
    try:
        put(saved | 0x8040)
        m = scale(flush_denormals=True)
        m(x=np.ones(4, np.float32))
        assert get() == saved | 0x8040
    finally:
        put(saved)
    assert get() == saved


@needs_flush
def test_the_callers_mode_is_back_after_a_failing_call(mxcsr: tuple) -> None:
    get, _ = mxcsr
    m = graphc.compile_source("graph g {\n  input x: f32[N]\n  output y = log(x) * 1e-30\n}\n",
                              check_numerics=True, flush_denormals=True)
    good = np.full(4, 2.0, np.float32)
    m(x=good)
    m(x=good)                                # the native method holds this signature now
    before = get()
    for _ in range(2):
        with pytest.raises(graphc.NumericsError):
            m(x=np.array([1.0, -1.0, 2.0, 3.0], np.float32))
        assert get() == before
        assert numpy_is_ieee()


def test_the_default_build_sets_no_mode() -> None:
    assert "mxcsr" not in scale().llvm_ir() and "fpcr" not in scale().llvm_ir()


@needs_flush
def test_the_option_build_sets_the_mode() -> None:
    text = scale(flush_denormals=True).llvm_ir()
    assert ("ldmxcsr" in text) if fpmode.kind() == "x86" else ("set.fpcr" in text)


# -- every entry point and path --------------------------------------------------------------
STEP = """graph g {
  input x: f32[6]
  param W: f32[6]
  loss = sum(W * x * 1e-30)
  output loss
  grad loss
}
"""


@needs_flush
@pytest.mark.parametrize("flush", [False, True])
def test_every_entry_point_flushes(flush: bool) -> None:
    """value_and_grad, sgd_step and train_step, each on its Python path (the first call)
    and its native method (the next): the gradient x * 1e-30 is subnormal."""
    m = graphc.compile_source(STEP, optimizer=graphc.optim.SGD(lr=1.0), flush_denormals=flush)
    x = np.full(6, 1e-10, np.float32)
    expect_zero = (lambda a: (a == 0).all()) if flush else (lambda a: (a != 0).all())
    for _ in range(2):
        _, grads = m.value_and_grad(x=x, W=np.zeros(6, np.float32))
        assert expect_zero(grads["W"])
    _, grads = model_module._PY_VG(m, x=x, W=np.zeros(6, np.float32))
    assert expect_zero(grads["W"])
    for _ in range(2):
        params = {"W": np.zeros(6, np.float32)}
        m.sgd_step(params, 1.0, x=x)
        assert expect_zero(params["W"])
    for _ in range(2):
        params = {"W": np.zeros(6, np.float32)}
        state = m.init_state(params)
        m.train_step(params, state, x=x)
        assert expect_zero(params["W"])
    assert numpy_is_ieee()


@needs_flush
def test_the_python_call_path_flushes_without_the_native_method() -> None:
    code = ("import sys, numpy as np, graphc\n"
            "m = graphc.compile_source(sys.stdin.read(), optimizer=graphc.optim.SGD(lr=1.0),"
            " flush_denormals=True)\n"
            "x = np.full(6, 1e-10, np.float32)\n"
            "for _ in range(3):\n"
            "    p = {'W': np.zeros(6, np.float32)}\n"
            "    m.train_step(p, m.init_state(p), x=x)\n"
            "    m.sgd_step(p, 1.0, x=x)\n"
            "    g = m.value_and_grad(x=x, W=np.zeros(6, np.float32))[1]['W']\n"
            "    print(type(type(m).sgd_step).__name__, int((p['W'] != 0).sum()),"
            " int((g != 0).sum()), float(np.float32(1e-39) * np.float32(1)) != 0)\n")
    env = {**os.environ, "GRAPHC_NATIVE_CALL": "0"}
    done = subprocess.run([sys.executable, "-c", code], input=STEP, env=env,
                          capture_output=True, text=True, check=True)
    lines = done.stdout.split("\n")[:3]
    assert lines == ["function 0 0 True"] * 3, done.stdout


# -- the pool's threads ----------------------------------------------------------------------
BIG = 1 << 17          # past pool.PARALLEL_WORK: the loop runs as tasks of the pool


@needs_flush
def test_the_pools_threads_flush_too() -> None:
    xs = np.full(BIG, 1e-10, np.float32)
    flushed = {t: scale(flush_denormals=True, num_threads=t) for t in (1, 2)}
    ieee = scale(num_threads=2)
    loops = pool.POOL.counts()[0]
    for _ in range(5):
        one, two = flushed[1](x=xs)["y"], flushed[2](x=xs)["y"]
        assert one.tobytes() == two.tobytes()
        np.testing.assert_array_equal(two, 0)
        # and a worker that ran a flushed region runs an IEEE one in IEEE
        assert (ieee(x=xs)["y"] != 0).all()
    if not flushed[2]._native.debug:                  # (a debug build runs its loops alone)
        assert pool.POOL.counts()[0] >= loops + 10      # the regions went to the pool


# tasks that record the control register they run with and the thread that ran them
POOL_IR = """
declare void @llvm.x86.sse.stmxcsr(ptr)
declare void @llvm.x86.sse.ldmxcsr(ptr)
declare i64 @pthread_self()
declare i64 @llvm.readcyclecounter()
declare void @graphc_parallel_for(ptr, ptr, i64, i64)
define internal void @task(ptr %ctx, i64 %t) {
entry:
  %t0 = call i64 @llvm.readcyclecounter()
  br label %spin
spin:
  %now = call i64 @llvm.readcyclecounter()
  %dt = sub i64 %now, %t0
  %more = icmp ult i64 %dt, 200000
  br i1 %more, label %spin, label %done
done:
  %p = alloca i32
  call void @llvm.x86.sse.stmxcsr(ptr %p)
  %v = load i32, ptr %p
  %w = zext i32 %v to i64
  %i = shl i64 %t, 1
  %at = getelementptr i64, ptr %ctx, i64 %i
  store i64 %w, ptr %at
  %j = add i64 %i, 1
  %at2 = getelementptr i64, ptr %ctx, i64 %j
  %me = call i64 @pthread_self()
  store i64 %me, ptr %at2
  ret void
}
define i64 @go(ptr %ctx, i64 %n, i32 %mode) {
  %saved = alloca i32
  call void @llvm.x86.sse.stmxcsr(ptr %saved)
  %p = alloca i32
  store i32 %mode, ptr %p
  call void @llvm.x86.sse.ldmxcsr(ptr %p)
  call void @graphc_parallel_for(ptr @task, ptr %ctx, i64 %n, i64 2)
  call void @llvm.x86.sse.ldmxcsr(ptr %saved)
  %me = call i64 @pthread_self()
  ret i64 %me
}
"""


@x86
def test_a_worker_runs_a_regions_tasks_in_its_callers_mode(mxcsr: tuple) -> None:
    get, _ = mxcsr
    loaded = jit.link(jit.compile_object(POOL_IR, 2), ["go"], imports=pool.POOL.symbols(2))
    go = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint32)(
        loaded.addresses["go"])
    base = get()
    worker_ran = False
    for attempt in range(30):
        mode = base | 0x8040 if attempt % 2 == 0 else base & ~0x8040
        out = np.zeros((16, 2), np.uint64)
        me = go(out.ctypes.data, 16, mode)
        assert ((out[:, 0].astype(np.int64) & CONTROL) == (mode & CONTROL)).all(), \
            (hex(mode), [hex(int(v)) for v in out[:, 0]])
        worker_ran = worker_ran or bool((out[:, 1] != me).any())
        assert get() == base
        if worker_ran and attempt >= 1:
            break
    if not worker_ran:
        pytest.skip("no worker joined a region (a busy machine): nothing seen of their mode")


# -- the option ------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [1, "yes", 1.0])
def test_the_option_is_checked(bad: object) -> None:
    with pytest.raises(graphc.GraphCallError, match="flush_denormals must be True or False"):
        scale(flush_denormals=bad)


def test_a_misspelt_option_names_it() -> None:
    with pytest.raises(graphc.GraphError, match="flush_denormals"):
        scale(flush_denormal=True)


@needs_flush
def test_the_cache_keeps_the_two_builds_apart() -> None:
    xs = np.full(9, 1e-10, np.float32)
    for flush in (False, True, False, True):
        m = scale(flush_denormals=flush)
        assert ((m(x=xs)["y"] == 0).all() if flush else (m(x=xs)["y"] != 0).all())
    # the second of each came from the disk cache
    assert scale(flush_denormals=True)._native.stats["llvm_compiles"] == 0


@needs_flush
def test_a_pickled_model_keeps_the_option() -> None:
    import pickle
    m = pickle.loads(pickle.dumps(scale(flush_denormals=True)))
    assert (m(x=np.full(3, 1e-10, np.float32))["y"] == 0).all()
