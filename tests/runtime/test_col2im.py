"""im2col and col2im natively against the reference interpreter, over strides, paddings,
dilations, odd sizes and batches of 0, 1 and 3 (one compile for every case); col2im's sums in
the reference's order (equal to the last bit), the two ops each other's transpose, and conv2d
with groups through them, gradients included."""
from __future__ import annotations

import numpy as np
import pytest

from graphc.ir.core import Func, make
from graphc.ir.types import Dim, DType, TensorType
from graphc.passes import fusion, memplan
from graphc.passes.autodiff import grad_of
from graphc.runtime import compile_module
from tests.runtime.conftest import assert_matches, reference

N = Dim.sym("N")
# x [N, H, W, C], window, stride, dilation, lo, hi
CASES = [
    ((8, 8, 32), (3, 3), (1, 1), (1, 1), (1, 1), (1, 1)),     # the benchmark's conv
    ((5, 7, 3), (3, 2), (2, 1), (1, 1), (0, 1), (1, 0)),
    ((7, 6, 2), (2, 3), (2, 3), (2, 1), (2, 1), (1, 2)),
    ((4, 5, 1), (1, 1), (1, 1), (1, 1), (0, 0), (0, 0)),
    ((6, 6, 4), (3, 3), (3, 2), (2, 2), (3, 3), (3, 3)),     # pads wider than a tap
    ((3, 3, 5), (3, 3), (1, 1), (1, 1), (2, 2), (2, 2)),     # windows mostly padding
]
IDS = [f"x{c[0]}-k{c[1]}-s{c[2]}-d{c[3]}-lo{c[4]}-hi{c[5]}" for c in CASES]


def attrs(case: tuple) -> dict:
    _, window, stride, dilation, lo, hi = case
    return {"window": window, "stride": stride, "dilation": dilation, "lo": lo, "hi": hi}


def funcs(dtype: DType) -> dict[str, Func]:
    out = {}
    for k, case in enumerate(CASES):
        x = make("arg", name="x", dtype=dtype, shape=(N,) + case[0])
        cols = make("im2col", x, **attrs(case))
        p = make("arg", name="p", dtype=dtype, shape=cols.shape)
        back = make("col2im", p, size=case[0][:2], **attrs(case))
        out[f"im{k}"] = Func(f"im{k}", (x,), (cols,))
        out[f"col{k}"] = Func(f"col{k}", (p,), (back,))
    return out


@pytest.fixture(scope="module", params=[DType.f32, DType.f64], ids=["f32", "f64"])
def compiled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[dict[str, Func], object]:
    mp = pytest.MonkeyPatch()
    mp.setenv("GRAPHC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "graphc-cache"))
    fs = funcs(request.param)
    try:
        yield fs, compile_module(fs, threads=1)
    finally:
        mp.undo()


@pytest.mark.parametrize("n", [0, 1, 3])
@pytest.mark.parametrize("k", range(len(CASES)), ids=IDS)
def test_native_matches_interpreter(compiled: tuple, k: int, n: int) -> None:
    fs, mod = compiled
    rng = np.random.default_rng(k)
    for name in (f"im{k}", f"col{k}"):
        p = fs[name].params[0]
        a = rng.standard_normal(p.type.concrete({"N": n})).astype(p.dtype.np)
        got = mod.call(name, {p.attrs["name"]: a})
        want = reference(fs[name], [a])
        assert_matches(got, want, f"{name} N={n}")
        if name.startswith("col"):      # the same sums in the same order: the same bits
            np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.parametrize("k", range(len(CASES)), ids=IDS)
def test_col2im_is_the_transpose_of_im2col(compiled: tuple, k: int) -> None:
    """<im2col(x), p> = <x, col2im(p)> for every x and p: the VJP pair is exact."""
    fs, mod = compiled
    rng = np.random.default_rng(100 + k)
    x = rng.standard_normal((2,) + CASES[k][0])
    cols = mod.call(f"im{k}", {"x": x.astype(fs[f"im{k}"].params[0].dtype.np)})[0]
    p = rng.standard_normal(cols.shape)
    back = mod.call(f"col{k}", {"p": p.astype(cols.dtype)})[0]
    lhs, rhs = float(np.sum(cols * p)), float(np.sum(x * back))
    assert abs(lhs - rhs) <= 1e-4 * (1 + abs(lhs))


def test_col2im_shape_errors() -> None:
    from graphc.ir.errors import GraphTypeError
    p = make("arg", name="p", dtype=DType.f32, shape=(2, 4, 4, 18))
    with pytest.raises(GraphTypeError, match="do not"):
        make("col2im", p, window=(3, 3), size=(5, 5))        # 3x3 windows over 5x5: 3x3 of them
    q = make("arg", name="q", dtype=DType.f32, shape=(2, 4, 4, 7))
    with pytest.raises(GraphTypeError, match="taps"):
        make("col2im", q, window=(2, 2), size=(5, 5))        # 7 is no multiple of 4 taps


def test_conv2d_with_groups_and_its_gradients_natively() -> None:
    """conv2d through im2col (forward) and col2im (the input's gradient), groups and strides
    included, natively against the interpreter."""
    x = make("arg", name="x", dtype=DType.f64, shape=(N, 7, 6, 4))
    w = make("arg", name="w", dtype=DType.f64, shape=(3, 2, 2, 6))
    out = make("conv2d", x, w, stride=(2, 1), padding=((1, 2), (0, 1)), dilation=(1, 2),
               groups=2)
    loss = make("sum", make("tanh", out), axis=None)
    gx, gw = grad_of(loss, [x, w])
    func = Func("g", (x, w), (loss, gx, gw))
    mod = compile_module({"g": func}, threads=1)
    rng = np.random.default_rng(7)
    for n in (0, 1, 3):
        arrays = [rng.standard_normal((n, 7, 6, 4)), rng.standard_normal((3, 2, 2, 6))]
        got = mod.call("g", {"x": arrays[0], "w": arrays[1]})
        assert_matches(got, reference(func, arrays), f"conv2d grads N={n}")


def test_types() -> None:
    x = make("arg", name="x", dtype=DType.f32, shape=(N, 5, 7, 3))
    cols = make("im2col", x, window=(3, 2), stride=(2, 1), lo=(0, 1), hi=(1, 0))
    assert cols.type == TensorType(DType.f32, (N, 2, 7, 18))
    back = make("col2im", cols, window=(3, 2), stride=(2, 1), lo=(0, 1), hi=(1, 0), size=(5, 7))
    assert back.type == x.type


def test_batched_matmul_against_one_matrix_runs_as_one_gemm_with_its_epilogue() -> None:
    """[N,3,4,K] @ [K,6] (a convolution's product) folds its batch into the GEMM's rows,
    epilogue included; A or an epilogue operand whose strides do not run on through the batch
    axes (a transposed view) takes the per-batch loop instead. All match the interpreter."""
    a = make("arg", name="a", dtype=DType.f32, shape=(N, 3, 4, 37))
    at = make("arg", name="at", dtype=DType.f32, shape=(3, N, 4, 37))
    w = make("arg", name="w", dtype=DType.f32, shape=(37, 6))
    bias = make("arg", name="bias", dtype=DType.f32, shape=(6,))
    z = make("arg", name="z", dtype=DType.f32, shape=(6, 4, 3, N))
    folded = make("relu", make("add", make("matmul", a, w), bias))
    strided_a = make("matmul", make("transpose", at, perm=(1, 0, 2, 3)), w)
    strided_epi = make("add", make("matmul", a, w), make("transpose", z, perm=(3, 2, 1, 0)))
    func = Func("f", (a, at, w, bias, z), (folded, strided_a, strided_epi))
    fused = memplan.run(fusion.run(func))
    epilogues = [v.attrs["body"].name for v in fused.values() if v.op == "fused"]
    assert "matmul.relu" in epilogues and "matmul.add" in epilogues
    mod = compile_module({"f": fused}, threads=1)
    rng = np.random.default_rng(3)
    for n in (0, 1, 5):
        arrays = [rng.standard_normal(sh).astype(np.float32) for sh in
                  ((n, 3, 4, 37), (3, n, 4, 37), (37, 6), (6,), (6, 4, 3, n))]
        got = mod.call("f", dict(zip(("a", "at", "w", "bias", "z"), arrays)))
        assert_matches(got, reference(func, arrays), f"N={n}")


def test_window_max_and_its_gradient_natively_with_ties_and_nan() -> None:
    """max_pool2d over tiling windows: window_max and window_max_grad natively equal the
    interpreter to the bit, ties sharing (1/2, 1/3, 1/4), a NaN window all NaN, N = 0, 1, 3."""
    x = make("arg", name="x", dtype=DType.f32, shape=(N, 4, 6, 3))
    w = make("arg", name="w", dtype=DType.f32, shape=(N, 2, 3, 3))
    out = make("max_pool2d", x, window=2)
    assert out.op == "window_max"
    (gx,) = grad_of(make("sum", out * w, axis=None), [x])
    func = Func("pool", (x, w), (out, gx))
    mod = compile_module({"pool": func}, threads=1)
    rng = np.random.default_rng(11)
    for n in (0, 1, 3):
        a = rng.integers(0, 3, (n, 4, 6, 3)).astype(np.float32)     # small integers: ties
        if n:
            a[0, 0, 0, 0] = np.nan
        arrays = [a, rng.standard_normal((n, 2, 3, 3)).astype(np.float32)]
        got = mod.call("pool", {"x": arrays[0], "w": arrays[1]})
        want = reference(func, arrays)
        for g_, w_ in zip(got, want):
            np.testing.assert_array_equal(g_, w_)
        if n:
            assert np.isnan(got[1][0, :2, :2, 0]).all() and not np.isnan(got[1][0, 2:]).any()


def test_window_max_grad_is_linear_in_g_with_the_transposed_vjp() -> None:
    """d/dg of sum(window_max_grad(x, out, g) * v) (its VJP) against finite differences."""
    from tests.ops.harness import numeric_grads
    x = make("arg", name="x", dtype=DType.f64, shape=(2, 4, 2, 2))
    g = make("arg", name="g", dtype=DType.f64, shape=(2, 2, 1, 2))
    v = make("arg", name="v", dtype=DType.f64, shape=(2, 4, 2, 2))
    out = make("window_max", x, window=2)
    loss = make("sum", make("window_max_grad", x, out, g, window=2) * v, axis=None)
    (gg,) = grad_of(loss, [g])
    rng = np.random.default_rng(5)
    arrays = [rng.integers(0, 2, (2, 4, 2, 2)).astype(np.float64),
              rng.standard_normal((2, 2, 1, 2)), rng.standard_normal((2, 4, 2, 2))]
    got = reference(Func("gg", (x, g, v), (gg,)), arrays)[0]
    want = numeric_grads(Func("loss", (x, g, v), (loss,)), arrays, [1], {})[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)
