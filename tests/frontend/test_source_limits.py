"""Sources at the edges: integers past int64 (Python's 4,300-digit limit must never reach the
user), dims past int64, line ends (CRLF, a lone CR), a UTF-8 BOM, and syntax hints that must
not suggest a keyword that would not fix the error."""
from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.elaborate import elaborate_source
from graphc.errors import GraphSyntaxError, GraphTypeError
from graphc.ir.types import Dim, dim_str


def error(src: str, cls: type = GraphTypeError) -> str:
    with pytest.raises(cls) as e:
        elaborate_source(src, "l.graph")
    return str(e.value)


@pytest.mark.parametrize("src, where, words", [
    # a 5,000-digit literal: lark's VisitError wrapping Python's ValueError before the fix
    ("graph g {\n input x: f32[3]\n output z = x * " + "7" * 5000 + "\n}", "l.graph:3:17",
     "integer literal too large"),
    ("graph g { input x: f32[9223372036854775808]; output x }", "l.graph:1:24",
     "integer literal too large"),
    # a ValueError while the error message was formatted
    ("const A = 2 ** 4000\nconst B = A*A*A*A\ngraph g { input x: f32[3]; output z = x * B }",
     "l.graph:1:13", "integer too large"),
    ("const A = 3037000500\nconst B = A*A\ngraph g { input x: f32[3]; output x }",
     "l.graph:2:12", "does not fit in int64"),
    # static dims: a ValueError from dim_str inside fusion, or accepted beyond int64
    ("const D = 2562 ** 4000\ngraph g { param w: f32[D]; input x: f32[3]; output x }",
     "l.graph:1:16", "integer too large"),
    ("const D = 2 ** 62\ngraph g { input x: f32[D * 2]; output x }", "l.graph:2:26",
     "dim too large"),
    ("const D = 2 ** 62\ngraph g { input x: f32[N * D * 4]; output x }", "l.graph:2:",
     "dim too large"),
    ("graph g { input x: f32[3 - 5]; output x }", "l.graph:1:26", "non-negative"),
], ids=["5000-digit-literal", "literal-2**63", "const-2**4000", "const-product", "dim-2562**4000",
        "static-dim-product", "symbolic-coefficient", "negative-static-dim"])
def test_integers_and_dims_beyond_int64_are_located_type_errors(src: str, where: str,
                                                                words: str) -> None:
    text = error(src)
    assert text.startswith(where) and words in text, text


def test_largest_int64_literal_is_accepted() -> None:
    g = elaborate_source("graph g { input x: i64[2]; output z = x + 9223372036854775807 }",
                         "l.graph")
    assert "9223372036854775807" in str(g["g"].forward)


def test_dim_str_never_raises() -> None:
    huge = 7 ** 9000                                # over 4,300 decimal digits
    assert "bit" in dim_str(huge)
    assert dim_str(Dim(((("N",), huge), ((), 1)))).endswith("*N+1")


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_crlf_and_lone_cr_line_ends_put_the_caret_on_the_right_line(newline: str) -> None:
    src = newline.join(["graph g {", "  input x: f32[2]", "  output z = x @@ x", "}", ""])
    text = error(src, GraphSyntaxError)
    assert text.startswith("l.graph:3:17:"), text
    assert " 3 |   output z = x @@ x\n   |                 ^" in text, text
    good = newline.join(["graph g {", "  input x: f32[2]", "  output z = x * 2", "}", ""])
    m = graphc.compile_source(good, backend="interp")
    np.testing.assert_array_equal(m(x=np.ones(2, np.float32))["z"], [2, 2])


def test_utf8_bom_at_start_is_ignored(tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = "\ufeffgraph g {\n  input x: f32[2]\n  output x\n}\n"
    assert list(elaborate_source(src, "l.graph")) == ["g"]
    path = tmp_path / "bom.graph"
    path.write_bytes(src.encode("utf-8"))                 # EF BB BF, as editors write it
    assert list(graphc.compile(path, backend="interp").outputs) == ["x"]
    assert error("\ufeffgraph g {\n  input x: f32[2]\n  output y\n}\n").startswith(
        "l.graph:3:10: unknown name 'y'")


@pytest.mark.parametrize("src", [
    "graph g { input x: f32[2] output x }",
    "graph g { input x: f32[2]; y = x +* x; output y }",
    "graph g { input x: f32[2]; output x, }",
])
def test_no_keyword_hint_on_a_line_that_starts_with_a_keyword(src: str) -> None:
    text = error(src, GraphSyntaxError)
    assert "did you mean" not in text, text


def test_keyword_hint_when_it_fixes_the_line() -> None:
    text = error("graph g {\n  inptu x: f32[2]\n  output x\n}\n", GraphSyntaxError)
    assert "did you mean 'input'?" in text, text
