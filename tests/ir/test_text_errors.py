"""Bad IR text gets a GraphSyntaxError or GraphTypeError at the right line:col, with the line and
a caret, and never a raw Python exception."""
from __future__ import annotations

import pytest

from graphc.ir import Attrs, DType, Func, GraphSyntaxError, GraphTypeError, TensorType, Value
from graphc.ir.text import parse, parse_type

HEAD = "func @f(%x: f32[4], %y: f32[]) -> (f32[4]) {\n"


def body(*lines: str, ret: str = "  return %0\n}") -> str:
    return HEAD + "".join(f"{line}\n" for line in lines) + ret


CASES = [
    # (text, error class, line, col, words in the message)
    (body("  %0 = const 1.0 f32[4]"), GraphSyntaxError, 2, 18, "unexpected 'f32'; expected ':'"),
    (body("  %0 = grda %y, %x : f32[4]"), GraphTypeError, 2, 8, "did you mean 'grad'"),
    (body("  %0 = grad %y, %x : f32[5]"), GraphSyntaxError, 2, 22,
     "printed type f32[5] differs from the type f32[4] inferred for 'grad'"),
    (body("  %0 = grad %y, %1 : f32[4]"), GraphSyntaxError, 2, 17,
     "%1 is used before it is defined"),
    (body("  %0 = grad %y, %x : f32[4]", "  %0 = grad %y, %x : f32[4]"), GraphSyntaxError, 3, 3,
     "%0 is defined twice"),
    (body("  %0 = grad %y, %x : f32[4]  # nowhere"), GraphSyntaxError, 2, 30,
     "expected a location 'file:line:col'"),
    (body("  %0 = grad %y : f32[4]"), GraphTypeError, 2, 8, "'grad' takes 2 tensor arguments"),
    (body("  %1 = dim {dtype=f32, valu=3} : f32[]", ret="  return %x\n}"), GraphTypeError, 2, 8,
     "did you mean 'value'"),
    (body("  %1 = dim {value=3, value=4} : f32[]", ret="  return %x\n}"), GraphSyntaxError, 2,
     22, "attribute 'value' is given twice"),
    (body("  %1 = const 1.5 : i32[]", ret="  return %x\n}"), GraphTypeError, 2, 3,
     "a i32 constant cannot hold 1.5"),
    (body("  %1 = const 1 : bool[]", ret="  return %x\n}"), GraphTypeError, 2, 3, "cannot hold 1"),
    (body("  %1 = const 2147483648 : i32[]", ret="  return %x\n}"), GraphTypeError, 2, 3,
     "does not fit i32"),
    (body('  %1 = const "s" : f32[]', ret="  return %x\n}"), GraphTypeError, 2, 3,
     'cannot hold "s"'),
    (body("  %0 = const [1, 2] : i32[3]"), GraphTypeError, 2, 3, "constant of 2 elements"),
    (body("  %0 = grad %y, %x : f32[4] $"), GraphSyntaxError, 2, 29, "unexpected character '$'"),
    (body("  %0 = grad %y, %x : f32[4]", ret="  return %0\n"), GraphSyntaxError, 3, 12,
     "unexpected end of text; expected '}'"),
    (body("  %0 = grad %y, %x : f32[4]", ret="  return %0"), GraphSyntaxError, 3, 12,
     "unexpected end of text; expected ',', end of line"),
    (body(ret="  return %x, %y\n}"), GraphSyntaxError, 1, 6, "1 results but 'return' gives 2"),
    (body(ret="  return %y\n}"), GraphSyntaxError, 1, 36, "printed type f32[4] differs from the "
     "type f32[] inferred for return value"),
    ("func @f(%x: f32[], %x: f32[]) -> () {\n  return\n}", GraphSyntaxError, 1, 20,
     "argument %x appears twice"),
    ("func @f(%x: f32[]) -> (a: f32[], f32[]) {\n  return %x, %x\n}", GraphSyntaxError, 1, 6,
     "either every result is named or none is"),
    ("func @f() -> (f32[4]) {\n  return %0\n}", GraphSyntaxError, 2, 10,
     "%0 is used before it is defined"),
    ("func @f(%x: f33[4]) -> () {\n  return\n}", GraphSyntaxError, 1, 13, "expected a dtype"),
    ("", GraphSyntaxError, 1, 1, "unexpected end of text"),
]


@pytest.mark.parametrize("text, cls, line, col, words", CASES,
                         ids=[c[4][:40] for c in CASES])
def test_bad_ir_text(text: str, cls: type, line: int, col: int, words: str) -> None:
    with pytest.raises(cls) as info:
        parse(text)
    err = info.value
    assert words in err.message
    assert (err.loc.file, err.loc.line, err.loc.col) == ("<ir>", line, col)
    if text:
        source_line, caret = err.snippet.split("\n")
        assert source_line == text.splitlines()[line - 1] and caret == " " * (col - 1) + "^"


def test_raw_exception_in_a_shape_rule_becomes_a_type_error(test_ops: None) -> None:
    with pytest.raises(GraphTypeError, match="bad attributes for 'probe'") as info:
        parse(body("  %1 = probe {shape=3} : f32[]", ret="  return %x\n}"))
    assert (info.value.loc.line, info.value.loc.col) == (2, 8)


def test_bad_type_text() -> None:
    with pytest.raises(GraphSyntaxError, match="expected '\\(', '-', a name, an integer"):
        parse_type("f32[N,,]")


def test_error_names_the_file() -> None:
    with pytest.raises(GraphSyntaxError) as info:
        parse("func @f() -> () {\n  retrun\n}", file="pass.ir")
    assert str(info.value).startswith("pass.ir:2:3: unexpected 'retrun'")


def test_non_canonical_attribute_prints_for_debugging_but_does_not_read_back() -> None:
    bad = Value("dim", (), TensorType(DType.f32, ()), Attrs.of({"dtype": DType.f32, "value": [3]}))
    text = str(Func("f", (), (bad,)))
    assert text.splitlines()[1] == "  %0 = dim {dtype=f32, value=<list: [3]>} : f32[]"
    with pytest.raises(GraphSyntaxError, match="unexpected character '<'"):
        parse(text)


@pytest.mark.parametrize("text, line, col, words", [
    ("func @f(%x: f32[" + "9" * 5000 + "]) -> (f32[]) {\n  return %x\n}", 1, 17,
     "integer too large"),
    (body("  %0 = sum %x {axis=[" + "9" * 5000 + "], keepdims=false} : f32[]"), 2, 22,
     "integer too large"),
    ("func @f(%x: f32[9223372036854775808]) -> (f32[]) {\n  return %x\n}", 1, 13,
     "dim too large"),
    ("func @f(%x: f32[9223372036854775807*N*4]) -> (f32[]) {\n  return %x\n}", 1, 13,
     "dim too large"),
    ("func @f(%x: f32[-3]) -> (f32[-3]) {\n  return %x\n}", 1, 13, "dim -3 is negative"),
], ids=["5000-digit-dim", "5000-digit-attr", "dim-2**63", "coefficient", "negative-dim"])
def test_integers_beyond_int64_are_located_type_errors(text: str, line: int, col: int,
                                                       words: str) -> None:
    with pytest.raises(GraphTypeError) as e:
        parse(text)
    assert (e.value.loc.line, e.value.loc.col) == (line, col) and words in e.value.message


def test_int64_min_constant_reads_back() -> None:
    text = "func @f() -> (i64[]) {\n  %0 = const -9223372036854775808 : i64[]\n  return %0\n}"
    assert str(parse(text)) == text


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_cr_line_ends_read_and_locate_like_newlines(newline: str) -> None:
    text = newline.join(["func @f(%x: f32[4]) -> (f32[4]) {", "  %0 = neg %x : f32[4]",
                         "  return %1", "}"])
    with pytest.raises(GraphSyntaxError) as e:
        parse(text)
    assert (e.value.loc.line, e.value.loc.col) == (3, 10), str(e.value)
    assert "return %1" in e.value.snippet.splitlines()[0]
    assert str(parse(text.replace("%1", "%0"))) == text.replace(newline, "\n").replace(
        "%1", "%0")


def test_form_feed_in_a_comment_does_not_move_the_caret() -> None:
    text = body("  %0 = neg %x : f32[4]  # a\x0cb.graph:1:1", ret="  return %1\n}")
    with pytest.raises(GraphSyntaxError) as e:
        parse(text)
    assert (e.value.loc.line, e.value.loc.col) == (3, 10)
    assert e.value.snippet.startswith("  return %1"), e.value.snippet
