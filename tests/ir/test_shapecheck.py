"""Call-time checks of what types assume about symbolic dims (docs/language.md: a symbolic dim
meets any other dim only when equal, checked at call time; dims must not go negative)."""
from __future__ import annotations

import numpy as np
import pytest

from graphc.ir import interp
from graphc.ir.core import Func, make
from graphc.ir.errors import GraphCallError, GraphTypeError, Loc
from graphc.ir.shapecheck import requirements
from graphc.ir.types import Dim, DType
from graphc.passes import autodiff

N, M = Dim.sym("N"), Dim.sym("M")


def arg(name: str, *shape: object):  # type: ignore[no-untyped-def]
    return make("arg", name=name, dtype=DType.f64, shape=tuple(shape))


def test_symbolic_dim_against_static_dim_is_checked_at_call_time() -> None:
    x, y = arg("x", N), arg("y", 5)
    z = make("add", x, y, loc=Loc("g.graph", 3, 9))
    f = Func("f", (x, y), (z,))
    assert str(z.type) == "f64[5]"
    np.testing.assert_array_equal(interp.run(f, {"x": np.ones(5), "y": np.ones(5)})[0],
                                  2 * np.ones(5))
    with pytest.raises(GraphCallError, match=r"add: dims 5 and N = 3 must be equal") as e:
        interp.run(f, {"x": np.ones(3), "y": np.ones(5)})
    assert e.value.loc == Loc("g.graph", 3, 9)


def test_two_symbols_must_agree_and_a_bound_one_never_broadcasts() -> None:
    x, y = arg("x", N, 1), arg("y", M)
    f = Func("f", (x, y), (make("mul", x, y),))
    assert interp.run(f, {"x": np.ones((2, 1)), "y": np.ones(4)})[0].shape == (2, 4)
    u, w = arg("u", N), arg("w", M)
    g = Func("g", (u, w), (make("mul", u, w),))
    assert len(requirements(g)) == 1
    with pytest.raises(GraphCallError, match="M = 1"):
        interp.run(g, {"u": np.ones(4), "w": np.ones(1)})      # M = 1 does not broadcast


def test_gradient_through_a_checked_broadcast_has_the_operand_shape() -> None:
    x, y = arg("x", N), arg("y", 5)
    loss = make("sum", make("mul", x, y), axis=None)
    f = autodiff.run(Func("f", (x, y), (make("grad", loss, x),)))
    g = interp.run(f, {"x": np.ones(5), "y": np.arange(5.0)})[0]
    np.testing.assert_array_equal(g, np.arange(5.0))


def test_negative_dim_expression_is_call_error() -> None:
    y = arg("y", M)
    pad = make("const", value=0.0, dtype=DType.f64, shape=(M - 5,))
    f = Func("f", (y,), (make("concat", pad, y, axis=0),))
    assert interp.run(f, {"y": np.ones(7)})[0].shape == (9,)
    with pytest.raises(GraphCallError, match=r"M-5 .* is -2 with M = 3; it must be >= 0"):
        interp.run(f, {"y": np.ones(3)})


def test_reshape_counts_over_other_symbols_are_checked_at_call_time() -> None:
    x = arg("x", N)
    f = Func("f", (x,), (make("reshape", x, shape=(5,)),))
    assert interp.run(f, {"x": np.ones(5)})[0].shape == (5,)
    with pytest.raises(GraphCallError, match="element counts"):
        interp.run(f, {"x": np.ones(4)})


@pytest.mark.parametrize("shape, target", [((N, 4), (N, 5)), ((N, 784), (7, 7)),
                                           ((3, 4), (5, 2))])
def test_reshape_counts_that_can_never_agree_are_compile_errors(shape: tuple,
                                                                target: tuple) -> None:
    with pytest.raises(GraphTypeError, match="cannot reshape"):
        make("reshape", arg("x", *shape), shape=target)


def test_static_dims_still_fail_at_compile_time() -> None:
    with pytest.raises(GraphTypeError, match="do not broadcast"):
        make("add", arg("x", N, 3), arg("y", N, 4))
