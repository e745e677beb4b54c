"""Hypothesis-generated graphs (chains and DAGs with fan-out and broadcasting) pass a gradient
check: the autodiff pass against central differences on the reference interpreter."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphc.ir import interp
from graphc.ir.core import Func, Value, make
from graphc.ir.types import DType
from graphc.passes import autodiff
from tests.gradcheck import numeric_grads

UNARY = ("tanh", "sin", "cos", "sigmoid", "softplus", "neg", "square", "exp_tanh")
BINARY = ("add", "sub", "mul", "maximum")
SHAPES = ((2, 3), (1, 3), (3,), ())


def apply_unary(op: str, x: Value) -> Value:
    if op == "exp_tanh":                       # exp, kept in range
        return make("exp", make("tanh", x))
    return make(op, x)


def broadcasts(a: tuple, b: tuple) -> bool:
    return all(p == q or 1 in (p, q) for p, q in zip(reversed(a), reversed(b)))


@st.composite
def graphs(draw: st.DrawFn) -> tuple[Func, dict[str, np.ndarray]]:
    n_args = draw(st.integers(1, 3))
    shapes = [draw(st.sampled_from(SHAPES)) for _ in range(n_args)]
    params = tuple(make("arg", name=f"a{i}", dtype=DType.f64, shape=s)
                   for i, s in enumerate(shapes))
    pool: list[Value] = list(params)
    for _ in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from(("unary", "binary", "binary", "reduce", "matmul")))
        x = draw(st.sampled_from(pool))               # any earlier value: fan-out happens
        if kind == "unary":
            pool.append(apply_unary(draw(st.sampled_from(UNARY)), x))
        elif kind == "binary":
            y = draw(st.sampled_from([v for v in pool if broadcasts(v.shape, x.shape)]))
            pool.append(make(draw(st.sampled_from(BINARY)), x, y))   # shapes broadcast
        elif kind == "reduce" and x.type.rank:
            axis = draw(st.integers(-x.type.rank, x.type.rank - 1))
            op = draw(st.sampled_from(("sum", "max")))
            pool.append(make(op, x, axis=axis, keepdims=draw(st.booleans())))
        elif kind == "matmul" and x.type.rank == 2:
            w = make("transpose", x, perm=(1, 0))
            pool.append(make("matmul", x, w))
    y = make("sum", pool[-1], axis=None)
    if len(pool) > 2:
        y = y + make("sum", make("tanh", pool[len(pool) // 2]), axis=None)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    args = {p.attrs["name"]: rng.normal(size=p.type.concrete({})) for p in params}
    grads = tuple(make("grad", y, p) for p in params)
    return Func("g", params, (y,) + grads), args


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_autodiff_random_graphs_match_finite_differences(case: tuple[Func, dict]) -> None:
    func, args = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")               # an arg may not reach y: zero gradient
        expanded = autodiff.run(func)
    got = interp.run(expanded, args)
    y = func.results[0]
    want = numeric_grads(Func("g", func.params, (y,)), y, args, list(args))
    # central differences (step 1e-6) of a y of size |y| carry round-off of a few of its ulps
    # over the step: an exact zero gradient of a y near 1e3 reads back as 1e-7
    atol = max(1e-7, 64 * float(np.spacing(abs(float(got[0])))) / 2e-6)
    for name, g in zip(args, got[1:]):
        np.testing.assert_allclose(g, want[name], rtol=1e-5, atol=atol, err_msg=name)


@pytest.mark.slow
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_autodiff_many_random_graphs_match_finite_differences(case: tuple[Func, dict]) -> None:
    test_autodiff_random_graphs_match_finite_differences.hypothesis.inner_test(case)
