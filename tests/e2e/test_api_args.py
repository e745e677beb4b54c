"""Mistakes in the Python API's own arguments are GraphErrors naming the argument (and also the
built-in error Python would raise: GraphCallError is a ValueError, GraphArgumentTypeError a
TypeError); workspaces shrink back and can be released."""
from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

import graphc
from graphc import GraphArgumentTypeError, GraphCallError, GraphError

SRC = """
graph g {
    input x: f32[N, 4]
    param w: f32[4, 3]
    loss = sum(tanh(x @ w))
    output loss
    grad loss
}
"""


@pytest.mark.parametrize("options,error,match", [
    ({"opt_level": 5}, GraphCallError, "opt_level must be 0, 1, 2 or 3"),
    ({"opt_level": 2.0}, GraphArgumentTypeError, "opt_level must be an int"),
    ({"opt_level": True}, GraphArgumentTypeError, "opt_level must be an int"),
    ({"backend": "gpu"}, GraphCallError, "backend must be one of 'native', 'interp'"),
    ({"cache": "yes"}, GraphArgumentTypeError, "cache must be True or False"),
    ({"checkpoint": 1e400}, GraphCallError, "checkpoint=inf"),
    ({"checkpoint": float("nan")}, GraphCallError, "checkpoint"),
    ({"graph": 123}, GraphArgumentTypeError, "graph= must be a graph's name"),
    ({"opt_levle": 1}, GraphArgumentTypeError, "no option 'opt_levle'.*opt_level"),
])
def test_bad_compile_options(options: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        graphc.compile_source(SRC, backend=options.pop("backend", "interp"), **options)


def test_bad_compile_arguments(tmp_path) -> None:
    with pytest.raises(GraphArgumentTypeError, match="the source must be a str, got int"):
        graphc.compile_source(123)              # type: ignore[arg-type]
    with pytest.raises(GraphArgumentTypeError, match="path of a .graph file.*got NoneType"):
        graphc.compile(None)                    # type: ignore[arg-type]
    with pytest.raises(TypeError):              # still the built-in kind for old except clauses
        graphc.compile(None)                    # type: ignore[arg-type]
    bom = tmp_path / "bom.graph"
    bom.write_bytes(b"\xef\xbb\xbf" + SRC.encode())
    assert graphc.compile(bom, backend="interp").name == "g"


@pytest.fixture(scope="module")
def model() -> graphc.Model:
    return graphc.compile_source(SRC)


@pytest.mark.parametrize("seed,error", [(-1, GraphCallError), (1.5, GraphArgumentTypeError),
                                        ("a", GraphArgumentTypeError)])
def test_bad_seed(model: graphc.Model, seed, error: type) -> None:
    with pytest.raises(error, match="seed must be"):
        model.init_params(seed=seed)


def test_init_params_too_large_is_a_call_error() -> None:
    m = graphc.compile_source("graph g {\n    param w: f32[1099511627776, 1024]\n"
                              "    output s = sum(w)\n}\n", backend="interp")
    with pytest.raises(GraphCallError, match="out of memory initialising the params"):
        m.init_params()


def test_bad_memory_plan_arguments(model: graphc.Model) -> None:
    with pytest.raises(GraphArgumentTypeError, match="dim N must be an int, got 'a'"):
        model.memory_plan(N="a")
    with pytest.raises(GraphCallError, match="dim N must be >= 0, got -1"):
        model.memory_plan(N=-1)
    with pytest.raises(GraphCallError, match="no function 'bogus'"):
        model.memory_plan("bogus", N=4)
    assert model.memory_plan(N=4).peak_bytes > 0


def test_workspace_shrinks_after_small_calls_and_can_be_released(model: graphc.Model) -> None:
    p = model.init_params()
    arena = model._native.arena
    model(x=np.ones((100_000, 4), np.float32), **p)
    big = arena.size
    assert big > 1_000_000
    small = [model(x=np.ones((2, 4), np.float32), **p)["loss"] for _ in range(arena.SHRINK_AFTER)]
    assert arena.size == 0 and all(s == small[0] for s in small)
    model(x=np.ones((2, 4), np.float32), **p)
    assert 0 < arena.size < big // 100
    model.release_memory()
    assert arena.size == 0
    assert float(model(x=np.ones((3, 4), np.float32), **p)["loss"]) == pytest.approx(
        3 * small[0] / 2, rel=1e-6)


def test_a_threads_workspace_dies_with_the_thread(model: graphc.Model) -> None:
    p = model.init_params()
    arena = model._native.arena
    model.release_memory()          # this thread's block from earlier tests

    def work() -> None:
        model(x=np.ones((50_000, 4), np.float32), **p)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    gc.collect()
    assert [ws.size for ws in list(arena._all) if ws.block is not None] == []


def test_errors_are_graph_errors() -> None:
    assert issubclass(GraphArgumentTypeError, GraphError)
    assert issubclass(GraphArgumentTypeError, TypeError)


def test_a_model_pickles_and_deep_copies_as_source_and_options(backend: str) -> None:
    import copy
    import pickle
    m = graphc.compile_source(SRC, backend=backend, opt_level=1)
    p = m.init_params(seed=2)
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    want = m(x=x, **p)["loss"]
    for other in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert other is not m and (other.backend, other.opt_level) == (backend, 1)
        assert other(x=x, **p)["loss"] == want
