"""What keeps a cold compile's LLVM time down (issue 12) without changing the numbers: kernels
around the GEMM library get the cheap GLUE pipeline in a module of their own, while loops that
need the vectoriser keep -O<n>; values that no loop index moves are computed once in a
kernel's entry block (GLUE runs no LICM); reductions and maps that can never be split over
threads get no function of their own."""
from __future__ import annotations

import ctypes
import re

import llvmlite.ir as ll
import numpy as np
import pytest

import graphc
from graphc.runtime import jit
from graphc.runtime.codegen import pipeline_of, split_by_pipeline

MLP = """graph g {
    input x: f32[N, 64]
    input y: f32[N, 10]
    param W1: f32[64, 32] = glorot_uniform
    param b1: f32[32] = zeros
    param W2: f32[32, 10] = glorot_uniform
    param s: f32[] = ones
    h = relu(x @ W1 + b1)
    z = (h @ W2) * s
    loss = mean(softmax_cross_entropy(z, y))
    output loss
    grad loss
}"""


@pytest.fixture(scope="module")
def mlp() -> dict[str, graphc.Model]:
    return {"native": graphc.compile_source(MLP, num_threads=1, cache=False,
                                             debug=False),
            "interp": graphc.compile_source(MLP, backend="interp")}


def _data(n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 64)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]
    params = {"W1": (rng.standard_normal((64, 32)) * 0.2).astype(np.float32),
              "b1": (rng.standard_normal(32) * 0.1).astype(np.float32),
              "W2": (rng.standard_normal((32, 10)) * 0.2).astype(np.float32),
              "s": np.array(1.5, np.float32)}
    return {"x": x, "y": y}, params


def test_pipeline_of_a_function_by_what_it_holds() -> None:
    gemm = 'call void @"graphc.gemm.macro.f32.4x32"(i64 %".1")'
    fold = '%".9" = fadd reassoc contract float %".7", %".8"'
    assert pipeline_of(gemm, 2) == jit.GLUE
    assert pipeline_of(gemm + "\n" + fold, 2) == 2        # a dot product for the vectoriser
    assert pipeline_of(fold, 3) == 3                      # a loop kernel
    assert pipeline_of(gemm, 0) == 0                      # -O0 stays -O0


def test_a_module_splits_into_texts_that_compile_and_link() -> None:
    """The GEMM caller, the pool task only it uses and a part outlined from it go to GLUE's
    text; the loop kernel and an outlined dot product to -O2's; each declares what the other
    defines, both compile, and the objects link."""
    m = ll.Module("t")
    i64, ptr = ll.IntType(64), ll.PointerType()
    macro = ll.Function(m, ll.FunctionType(ll.VoidType(), [i64]), "graphc.gemm.macro.f32.x")
    loop = ll.Function(m, ll.FunctionType(i64, [i64]), "loop")
    b = ll.IRBuilder(loop.append_basic_block("entry"))
    b.ret(b.mul(loop.args[0], ll.Constant(i64, 3)))
    task = ll.Function(m, ll.FunctionType(ll.VoidType(), [ptr, i64]), "glue.task")
    task.linkage = "internal"
    b = ll.IRBuilder(task.append_basic_block("entry"))
    b.call(macro, [task.args[1]])
    b.ret_void()
    glue = ll.Function(m, ll.FunctionType(i64, [i64]), "glue")
    b = ll.IRBuilder(glue.append_basic_block("entry"))
    b.call(macro, [glue.args[0]])
    b.call(task, [ll.Constant(ptr, None), glue.args[0]])
    b.ret(b.call(loop, [glue.args[0]]))
    # parts outlined from the GEMM caller: glue too, unless they fold for the vectoriser
    f32 = ll.FloatType()
    for name, flags in (("glue.epilogue", ()), ("glue.dot", ("reassoc",))):
        part = ll.Function(m, ll.FunctionType(f32, [f32]), name)
        b = ll.IRBuilder(part.append_basic_block("entry"))
        b.ret(b.fadd(part.args[0], part.args[0], flags=flags))
    parts = split_by_pipeline(m, 2)
    assert [p for _, p in parts] == [2, jit.GLUE]
    (o2, _), (cheap, _) = parts
    defined = {p: set(re.findall(r'^define [^@]*@"([^"]+)"', t, re.MULTILINE))
               for t, p in parts}
    assert defined == {2: {"loop", "glue.dot"}, jit.GLUE: {"glue", "glue.task", "glue.epilogue"}}
    assert 'declare i64 @"glue"' in o2 and 'declare i64 @"loop"' in cheap
    blob = jit.compile_objects(parts)
    assert len(jit.unpack(blob)) == 2
    seen: list[int] = []
    macro_fn = ctypes.CFUNCTYPE(None, ctypes.c_int64)(seen.append)
    lib = jit.link(blob, ["glue"], {"graphc.gemm.macro.f32.x": ctypes.cast(
        macro_fn, ctypes.c_void_p).value})
    glue_fn = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(lib.addresses["glue"])
    assert glue_fn(5) == 15 and seen == [5, 5]          # GLUE's object calls -O2's
    # a single pipeline stays one text
    assert [p for _, p in split_by_pipeline(m, 0)] == [0]


def test_matmul_kernels_compile_as_glue_with_the_same_numbers(mlp: dict) -> None:
    native, ref = mlp["native"], mlp["interp"]
    counts = native.compile_stats.counts
    assert counts["glue functions"] >= 2, counts          # forward's two products at least
    inputs, params = _data(37)
    for got, want in zip(native.value_and_grad(**inputs, **params),
                         ref.value_and_grad(**inputs, **params)):
        for k in (want if isinstance(want, dict) else {"": want}):
            g = got[k] if isinstance(got, dict) else got
            w = want[k] if isinstance(want, dict) else want
            np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-5, err_msg=k)


def test_sgd_step_of_a_scalar_param_in_place_matches_the_interpreter(mlp: dict) -> None:
    """``s`` is read at every element (hoisted to the entry block where only read) and
    updated in place by the step (never hoisted there): several steps, both backends."""
    inputs, params = _data(9, seed=1)
    got = {k: v.copy() for k, v in params.items()}
    want = {k: v.copy() for k, v in params.items()}
    for _ in range(3):
        mlp["native"].sgd_step(got, 0.3, **inputs)
        mlp["interp"].sgd_step(want, 0.3, **inputs)
    assert not np.array_equal(got["s"], params["s"])
    for k in params:
        np.testing.assert_allclose(got[k], want[k], rtol=2e-4, atol=2e-5, err_msg=k)


def _kernels(ir: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in
            re.finditer(r'^define [^@]*@"([^"]+)"\(.*?\n\{\n(.*?)^\}', ir,
                        re.MULTILINE | re.DOTALL)}


def test_a_value_no_index_moves_is_computed_once_in_the_entry_block() -> None:
    m = graphc.compile_source("""graph g {
        input x: f32[N, 40]
        input a: f64[]
        y = x * cast(a, f32) + 1.0
        output y
    }""", num_threads=1, debug=False)
    ir = m._native.llvm_ir("forward", optimized=False)
    body = next(t for n, t in _kernels(ir).items() if n.startswith("k0."))
    entry = body.split("\nstart:")[0]
    assert "load double" in entry and "fptrunc double" in entry, entry
    x = np.arange(80, dtype=np.float32).reshape(2, 40)
    np.testing.assert_array_equal(m(x=x, a=np.float64(0.5))["y"], x * np.float32(0.5) + 1)


def test_reductions_and_small_maps_that_never_split_need_no_function_of_their_own() -> None:
    """At 2 threads: a sum into few results has only its parts (no second, whole-loop
    function), one over a leading axis into many runs in place, and a map of a static
    size under the pool's threshold has no outlined body. The numbers: a sum of one part is
    the rows added in order."""
    m = graphc.compile_source("""graph g {
        input t: f32[N, 8]
        input x: f32[N, 64]
        input b: f32[10]
        few = sum(t, axis=0)
        lead = sum(x, axis=0)
        small = tanh(b) * 3.0
        output few, lead, small
    }""", num_threads=2, debug=False)
    names = set(_kernels(m._native.llvm_ir("forward", optimized=False)))
    assert not [n for n in names if n.endswith((".reduce", ".map"))], names
    assert [n for n in names if n.endswith(".partial")], names        # few: the parts
    rng = np.random.default_rng(2)
    t = rng.standard_normal((50, 8)).astype(np.float32)
    x = rng.standard_normal((50, 64)).astype(np.float32)
    out = m(t=t, x=x, b=np.linspace(-1, 1, 10, dtype=np.float32))
    for got, arr in ((out["few"], t), (out["lead"], x)):
        acc = np.zeros(arr.shape[1], np.float32)
        for row in arr:                      # in order, in f32
            acc = acc + row
        np.testing.assert_array_equal(got, acc)
