"""Property tests: any canonical attribute value and any constant prints to text that reads back
to the same value and the same text."""
from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphc.ir import Dim, DType, Func, const, make
from graphc.ir.text import parse
from graphc.ir.types import dim_add, dim_mul

SYMBOLS = st.sampled_from([Dim.sym(s) for s in ("N", "M", "K")])
MONOMIAL = st.tuples(st.integers(-5, 5), st.lists(SYMBOLS, max_size=3)).map(
    lambda cs: dim_mul(cs[0], math.prod(cs[1], start=1)))  # type: ignore[arg-type]
DIMS = st.lists(MONOMIAL, min_size=1, max_size=3).map(lambda ms: _sum(ms))
LEAVES = (st.integers(-2**63, 2**63 - 1) | st.floats() | st.booleans() | st.none() | st.text()
          | st.sampled_from(list(DType)) | DIMS)
ATTRS = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=4).map(tuple), max_leaves=12)
FAST = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _sum(ms: list[Any]) -> Any:
    out: Any = 0
    for m in ms:
        out = dim_add(out, m)
    return out


def same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN, -0.0 told from 0.0 and 1 told from 1.0 and True."""
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) ==
                                                      math.copysign(1, b))
    return bool(a == b)


@FAST
@given(value=ATTRS)
def test_any_attribute_reads_back(test_ops: None, value: Any) -> None:
    func = Func("f", (), (make("probe", t=value),))
    text = str(func)
    again = parse(text)
    assert isinstance(again, Func) and str(again) == text
    assert same(again.results[0].attrs["t"], value)


SCALARS = {DType.f32: st.floats(width=32), DType.f64: st.floats(),
           DType.i32: st.integers(-2**31, 2**31 - 1), DType.i64: st.integers(-2**63, 2**63 - 1),
           DType.bool: st.booleans()}


@FAST
@given(data=st.data(), dtype=st.sampled_from(list(DType)), splat=st.booleans())
def test_any_constant_reads_back(data: st.DataObject, dtype: DType, splat: bool) -> None:
    if splat:
        c = const(data.draw(SCALARS[dtype]), dtype, (Dim.sym("N"), 2))
    else:
        elems = tuple(data.draw(st.lists(SCALARS[dtype], max_size=5)))
        c = const(elems, dtype, (len(elems),))
    text = str(Func("f", (), (c,)))
    again = parse(text)
    assert isinstance(again, Func) and str(again) == text
    assert same(again.results[0].attrs["value"], c.attrs["value"])
