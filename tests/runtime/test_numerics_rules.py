"""Numeric rules where NumPy is undefined or loses accuracy, held the same natively and in the
reference: float -> int casts saturate (NaN -> 0), gelu has no cancellation, sign(-0.0) = +0.0."""
from __future__ import annotations

import math

import numpy as np
import pytest

import graphc
from graphc.ir.ops.elementwise import GELU_C, GELU_K
from tests.runtime.test_vmath import ulps

CAST_VALUES = [math.nan, math.inf, -math.inf, 1e30, -1e30, 2.0 ** 31, -2.0 ** 31 - 1, 2.7, -2.7,
               2.0 ** 63, -2.0 ** 63, 2.0 ** 31 - 128, -0.0, 0.5, -0.99]
INT_RANGE = {"i32": (-2 ** 31, 2 ** 31 - 1), "i64": (-2 ** 63, 2 ** 63 - 1)}

CAST_SOURCE = """
graph casts {
    input a: f32[N]
    input b: f64[N]
    input s: f32[]
    input t: f64[]
    output a32 = cast(a, i32)
    output a64 = cast(a, i64)
    output ab = cast(a, bool)
    output b32 = cast(b, i32)
    output b64 = cast(b, i64)
    output bb = cast(b, bool)
    output fa32 = cast(a * s, i32)
    output fa64 = cast(a * s, i64)
    output fb32 = cast(b * t, i32)
    output fb64 = cast(b * t, i64)
}
"""


def saturated(values: np.ndarray, dtype: str) -> np.ndarray:
    """The documented rule, from Python's exact integers: truncate, clamp, NaN -> 0."""
    lo, hi = INT_RANGE[dtype]
    out = [0 if math.isnan(v) else hi if v == math.inf else lo if v == -math.inf
           else min(max(math.trunc(v), lo), hi) for v in values.tolist()]
    return np.array(out, np.dtype(dtype.replace("i", "int")))


def test_cast_reference_saturates() -> None:
    from graphc.ir.ops import registry
    from graphc.ir.types import DType
    ref = registry.get("cast").ref
    for src in (np.float32, np.float64):
        x = np.array(CAST_VALUES, src)
        for dst in ("i32", "i64"):
            np.testing.assert_array_equal(ref(x, dtype=DType(dst)), saturated(x, dst))
        np.testing.assert_array_equal(ref(x, dtype=DType.bool), x != 0)   # NaN is true


@pytest.mark.parametrize("opt_level", [0, 1, 2, 3])
def test_float_to_int_casts_saturate_everywhere(opt_level: int) -> None:
    # 37 copies: vector bodies and scalar tails both run
    a = np.tile(np.array(CAST_VALUES, np.float32), 37)
    b = np.tile(np.array(CAST_VALUES, np.float64), 37)
    args = dict(a=a, b=b, s=np.float32(1), t=np.float64(1))
    model = graphc.compile_source(CAST_SOURCE, opt_level=opt_level, cache=False)
    native = model(**args)
    code = model.llvm_ir()
    # clamped selects around a plain fptosi (a vector fptosi.sat is scalarised on x86)
    assert "fptosi.sat" not in code
    interp = graphc.compile_source(CAST_SOURCE, opt_level=opt_level, backend="interp")(**args)
    for name, got in native.items():
        src = a if name.lstrip("f")[0] == "a" else b
        want = src != 0 if name.endswith("b") else saturated(src, "i" + name[-2:])
        np.testing.assert_array_equal(got, want, err_msg=f"native {name} -O{opt_level}")
        np.testing.assert_array_equal(interp[name], want, err_msg=f"interp {name}")
        assert got.dtype == want.dtype


def gelu_f64(x: np.ndarray) -> np.ndarray:
    """0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)), in f64: the cancellation-free form."""
    x = x.astype(np.float64)
    with np.errstate(over="ignore"):
        return x / (1 + np.exp(-2 * GELU_C * (x + GELU_K * x ** 3)))


GELU_SOURCE = """
graph g {
    input x: f32[N]
    output y = gelu(x)
    output s = sign(x)
}
"""


def test_gelu_f32_is_within_a_few_ulps() -> None:
    # 1 + tanh(u) cancelled: 80 ulp near x = -3, and worse further out
    x = np.linspace(-10, 10, 400_001).astype(np.float32)
    want = gelu_f64(x)
    for backend in ("native", "interp"):
        got = graphc.compile_source(GELU_SOURCE, backend=backend, cache=False)(x=x)["y"]
        assert got.dtype == np.float32
        err = ulps(got, want, np.dtype(np.float32))
        assert err.max() <= 2, (backend, x[err.argmax()], err.max())


def test_gelu_special_values() -> None:
    x = np.array([np.nan, np.inf, 0.0, -0.0, 30.0, -30.0, -1e30], np.float32)
    got = graphc.compile_source(GELU_SOURCE, cache=False)(x=x)["y"]
    want = graphc.compile_source(GELU_SOURCE, backend="interp")(x=x)["y"]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, [np.nan, np.inf, 0, 0, 30, 0, 0])


def test_sign_of_negative_zero_is_positive_zero() -> None:
    x = np.array([-0.0, 0.0, np.nan, -2.5, 3.0], np.float32)
    for backend in ("native", "interp"):
        s = graphc.compile_source(GELU_SOURCE, backend=backend, cache=False)(x=x)["s"]
        assert s.view(np.uint32)[:2].tolist() == [0, 0], backend     # +0.0 bits, as np.sign
        np.testing.assert_array_equal(s[2:], [np.nan, -1, 1])
