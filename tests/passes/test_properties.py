"""Random graphs (hypothesis): chains and DAGs with fan-out of elementwise, reduce, matmul,
broadcast and layout ops, with constants that trigger the folds. The interpreter must give the
same results before and after the -O3 pipeline, forward and backward, on random inputs with and
without NaN and Inf, with N bound to 3, 1 and 0; and native code at -O0 and -O3 must agree."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphc.ir import interp
from graphc.ir.core import Func, Value, const, make
from graphc.ir.errors import GraphTypeError
from graphc.ir.types import Dim, DType
from graphc.passes import run_pipeline
from tests.conftest import assert_same, bindings, random_args, same_results

N = Dim.sym("N")
F = DType.f64
UNARY = ("neg", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "abs", "square", "sin",
         "stop_gradient")
BINARY = ("add", "sub", "mul", "div", "maximum", "minimum")
CONSTS = (0.0, 1.0, -1.0, 2.0, 0.5)
CONST_SHAPES = ((), (3,), (N, 3))
STEPS = ("unary", "binary", "binary", "const", "reduce", "broadcast", "reshape", "transpose",
         "matmul", "where", "cast")

# a step: (kind, pick, a, b); ``a`` and ``b`` choose operands among the values made so far
step = st.tuples(st.sampled_from(STEPS), st.integers(0, 119), st.integers(0, 99),
                 st.integers(0, 99))
recipes = st.lists(step, min_size=1, max_size=12)


def params() -> tuple[Value, ...]:
    def arg(name: str, shape: tuple[Any, ...], dtype: DType = F) -> Value:
        return make("arg", name=name, dtype=dtype, shape=shape)
    return (arg("x", (N, 3)), arg("y", (3,)), arg("s", ()), arg("W", (3, 3)),
            arg("i", (N, 3), DType.i32))


def build(recipe: list[tuple[str, int, int, int]]) -> tuple[tuple[Value, ...], list[Value]]:
    """The params and every value the recipe makes (steps that do not type-check are skipped)."""
    ps = params()
    vals = [p for p in ps if p.dtype is F]
    for kind, pick, a, b in recipe:
        x, y = vals[a % len(vals)], vals[b % len(vals)]
        try:
            vals.append(make_step(kind, pick, x, y, ps))
        except GraphTypeError:
            continue
    return ps, vals


def make_step(kind: str, pick: int, x: Value, y: Value, ps: tuple[Value, ...]) -> Value:
    if kind == "unary":
        return make(UNARY[pick % len(UNARY)], x)
    if kind == "binary":
        return make(BINARY[pick % len(BINARY)], x, y)
    if kind == "const":
        c = const(CONSTS[pick % 5], F, CONST_SHAPES[pick // 5 % 3])
        op = BINARY[pick // 15 % 4]
        return make(op, x, c) if pick // 60 else make(op, c, x)
    if kind == "reduce":
        if not x.type.rank:
            raise GraphTypeError("scalar")
        op = ("sum", "max", "sum")[pick % 3]
        return make(op, x, axis=(pick % x.type.rank,), keepdims=bool(pick & 4))
    if kind == "broadcast":
        return make("broadcast_to", x, shape=(N, 3) if pick % 2 else (2, N, 3))
    if kind == "reshape":
        return make("reshape", x, shape=(1,) + tuple(x.shape) if pick % 2 else (x.type.size,))
    if kind == "transpose":
        return make("transpose", x, perm=tuple(reversed(range(x.type.rank))))
    if kind == "matmul":
        return make("matmul", x, ps[3])
    if kind == "where":
        return make("where", make("gt", x, y), x, y)
    return make("mul", x, make("cast", ps[4], dtype=F))       # a finite factor


def forward(recipe: list[tuple[str, int, int, int]]) -> Func:
    """Every value no other value uses is a result, so no step is dead."""
    ps, vals = build(recipe)
    used = {id(i) for v in vals for i in v.inputs}
    return Func("f", ps, tuple(v for v in vals if id(v) not in used and v.op != "arg")
                or (vals[-1],))


def backward(recipe: list[tuple[str, int, int, int]]) -> Func:
    ps, vals = build(recipe)
    used = {id(i) for v in vals for i in v.inputs}
    loss = const(0.0, F)
    for v in vals:
        if id(v) not in used:
            loss = loss + make("sum", v, axis=tuple(range(v.type.rank)), keepdims=False)
    grads = tuple(make("grad", loss, p) for p in ps if p.dtype is F)
    return Func("f", ps, (loss,) + grads)


SETTINGS = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(recipes)
def test_o3_preserves_forward_results(recipe: list[tuple[str, int, int, int]]) -> None:
    func = forward(recipe)
    same_results(func, run_pipeline(func, 3), rtol=1e-9, atol=1e-12)


@SETTINGS
@given(recipes)
def test_o3_preserves_gradients(recipe: list[tuple[str, int, int, int]]) -> None:
    func = backward(recipe)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")         # zero gradients warn; that is not under test
        reference = run_pipeline(func, 0)
        optimized = run_pipeline(func, 3)
    same_results(reference, optimized, rtol=1e-9, atol=1e-12)


@settings(max_examples=15, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(recipes, st.booleans())
def test_native_o0_and_o3_match_the_interpreter(recipe: list[tuple[str, int, int, int]],
                                                grad: bool) -> None:
    from graphc.runtime import compile_module
    func = backward(recipe) if grad else forward(recipe)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = run_pipeline(func, "autodiff,dce")       # what the interpreter runs
        reference = run_pipeline(func, 0)                # one op per kernel
        optimized = run_pipeline(func, 3)
    module = compile_module({"O0": reference, "O3": optimized}, cache=False)
    rng = np.random.default_rng(0)
    for env in bindings(reference):
        for special in (False, True):
            args = random_args(reference, env, rng, special)
            want = interp.run(plain, args, env)
            for level in ("O0", "O3"):
                for i, (w, g) in enumerate(zip(want, module.call(level, args))):
                    assert_same(w, g, f"{level} result {i} with {env}, special={special}",
                                rtol=1e-9, atol=1e-12)


@pytest.mark.slow
@settings(max_examples=250, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(recipes)
def test_o3_preserves_gradients_many_graphs(recipe: list[tuple[str, int, int, int]]) -> None:
    test_o3_preserves_gradients.hypothesis.inner_test(recipe)


@pytest.mark.slow
@settings(max_examples=80, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(recipes, st.booleans())
def test_native_matches_the_interpreter_many_graphs(recipe: list[tuple[str, int, int, int]],
                                                    grad: bool) -> None:
    test_native_o0_and_o3_match_the_interpreter.hypothesis.inner_test(recipe, grad)
