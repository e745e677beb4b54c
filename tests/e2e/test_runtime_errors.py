"""Errors found while running a model point at the .graph line with a caret: bad labels,
out-of-range indices on symbolic axes, and NaN/Inf under check_numerics."""
from __future__ import annotations

import numpy as np
import pytest

import graphc
from tests.e2e.conftest import EXAMPLES


def test_out_of_range_label_is_call_error_not_a_wrong_loss(backend: str) -> None:
    m = graphc.compile(EXAMPLES / "digits.graph", backend=backend)
    p = m.init_params(0)
    x = np.zeros((2, 64), np.float32)
    with pytest.raises(graphc.GraphCallError, match="label") as e:
        m(x=x, labels=np.array([3, 10]), **p)
    assert "digits.graph:17:" in str(e.value) and "^" in str(e.value)
    with pytest.raises(graphc.GraphCallError):
        m(x=x, labels=np.array([-1, 0]), **p)
    np.testing.assert_allclose(m(x=x, labels=np.array([3, 9]), **p)["loss"], np.log(10),
                               rtol=1e-6)


def test_index_past_a_symbolic_axis_is_call_error(backend: str) -> None:
    src = "graph g {\n  input x: f32[N]\n  output y = x[2]\n}\n"
    m = graphc.compile_source(src, filename="idx.graph", backend=backend)
    assert float(m(x=np.arange(4.0))["y"]) == 2.0
    with pytest.raises(graphc.GraphCallError) as e:
        m(x=np.arange(2.0))
    assert "idx.graph:3:" in str(e.value)


def test_check_numerics_names_the_op_and_line() -> None:
    src = "graph g {\n  input x: f32[N]\n  h = log(x)\n  output y = sum(h * 2.0)\n}\n"
    m = graphc.compile_source(src, filename="nan.graph", check_numerics=True)
    assert np.isfinite(m(x=np.ones(3))["y"])
    with pytest.raises(graphc.NumericsError, match="log") as e:
        m(x=np.array([1.0, -1.0, 2.0]))
    assert "nan.graph:3:" in str(e.value)
    plain = graphc.compile_source(src, filename="nan.graph")
    assert np.isnan(plain(x=np.array([1.0, -1.0, 2.0]))["y"])       # without it: NaN, no error


def test_label_check_holds_with_zero_classes(backend: str) -> None:
    m = graphc.compile_source("graph g { input z: f32[N,C]; input l: i64[N]; "
                              "output y = sparse_softmax_cross_entropy(z, l) }", backend=backend)
    with pytest.raises(graphc.GraphCallError, match="label"):
        m(z=np.zeros((2, 0), np.float32), l=np.array([0, 5]))
    assert m(z=np.zeros((0, 0), np.float32), l=np.zeros(0, np.int64))["y"].shape == (0,)


@pytest.mark.parametrize("opt_level", [0, 2])
def test_check_numerics_names_the_op_inside_a_kernel_at_every_level(opt_level: int) -> None:
    """log(x) * 2 is one kernel at -O2 and two at -O0; the error names log, at its line."""
    src = "graph g {\n  input x: f32[N]\n  h = exp(log(x) * 2.0)\n  output y = h\n}\n"
    m = graphc.compile_source(src, filename="k.graph", check_numerics=True, opt_level=opt_level)
    with pytest.raises(graphc.NumericsError, match="log") as e:
        m(x=np.array([1.0, -1.0], np.float32))
    assert "k.graph:3:11" in str(e.value)


def test_error_codes_are_encoded_and_decoded_in_one_place() -> None:
    from graphc.ir.core import Func, make
    from graphc.ir.types import DType
    from graphc.runtime import errcodes
    from graphc.runtime.kernelplan import make_plan
    for kind in errcodes.ErrorKind:
        assert errcodes.decode(errcodes.encode(kind, 7)) == (kind, 7)
    with pytest.raises(ValueError, match="does not fit"):
        errcodes.encode(errcodes.ErrorKind.INDEX, 1 << 24)
    x = make("arg", name="x", dtype=DType.f32, shape=(3,))
    plan = make_plan(Func("f", (x,), (make("log", x),)))
    err = errcodes.error_for(plan, errcodes.encode(errcodes.ErrorKind.NUMERICS, 0), {})
    assert isinstance(err, graphc.NumericsError) and "log produced NaN" in str(err)
    assert "unknown error code" in str(errcodes.error_for(plan, 99 << 24, {}))
