"""The Python API as a user meets it: explicit keyword options with a suggestion for a misspelt
one; GraphError tracebacks that start at the user's call and leave graphc's frames out (as JAX
filters its own; GRAPHC_TRACEBACK=full keeps them); warnings attributed to the user's line;
models that pickle and deep-copy (optimiser included) into models giving identical results; and
NumericsError naming the gradient a NaN came from, alike on both backends."""
from __future__ import annotations

import copy
import inspect
import pickle
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import graphc
from graphc.ir.errors import is_internal
from graphc.model import OPTIONS
from graphc.optim import Adam

SRC = """\
graph net {
    input  x: f64[N, 3]
    input  y: f64[N, 2]
    param  W: f64[3, 2]
    loss = mean((x @ W - y) ** 2)
    output loss
    grad   loss
}
"""
ZERO_GRAD = """\
graph g {
    input  x: f32[3]
    param  W: f32[3]
    loss = sum(stop_gradient(W) * x)
    output loss
    grad   loss
}
"""
SQRT = """\
graph g {
    input  x: f32[3]
    y = sum(sqrt(x) * 3.0)
    output y
    grad y wrt x
}
"""


@pytest.fixture(scope="module")
def net() -> graphc.Model:
    return graphc.compile_source(SRC, backend="interp", optimizer=Adam(lr=0.1))


def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(4, 3)), "y": rng.normal(size=(4, 2))}


# ---- options ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [graphc.compile, graphc.compile_source])
def test_every_option_is_an_explicit_documented_keyword(fn: Callable[..., Any]) -> None:
    params = inspect.signature(fn).parameters
    for name in (*OPTIONS, "consts"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    doc = inspect.getdoc(graphc.compile_source) or ""
    assert all(f"{name}:" in doc for name in (*OPTIONS, "consts")), doc


def test_a_misspelt_option_is_a_graph_error_that_suggests_the_right_one(tmp_path: Any) -> None:
    with pytest.raises(graphc.GraphError, match="no option 'backnd'; did you mean 'backend'"):
        graphc.compile(tmp_path / "missing.graph", backnd="interp")    # before the file is read
    with pytest.raises(graphc.GraphError, match="did you mean 'consts'"):
        graphc.compile_source(SRC, const={"H": 1})


def test_compile_passes_consts_on(tmp_path: Any) -> None:
    path = tmp_path / "m.graph"
    path.write_text("const H = 2\ngraph g {\n  input x: f32[H]\n  output y = sum(x)\n}\n")
    assert str(graphc.compile(path, backend="interp", consts={"H": 5}).inputs["x"]) == "f32[5]"


# ---- tracebacks ------------------------------------------------------------------------------

def graphc_frames(e: BaseException) -> list[str]:
    return [f"{f.filename}:{f.lineno}" for f in traceback.extract_tb(e.__traceback__)
            if is_internal(f.filename)]


def raise_from(call: Callable[[], Any]) -> graphc.GraphError:
    with pytest.raises(graphc.GraphError) as e:
        call()
    first = traceback.extract_tb(e.value.__traceback__)[0]
    assert first.filename == __file__                 # it starts at the user's own code
    return e.value


CALLS: dict[str, Callable[[graphc.Model], Any]] = {
    "compile_source": lambda m: graphc.compile_source("graph g {\n  output y = sum(q)\n}\n"),
    "compile": lambda m: graphc.compile("/nonexistent/m.graph"),
    "compile options": lambda m: graphc.compile_source(SRC, opt_level=7),
    "__call__": lambda m: m(x=np.zeros((2, 4)), y=np.zeros((2, 2)), W=np.zeros((3, 2))),
    "value_and_grad": lambda m: m.value_and_grad(x=np.zeros(3)),
    "sgd_step": lambda m: m.sgd_step({}, 0.1, x=np.zeros((2, 3))),
    "train_step": lambda m: m.train_step({}, {}, x=np.zeros((2, 3))),
    "init_params": lambda m: m.init_params(seed=-1),
    "init_state": lambda m: m.init_state({}),
    "memory_plan": lambda m: m.memory_plan("forwad"),
    "dump_ir": lambda m: m.dump_ir("backwad"),
    "llvm_ir": lambda m: m.llvm_ir(),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_a_graph_error_from_the_api_leaves_graphcs_frames_out(net: graphc.Model,
                                                              name: str) -> None:
    e = raise_from(lambda: CALLS[name](net))
    assert len(graphc_frames(e)) <= 1, graphc_frames(e)


def test_graphc_traceback_full_keeps_every_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPHC_TRACEBACK", "full")
    e = raise_from(lambda: CALLS["compile_source"](None))  # type: ignore[arg-type]
    assert len(graphc_frames(e)) > 5


def test_the_trimmed_error_keeps_its_message_and_location() -> None:
    e = raise_from(lambda: CALLS["compile_source"](None))  # type: ignore[arg-type]
    assert isinstance(e, graphc.GraphTypeError) and e.loc is not None and e.loc.line == 2
    assert "unknown name 'q'" in str(e) and "^" in str(e)


# ---- warnings --------------------------------------------------------------------------------

def test_a_graph_warning_points_at_the_users_line() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1                     # type: ignore[union-attr]
        graphc.compile_source(ZERO_GRAD, backend="interp")
    found = [w for w in caught if issubclass(w.category, graphc.GraphWarning)]
    assert found and all((w.filename, w.lineno) == (__file__, line) for w in found), \
        [(w.filename, w.lineno) for w in found]
    assert "identically zero" in str(found[0].message)


# ---- pickle and deepcopy ---------------------------------------------------------------------

@pytest.mark.parametrize("clone", [lambda m: pickle.loads(pickle.dumps(m)), copy.deepcopy],
                         ids=["pickle", "deepcopy"])
def test_a_copied_model_with_an_optimizer_trains_identically(
        net: graphc.Model, clone: Callable[[graphc.Model], graphc.Model]) -> None:
    twin = clone(net)
    assert twin is not net and twin.optimizer == net.optimizer
    runs = []
    for m in (net, twin):
        params = m.init_params(seed=3)
        state = m.init_state(params)
        losses = [float(m.train_step(params, state, **data())["loss"]) for _ in range(3)]
        runs.append((losses, params["W"].copy(), m(**data(), **params)["loss"]))
    assert runs[0][0] == runs[1][0] and runs[0][0][-1] < runs[0][0][0]
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    np.testing.assert_array_equal(runs[0][2], runs[1][2])


# ---- NumericsError names the gradient --------------------------------------------------------

def sqrt_nan(backend: str) -> graphc.NumericsError:
    m = graphc.compile_source(SQRT, filename="s.graph", backend=backend, check_numerics=True)
    with pytest.raises(graphc.NumericsError) as e:
        m.value_and_grad(x=np.array([0.0, 1.0, 4.0], np.float32))   # d sqrt(x) at 0: inf
    return e.value


def test_a_nan_in_a_backward_names_the_gradient_on_the_interpreter() -> None:
    e = sqrt_nan("interp")
    assert str(e).startswith("s.graph:3:13: the gradient of sqrt produced NaN or Inf"), str(e)
    assert e.loc is not None and e.loc.grad_of == "sqrt"


def test_the_native_runtime_gets_the_gradient_it_must_name() -> None:
    e = sqrt_nan("native")
    assert e.loc is not None and (e.loc.line, e.loc.col, e.loc.grad_of) == (3, 13, "sqrt")


def test_both_backends_word_a_nan_in_a_backward_alike() -> None:
    assert str(sqrt_nan("native")) == str(sqrt_nan("interp"))


def test_a_nan_in_a_forward_op_names_that_op_not_its_kernel() -> None:
    m = graphc.compile_source(SQRT, filename="s.graph", backend="interp", check_numerics=True)
    with pytest.raises(graphc.NumericsError, match=r"s.graph:3:13: sqrt produced NaN"):
        m(x=np.array([-1.0, 1.0, 4.0], np.float32))


def test_a_second_derivative_is_named_as_one() -> None:
    # x ** 1.5 has a finite first derivative at 0 (1.5 * x ** 0.5) but not a second
    src = ("graph g {\n  input x: f64[3]\n  y = sum(x ** 1.5)\n  gx = grad(y, x)\n"
           "  z = sum(gx * gx)\n  output z\n  grad z wrt x\n}\n")
    m = graphc.compile_source(src, filename="h.graph", backend="interp", check_numerics=True)
    with pytest.raises(graphc.NumericsError, match="h.graph:3:13: the gradient of the "
                                                   "gradient of pow produced NaN"):
        m.value_and_grad(x=np.array([0.0, 1.0, 4.0]))
