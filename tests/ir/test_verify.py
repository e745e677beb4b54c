"""The verifier catches each broken invariant; values are built broken directly with the Value
constructor, since ``make`` cannot build them."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from graphc.ir import Attrs, Dim, DType, Func, GraphError, Loc, TensorType, Value, const, make
from graphc.ir.verify import VerifyError, verify

F4 = TensorType(DType.f32, (4,))
F0 = TensorType(DType.f32, ())
N = Dim.sym("N")
LOC = Loc("v.graph", 3, 5)


def arg(name: str, ty: TensorType = F4) -> Value:
    return make("arg", name=name, dtype=ty.dtype, shape=ty.shape)


def good() -> tuple[Value, Value, Value]:
    x, y = arg("x"), arg("y", F0)
    return x, y, make("grad", y, x)


def dim(attrs: dict[str, Any], ty: TensorType = F0) -> Value:
    return Value("dim", (), ty, Attrs.of(attrs), LOC)


def broken_cases() -> list[tuple[str, Func, dict[str, Any]]]:
    x, y, g = good()
    stray = arg("z")                       # an arg that is not a param
    return [
        ("argument 'z' is not a param", Func("f", (y,), (make("grad", y, stray),)), {}),
        ("not an 'arg' value", Func("f", (x, const(1.0, DType.f32)), (x,)), {}),
        ("argument name 'x' repeats", Func("f", (x, arg("x")), (x,)), {}),
        ("recorded type f32[5] but make infers f32[4]",
         Func("f", (x, y), (Value("grad", (y, x), TensorType(DType.f32, (5,))),)), {}),
        ("make would reject it: 'grad' takes 2",
         Func("f", (x, y), (Value("grad", (y,), F0),)), {}),
        ("not canonical; make gives", Func("f", (), (dim({"value": 3}),)), {}),
        ("(int64) is not canonical",
         Func("f", (), (dim({"value": np.int64(3), "dtype": DType.f32}),)), {}),
        ("attribute value=[3] (list) is not canonical",
         Func("f", (), (dim({"value": [3], "dtype": DType.f32}),)), {}),
        ("are not sorted and unique", Func("f", (), (
            Value("dim", (), F0, Attrs((("value", 3), ("dtype", DType.f32)))),)), {}),
        ("constant 0.1 is not rounded to f32",
         Func("f", (), (make("const", value=0.1, dtype=DType.f32),)), {}),
        ("unknown op 'nope'", Func("f", (), (Value("nope", (), F0),)), {}),
        ("is not a canonical TensorType", Func("f", (), (
            dim({"value": 3, "dtype": DType.f32}, TensorType(DType.f32, (-1,))),)), {}),
        ("is not a canonical TensorType", Func("f", (), (Value(
            "const", (), TensorType(DType.f32, (Dim(((("N",), 0),)),)),
            Attrs.of({"value": 1.0, "dtype": DType.f32, "shape": (Dim(((("N",), 0),)),)})),)),
         {}),
        ("a 'grad' op remains after autodiff", Func("f", (x, y), (g,)), {"allow_grad": False}),
        ("1 result names for 2 results", Func("f", (x, y), (g, g), ("a",)), {}),
        ("result names repeat", Func("f", (x, y), (g, g), ("a", "a")), {}),
    ]


CASES = broken_cases()


@pytest.mark.parametrize("words, func, kw", CASES, ids=[c[0][:40] for c in CASES])
def test_verify_catches(words: str, func: Func, kw: dict[str, Any]) -> None:
    with pytest.raises(VerifyError, match=None) as info:
        verify(func, **kw)
    assert words in str(info.value)
    assert isinstance(info.value, GraphError) and isinstance(info.value, AssertionError)


def test_verify_names_the_value_and_its_loc() -> None:
    with pytest.raises(VerifyError) as info:
        verify(Func("f", (), (dim({"value": 3}),)))
    assert str(info.value).startswith("v.graph:3:5: invalid IR in @f, %0 = dim: ")


def test_verify_checks_nested_bodies(test_ops: None) -> None:
    x, y, g = good()
    inner = Func("k", (x, y), (Value("grad", (y, x), F0),))
    outer = Func("f", (), (Value("probe_fused", (), F0, Attrs.of({"body": inner})),))
    with pytest.raises(VerifyError, match="in @k, %0 = grad: recorded type f32"):
        verify(outer)


def test_verify_accepts_good_ir(test_ops: None) -> None:
    x, y, g = good()
    verify(Func("f", (x, y), (g, make("dim", value=N + 1, dtype=DType.f32)), ("g", "n")))
    verify(Func("f", (x, y), (const((1, 2), DType.i32, (2,)),)), allow_grad=False)
    body = Func("k", (x, y), (g,))
    verify(Func("f", (x, y), (make("probe_fused", x, y, body=body),)))
