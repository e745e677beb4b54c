"""Property test: random DAGs of elementwise, reduction, layout and matmul ops (so fusion,
views and slot reuse all meet) give the interpreter's answer natively, for several N."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphc.ir.core import Func, Value, make
from graphc.ir.types import Dim, DType
from graphc.runtime import compile_module
from tests.runtime.conftest import assert_matches, reference

N = Dim.sym("N")
UNARY = ("tanh", "neg", "abs", "sin", "relu", "sigmoid", "exp", "square")
BINARY = ("add", "sub", "mul", "maximum", "minimum")


@st.composite
def graphs(draw: st.DrawFn, dtype: DType) -> Func:
    x = make("arg", name="x", dtype=dtype, shape=(N, 3))
    w = make("arg", name="w", dtype=dtype, shape=(3, 3))
    b = make("arg", name="b", dtype=dtype, shape=(3,))
    pool: list[Value] = [x, w, b]
    for _ in range(draw(st.integers(2, 9))):
        kind = draw(st.sampled_from(["unary", "binary", "reduce", "matmul", "transpose"]))
        v = draw(st.sampled_from(pool))
        if kind == "unary":
            new = make(draw(st.sampled_from(UNARY)), make("tanh", v))   # tanh keeps values tame
        elif kind == "binary":
            fits = [p for p in pool if p.shape in ((), v.shape)
                    or (p.shape == (3,) and v.shape[-1:] == (3,))]
            u = draw(st.sampled_from(fits))
            new = make(draw(st.sampled_from(BINARY)), v, u)
        elif kind == "reduce" and v.type.rank:
            axis = draw(st.sampled_from(range(v.type.rank)))
            new = make(draw(st.sampled_from(["sum", "max", "min"])), v, axis=(axis,),
                       keepdims=draw(st.booleans()))
        elif kind == "matmul" and v.type.rank and v.shape[-1] == 3:
            new = v @ make("tanh", w)
        elif kind == "transpose" and v.type.rank == 2:
            new = make("transpose", v, perm=(1, 0))
        else:
            continue
        pool.append(new)
    outs = tuple(draw(st.lists(st.sampled_from(pool[3:] or pool), min_size=1, max_size=3)))
    return Func("g", (x, w, b), outs)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from([DType.f32, DType.f64]))
def test_random_graph_matches_interpreter(data: st.DataObject, dtype: DType) -> None:
    func = data.draw(graphs(dtype))
    mod = compile_module({"g": func}, cache=False)
    rng = np.random.default_rng(0)
    for n in (0, 1, 4):
        arrays = [rng.uniform(-2, 2, s).astype(dtype.np) for s in ((n, 3), (3, 3), (3,))]
        got = mod.call("g", dict(zip("xwb", arrays)))
        assert_matches(got, reference(func, arrays), f"N={n}\n{func}")
