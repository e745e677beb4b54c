"""The inline polynomial transcendentals: error in ulps against NumPy over wide ranges, and
exact special values (NaN, infinities, signed zeros, subnormals, overflow, underflow)."""
from __future__ import annotations

import numpy as np
import pytest

from graphc.ir.core import Func, make
from graphc.ir.types import Dim, DType
from graphc.runtime import compile_module

N = Dim.sym("N")
UNARY = {"exp": np.exp, "log": np.log, "log1p": np.log1p, "tanh": np.tanh, "sin": np.sin,
         "cos": np.cos, "sqrt": np.sqrt, "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
         "softplus": lambda x: np.logaddexp(0, x)}
RANGES = {"exp": (-110, 90), "log": (1e-30, 1e30), "log1p": (-0.999, 50), "tanh": (-12, 12),
          "sin": (-200, 200), "cos": (-200, 200), "sqrt": (0, 1e6), "sigmoid": (-30, 30),
          "softplus": (-30, 30)}
MAX_ULP = {"sigmoid": 6, "softplus": 6}
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 1e-40, 5e-324, 1e-300, 80.0, 89.0,
           710.0, -104.0, -746.0, 1e15, -1e300]
TRIG = ("sin", "cos")


def module(dtype: DType):
    x = make("arg", name="x", dtype=dtype, shape=(N,))
    y = make("arg", name="y", dtype=dtype, shape=(N,))
    outs = tuple(make(op, x) for op in UNARY) + (make("pow", x, y),)
    return compile_module({"f": Func("f", (x, y), outs)})


MODS: dict[DType, object] = {}


def mod_for(dtype: DType):
    if dtype not in MODS:
        MODS[dtype] = module(dtype)
    return MODS[dtype]


def ulps(got: np.ndarray, want64: np.ndarray, dt: np.dtype) -> np.ndarray:
    with np.errstate(all="ignore"):
        want = want64.astype(dt)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    spacing = np.spacing(np.abs(want).astype(dt)).astype(np.float64)
    with np.errstate(all="ignore"):
        err = np.abs(got.astype(np.float64) - want64) / spacing
    return np.where(same, 0.0, err)


@pytest.mark.parametrize("dtype", [DType.f32, DType.f64])
def test_error_in_ulps(dtype: DType) -> None:
    dt = dtype.np
    rng = np.random.default_rng(7)
    mod = mod_for(dtype)
    for k, (op, ref) in enumerate(UNARY.items()):
        lo, hi = RANGES[op]
        if lo > 0:
            x = np.exp(rng.uniform(np.log(lo), np.log(hi), 20000)).astype(dt)
        else:
            x = np.concatenate([rng.uniform(lo, hi, 20000), rng.uniform(-1e-3, 1e-3, 2000)])
            x = np.clip(x, lo, hi).astype(dt)
        got = mod.call("f", {"x": x, "y": x})[k]
        with np.errstate(all="ignore"):
            want = ref(x.astype(np.float64))
        # f64 is judged against NumPy, itself within about 1 ulp
        limit = MAX_ULP.get(op, 3) + (1 if dtype is DType.f64 else 0)
        assert ulps(got, want, dt).max() <= limit, op


@pytest.mark.parametrize("dtype", [DType.f32, DType.f64])
def test_special_values(dtype: DType) -> None:
    dt = dtype.np
    with np.errstate(all="ignore"):
        x = np.array(SPECIAL, dt)
    mod = mod_for(dtype)
    got = mod.call("f", {"x": x, "y": np.ones_like(x)})
    for k, (op, ref) in enumerate(UNARY.items()):
        with np.errstate(all="ignore"):
            want = ref(x.astype(np.float64)).astype(dt)
        if op in TRIG:                # documented: NaN where |x| >= 2**50 (no Payne-Hanek)
            want[np.abs(x) >= 2.0 ** 50] = np.nan
        finite = np.isfinite(want) & (want != 0)
        np.testing.assert_array_equal(np.where(finite, 0, got[k]), np.where(finite, 0, want),
                                      err_msg=op)
        real = ~np.isnan(want)
        assert np.array_equal(np.signbit(got[k])[real], np.signbit(want)[real]), op
        assert ulps(got[k], want.astype(np.float64), dt)[finite].max(initial=0) <= 4, op


@pytest.mark.parametrize("dtype", [DType.f32, DType.f64])
def test_pow_follows_c(dtype: DType) -> None:
    dt = dtype.np
    vals = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3.0, -3.0, 1e-3]
    xs, ys = np.meshgrid(np.array(vals, dt), np.array(vals, dt))
    xs, ys = xs.ravel(), ys.ravel()
    got = mod_for(dtype).call("f", {"x": xs, "y": ys})[-1]
    with np.errstate(all="ignore"):
        want = np.power(xs, ys)
    np.testing.assert_allclose(got, want, rtol=4 * np.finfo(dt).eps, atol=0)
    real = ~np.isnan(want)
    assert np.array_equal(np.signbit(got)[real], np.signbit(want)[real])
    x = np.linspace(-5, 5, 101).astype(dt)
    np.testing.assert_array_equal(mod_for(dtype).call("f", {"x": x, "y": np.full_like(x, 2)})[-1],
                                  x * x)                                    # exact squares


def test_pow_wide_range() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 4, 20000), rng.uniform(-8, 8, 20000)
    got = mod_for(DType.f64).call("f", {"x": x, "y": y})[-1]
    np.testing.assert_allclose(got, np.power(x, y), rtol=2e-14)
    g32 = mod_for(DType.f32).call("f", {"x": x.astype(np.float32), "y": y.astype(np.float32)})[-1]
    want = np.power(x.astype(np.float32).astype(np.float64), y.astype(np.float32))
    assert ulps(g32, want, np.dtype(np.float32)).max() <= 1


@pytest.mark.parametrize("dtype", [DType.f32, DType.f64])
def test_no_saturating_float_to_int(dtype: DType) -> None:
    """x86 scalarises vector ``fptosi.sat`` lane by lane: exp's rounding through it ran 4x
    slower than the rest of the kernel. The transcendentals round by adding 1.5*2**mant."""
    text = mod_for(dtype).llvm_ir("f", optimized=False)
    assert "@llvm.exp" not in text and "@exp" not in text      # inline, never libm
    assert "fptosi.sat" not in text


def unary_f32(op: str):
    x = make("arg", name="x", dtype=DType.f32, shape=(N,))
    return compile_module({"f": Func("f", (x,), (make(op, x),))})


def f32_grid(lo: float, hi: float, step: int) -> np.ndarray:
    """Every ``step``-th f32 in [lo, hi), by bit pattern (so as dense near 0 as near hi)."""
    a, b = np.array([lo, hi], np.float32).view(np.uint32)
    return np.arange(a, b, step, dtype=np.uint32).view(np.float32)


def tanh_sweep(step: int, chunk: int = 1 << 22) -> float:
    """Max error in ulps of f32 tanh over every ``step``-th f32 in [0, 10] (10 and above: 1.0),
    checking tanh(-x) == -tanh(x) bit for bit on the way."""
    mod = unary_f32("tanh")
    worst = 0.0
    grid = f32_grid(0.0, 10.5, step)
    for k in range(0, grid.size, chunk):
        x = grid[k:k + chunk]
        got = mod.call("f", {"x": x})[0]
        worst = max(worst, ulps(got, np.tanh(x.astype(np.float64)), np.dtype(np.float32)).max())
        neg = mod.call("f", {"x": -x})[0]
        assert np.array_equal(neg.view(np.uint32), (-got).view(np.uint32))
    return worst


def test_tanh_f32_sweep() -> None:
    """The f32 tanh switches formula at TANH_SPLIT (1.25) and clamps at 10: a grid over every
    binade, plus every f32 around the switch, where the error peaks (2.07 ulp at 1.2664)."""
    assert tanh_sweep(step=997) <= 2.5
    mod = unary_f32("tanh")
    x = f32_grid(1.2, 1.33, 1)
    assert ulps(mod.call("f", {"x": x})[0], np.tanh(x.astype(np.float64)),
                np.dtype(np.float32)).max() <= 2.5
    big = np.array([9.05, 10.0, 1e30, np.inf], np.float32)     # tanh rounds to 1.0 from 9.0109
    np.testing.assert_array_equal(mod.call("f", {"x": big})[0], 1.0)


@pytest.mark.slow
def test_tanh_f32_every_third_float() -> None:
    assert tanh_sweep(step=3) <= 2.5


def test_tanh_f32_one_division() -> None:
    """f32 tanh is one division and two short polynomials (it was ~40 operations: a polynomial
    and a clamped exp, both computed for every lane); this guards the operation count."""
    text = unary_f32("tanh").llvm_ir("f", optimized=False)
    assert text.count("fdiv") == 1
    assert text.count("call float @\"llvm.fma.f32\"") <= 9


def test_log_f32_sweep() -> None:
    """f32 log over every binade (subnormals included), and densely where the reduced argument
    covers its whole interval [sqrt(1/2) - 1, sqrt(2) - 1) with e = 0, where the result is the
    polynomial alone (the error peaks there: 1.16 ulp)."""
    mod = unary_f32("log")
    f32 = np.dtype(np.float32)
    for x in (f32_grid(1e-45, 3e38, 4099), f32_grid(0.7071, 1.4143, 7)):
        got = mod.call("f", {"x": x})[0]
        assert ulps(got, np.log(x.astype(np.float64)), f32).max() <= 1.5
