"""docs/ops.md is exactly what graphc.opdoc renders from the registry, so the op reference cannot
drift: a new op without its prose (graphc/opprose.py), an example that no longer compiles or a
stale file fails here.
``GRAPHC_ACCEPT=1 pytest tests/docs`` (or ``python -m graphc.opdoc > docs/ops.md``) rewrites it."""
from __future__ import annotations

import os
import pathlib
import warnings

import pytest

import graphc
from graphc import opdoc, opprose
from graphc.elaborate import elaborate_source
from graphc.ir.ops import registry
from graphc.ir.ops.rules import OPERATOR

ROOT = pathlib.Path(__file__).resolve().parents[2]
OPS_MD = ROOT / "docs" / "ops.md"


def test_docs_ops_md_is_the_rendered_registry() -> None:
    text = opdoc.render()
    if os.environ.get("GRAPHC_ACCEPT"):
        OPS_MD.write_text(text)
    assert OPS_MD.read_text() == text, \
        "docs/ops.md is stale: run `python -m graphc.opdoc > docs/ops.md`"


def test_every_op_has_an_entry_and_every_dsl_op_is_in_the_table() -> None:
    text = OPS_MD.read_text()
    for op in registry.all():
        assert f"### {op.dsl_name}" in text or f"### {op.name}" in text, op.name
        if opdoc.dsl_visible(op):
            assert f"[`{op.dsl_name}`]" in text, op.name


def test_every_op_has_its_prose() -> None:
    """A doc line for every op; an example for every op .graph can call; the gradient rule in
    words for every op with its own VJP (composites are differentiated through their parts)."""
    missing = []
    for op in registry.all():
        p = opprose.prose(op)
        if not p.line:
            missing.append(f"{op.name}: doc line")
        if opdoc.dsl_visible(op) and not p.example:
            missing.append(f"{op.name}: example")
        if op.differentiable and op.vjp is not None and not p.grad:
            missing.append(f"{op.name}: gradient")
    assert missing == [], "add them to graphc/opprose.py PROSE (or the op's doc=)"


def test_no_prose_for_ops_that_do_not_exist_nor_lines_the_declaration_has() -> None:
    names = {op.name for op in registry.all()}
    assert sorted(set(opprose.PROSE) - names) == []
    assert [op.name for op in registry.all() if op.doc and opprose.PROSE.get(
        op.name, opprose.Prose()).line] == [], \
        "the op's doc= says it: drop the line from graphc/opprose.py PROSE"


def test_every_example_compiles_and_uses_its_op() -> None:
    ops = [op for op in registry.all() if opprose.prose(op).example]
    body = "\n".join(f"    output e{i} = {opprose.prose(op).example}" for i, op in enumerate(ops))
    src = f"graph examples {{\n{opprose.EXAMPLE_INPUTS}{body}\n}}\n"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", graphc.GraphWarning)
        elaborate_source(src, "<ops examples>")
    for op in ops:       # an example shows its own op, by name or operator
        ex = opprose.prose(op).example
        spelled = [op.dsl_name, _OPERATOR.get(op.name, op.dsl_name).strip()] + [
            o.dsl_name for o in registry.all() if o.more_inputs == op.name]
        assert any(s in ex for s in spelled), (op.name, ex)


_OPERATOR = {**OPERATOR, "neg": "-"}


def test_render_one_op_and_unknown_names() -> None:
    assert opdoc.render("exp").startswith("### exp\n")
    assert "(IR: pad_constant)" in opdoc.render("pad")
    assert opdoc.render("pad_constant") == opdoc.render("pad")
    with pytest.raises(graphc.GraphError, match="did you mean 'exp'"):
        opdoc.render("exq")
