"""``compile(..., consts={...})`` overrides a file's ``const`` definitions, and a const may name a
dtype (``const DT = f32`` then ``DT[N, 3]``), so one switch makes a model f64. Checked at the
elaborator (cheap); one native compile checks the compiled-code cache and pickling."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import graphc
from graphc.elaborate import elaborate_source
from graphc.ir.types import DType

SRC = """\
const DT = f32
const HIDDEN = 4
const WIDE = HIDDEN * 2
const SCALE = 0.5
const AXES = [0, 1]

graph g {
    input  x: DT[N, 3]
    param  W: DT[3, WIDE] = normal(0.1)
    h      = cast(x, dtype=DT) @ W * SCALE
    output loss = sum(h, axis=AXES)
    grad   loss
}
"""


def types(consts: dict | None = None) -> dict[str, str]:
    g = elaborate_source(SRC, "t.graph", consts)["g"]
    return {**{d.name: str(d.type) for d in g.inputs + g.params},
            "loss": str(g.forward.results[0].type)}


def test_consts_in_the_file_give_the_declared_types() -> None:
    assert types() == {"x": "f32[N,3]", "W": "f32[3,8]", "loss": "f32[]"}


def test_a_const_override_changes_the_const_and_those_made_from_it() -> None:
    assert types({"HIDDEN": 16}) == {"x": "f32[N,3]", "W": "f32[3,32]", "loss": "f32[]"}
    assert types({"WIDE": 5})["W"] == "f32[3,5]"


@pytest.mark.parametrize("dt", ["f64", DType.f64, np.float64, np.dtype("float64")])
def test_one_const_makes_the_whole_model_f64(dt: object) -> None:
    assert types({"DT": dt}) == {"x": "f64[N,3]", "W": "f64[3,8]", "loss": "f64[]"}


def test_overrides_of_every_kind_reach_the_ir() -> None:
    g = elaborate_source(SRC, "t.graph", {"SCALE": np.int64(2), "AXES": np.array([1, 0])})["g"]
    assert dict(g.consts)["SCALE"] == 2.0 and isinstance(dict(g.consts)["SCALE"], float)
    assert dict(g.consts)["AXES"] == (1, 0)
    assert 2.0 in [v.attrs.get("value") for v in g.forward.values() if v.op == "const"]


def test_an_unknown_const_name_suggests_the_one_meant() -> None:
    with pytest.raises(graphc.GraphError, match="no const 'HIDEN'; did you mean 'HIDDEN'"):
        elaborate_source(SRC, "t.graph", {"HIDEN": 8})


@pytest.mark.parametrize("name, value, words", [
    ("HIDDEN", 1.5, "the integer 4 in the file, so its value must be an integer"),
    ("HIDDEN", "8", "must be an integer"),
    ("HIDDEN", True, "must be an integer"),
    ("SCALE", "x", "must be a number"),
    ("DT", 64, "must be a dtype"),
    ("AXES", 3, "must be a list"),
])
def test_a_value_of_the_wrong_kind_is_an_error_at_the_const(name: str, value: object,
                                                            words: str) -> None:
    with pytest.raises(graphc.GraphTypeError, match=words) as e:
        elaborate_source(SRC, "t.graph", {name: value})
    line = next(i for i, s in enumerate(SRC.split("\n"), 1) if s.startswith(f"const {name} "))
    assert e.value.loc is not None and e.value.loc.line == line
    assert f"const {name} =" in str(e.value)          # the snippet shows the definition


def test_an_unknown_dtype_name_suggests_one() -> None:
    with pytest.raises(graphc.GraphTypeError, match="unknown dtype 'f46'.*'f64'"):
        elaborate_source(SRC, "t.graph", {"DT": "f46"})


def test_consts_must_be_a_mapping() -> None:
    with pytest.raises(graphc.GraphArgumentTypeError, match="dict"):
        graphc.compile_source(SRC, backend="interp", consts=[("HIDDEN", 8)])


def test_a_const_used_as_a_dtype_must_hold_one() -> None:
    src = "const H = 3\ngraph g {\n  input x: H[3]\n  output x\n}\n"
    with pytest.raises(graphc.GraphTypeError, match="const 'H' is the integer 3, not a dtype"):
        elaborate_source(src, "t.graph")
    with pytest.raises(graphc.GraphTypeError, match="unknown dtype 'DTT'; did you mean 'DT'"):
        elaborate_source("const DT = f64\ngraph g {\n input x: DTT[3]\n output x\n}\n",
                         "t.graph")


def test_consts_survive_pickling_and_deepcopy_on_the_interpreter() -> None:
    m = graphc.compile_source(SRC, backend="interp", consts={"DT": "f64", "HIDDEN": 3})
    again = pickle.loads(pickle.dumps(m))
    assert again.params == m.params and str(again.params["W"]) == "f64[3,6]"
    params = m.init_params(seed=1)
    x = np.arange(6.0).reshape(2, 3)
    assert m(x=x, **params)["loss"].dtype == np.float64
    np.testing.assert_array_equal(again(x=x, **params)["loss"], m(x=x, **params)["loss"])


def test_native_compiles_each_override_apart_and_pickles_them() -> None:
    """The compiled-code cache is keyed by the IR, so two overrides never share code; a
    pickled model keeps its overrides."""
    x = np.ones((2, 3))
    small = graphc.compile_source(SRC, consts={"HIDDEN": 1, "DT": "f64"})
    big = graphc.compile_source(SRC, consts={"HIDDEN": 2, "DT": "f64"})
    W1, W2 = np.ones((3, 2)), np.ones((3, 4))
    assert float(small(x=x, W=W1)["loss"]) == pytest.approx(2 * 2 * 3 * 0.5)
    assert float(big(x=x, W=W2)["loss"]) == pytest.approx(2 * 4 * 3 * 0.5)
    again = pickle.loads(pickle.dumps(big))
    assert str(again.params["W"]) == "f64[3,4]"
    assert float(again(x=x, W=W2)["loss"]) == float(big(x=x, W=W2)["loss"])
    with pytest.raises(graphc.GraphCallError):
        small(x=x, W=W2)
