"""graphc.dot: kernels drawn as clusters with their .graph lines, edges labelled with types;
SVG/PNG through Graphviz's dot, and one clear error where it is not installed."""
from __future__ import annotations

import re
import shutil

import pytest

import graphc
from graphc import dot

SRC = """graph t {
    input  x: f32[N, 4]
    param  w: f32[4, 2] = glorot_uniform
    h    = tanh(x @ w)
    loss = mean(h * h)
    output loss, h
    grad   loss
}
"""


@pytest.fixture(scope="module")
def model() -> graphc.Model:
    return graphc.compile_source(SRC, filename="t.graph", backend="interp")


def test_each_kernel_is_a_cluster_labelled_with_its_source_lines(model: graphc.Model) -> None:
    text = dot.model_to_dot(model, "forward")
    kernels = [v for v in model.optimized["forward"].values() if v.op == "fused"]
    assert text.startswith('digraph "t.forward" {') and text.rstrip().endswith("}")
    assert text.count("subgraph cluster_") == len(kernels) >= 2
    labels = re.findall(r'label="(kernel \d+: [^"]*)"', text)
    assert len(labels) == len(kernels)
    assert any("t.graph:4" in label for label in labels)         # tanh(x @ w) is line 4
    assert any("t.graph:5" in label for label in labels)         # mean(h * h) is line 5
    # each body op is a node with its own location; each edge carries the type on it
    assert re.search(r'label="tanh\\nf32\[N,2\]\\nt\.graph:4:\d+"', text)
    assert '-> out0 [label="f32[]"]' in text and '[label="f32[N,4]"]' in text
    assert "out1" in text and 'label="h"' in text


def test_every_entry_point_draws(model: graphc.Model) -> None:
    for name in ("backward", "sgd_step"):
        text = dot.model_to_dot(model, name)
        assert text.startswith(f'digraph "t.{name}"') and "subgraph cluster_" in text
    # backward has more kernels than forward: the gradients
    assert dot.model_to_dot(model, "backward").count("cluster_") > \
        dot.model_to_dot(model, "forward").count("cluster_")


def test_unknown_function_is_a_graph_error_listing_the_valid_ones(model: graphc.Model) -> None:
    with pytest.raises(graphc.GraphError, match="has forward, backward, sgd_step") as e:
        dot.model_to_dot(model, "backwrd")
    assert "did you mean 'backward'" in str(e.value)


def test_labels_are_escaped() -> None:
    assert dot._esc('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_render_without_graphviz_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(graphc.GraphFileError, match="Graphviz") as e:
        dot.render("digraph g {}", "svg")
    assert "apt install graphviz" in str(e.value)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_render_svg_with_graphviz(model: graphc.Model) -> None:
    svg = dot.render(dot.model_to_dot(model, "backward"), "svg")
    assert b"<svg" in svg


def test_model_to_dot_is_the_cli_picture() -> None:
    import graphc
    from graphc.dot import model_to_dot
    m = graphc.compile_source("graph t {\n input x: f32[N, 3]\n param W: f32[3, 2]\n"
                              " loss = sum(relu(x @ W))\n output loss\n grad loss\n}\n",
                              backend="interp")
    text = m.to_dot("backward")
    assert text == model_to_dot(m, "backward") and "subgraph cluster" in text
    with pytest.raises(graphc.GraphError, match="forward"):
        m.to_dot("backwards")
