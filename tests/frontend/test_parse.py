"""Parsing: precedence and associativity (docs/language.md, Expressions), statement ends, comments,
bracketed line continuation, literals, placement rules, and syntax errors worded for people."""
from __future__ import annotations

import pytest

from graphc import ast as A
from graphc.errors import GraphSyntaxError
from graphc.syntax import parse
from tests.frontend.util import expr, sexpr


@pytest.mark.parametrize("text, tree", [
    ("a + b * c", "(add a (mul b c))"),
    ("a - b - c", "(sub (sub a b) c)"),
    ("a * b @ c", "(matmul (mul a b) c)"),             # left to right, same level
    ("a @ b * c", "(mul (matmul a b) c)"),
    ("a / b / c", "(div (div a b) c)"),
    ("-x ** 2", "(neg (pow x 2))"),                     # ** binds tighter than unary minus
    ("2 ** -1", "(pow 2 (neg 1))"),
    ("2 ** 3 ** 2", "(pow 2 (pow 3 2))"),               # right associative
    ("-a * b", "(mul (neg a) b)"),
    ("--a", "(neg (neg a))"),
    ("a < b + c", "(lt a (add b c))"),                 # comparisons are loosest
    ("a + b == c * d", "(eq (add a b) (mul c d))"),
    ("a != b", "(ne a b)"),
    ("a >= -1", "(ge a (neg 1))"),
    ("x - 1", "(sub x 1)"),                            # '-' is never part of a number
    ("x -1", "(sub x 1)"),
    ("x.T @ y", "(matmul (.T x) y)"),
    ("x[1].mT", "(.mT (index x 1))"),
    ("f(x)[0, -1]", "(index (f x) 0 (neg 1))"),
    ("-x.T", "(neg (.T x))"),
    ("x[1:, ::2, :3, 1:2:3, T-1-t]", "(index x 1:: ::2 :3: 1:2:3 (sub (sub T 1) t))"),
    ("x[:]", "(index x ::)"),
    ("sum(x, axis=[0, 1], keepdims=true)", "(sum x axis=[0 1] keepdims=true)"),
    ("loss(p, y, reduction=\"none\")", '(loss p y reduction="none")'),
    ("grad(y, x)", "(grad y x)"),
    ("(a + b) * c", "(mul (add a b) c)"),
    ("[1, 2.5, 1e-3, .5, 3E2, true, false]", "[1 2.5 0.001 0.5 300.0 true false]"),
    ("[]", "[]"),
    ("f()", "(f)"),
])
def test_precedence_and_literals(text: str, tree: str) -> None:
    assert expr(text) == tree


def test_chained_comparison_is_a_syntax_error() -> None:
    with pytest.raises(GraphSyntaxError, match="comparisons do not chain"):
        expr("a < b < c")


def test_statements_end_at_newline_semicolon_and_brace() -> None:
    src = """
# a comment line
const A = 1; const B = 2     # two statements on one line
fn f(x) { return x }
graph g { input x: f32[3]; y = f(x); output y }
graph h {
    input x: f32[3]
    for t in 0..2 { x2 = x } z = x2    # a statement may follow '}'
    output z
}
"""
    defs = parse(src, "t.graph").defs
    assert [type(d).__name__ for d in defs] == ["ConstDef", "ConstDef", "FnDef", "GraphBlock",
                                               "GraphBlock"]
    assert [type(s).__name__ for s in defs[4].body] == ["InputDecl", "For", "Assign", "Output"]


def test_newlines_inside_brackets_are_ignored() -> None:
    src = """graph g {
    input x: f32[
        N,
        3,
    ]
    y = sum(x,     # comments may sit inside brackets
            axis=[
              0,
            ],
            keepdims=true,
    )
    output y
}"""
    (g,) = parse(src, "t.graph").defs
    decl, assign, _ = g.body
    assert [sexpr(d) for d in decl.type.dims] == ["N", "3"]
    assert sexpr(assign.value) == "(sum x axis=[0] keepdims=true)"


def test_statement_forms() -> None:
    src = """fn cell(x, h,) { a, b = f(x); return a, b }
graph g {
    input x: f32[N, 3]
    input s: f32
    input e: i64[]
    param W: f32[3, 4] = normal(0.1)
    param U: f32[4] = uniform(-0.1, 0.1)
    param V: f32[4]
    output x, W
    output z = x @ W
    grad z wrt W, x
}"""
    fn, g = parse(src, "t.graph").defs
    assert [p.id for p in fn.params] == ["x", "h"]
    assert [t.id for t in fn.body[0].targets] == ["a", "b"]
    x, s, e, W, U, V, out, out_z, grad = g.body
    assert s.type.dims == () and e.type.dims == ()
    assert sexpr(W.init) == "(normal 0.1)" and sexpr(U.init) == "(uniform (neg 0.1) 0.1)"
    assert V.init is None
    assert [n.id for n in out.names] == ["x", "W"] and out.value is None
    assert [n.id for n in out_z.names] == ["z"] and sexpr(out_z.value) == "(matmul x W)"
    assert grad.target.id == "z" and [n.id for n in grad.wrt] == ["W", "x"]
    assert parse("graph g { grad z }", "t.graph").defs[0].body[0].wrt is None


def test_every_node_has_a_location() -> None:
    (g,) = parse("graph g {\n  y = (a +\n   b * c)\n}", "m.graph").defs
    (stmt,) = g.body
    assert isinstance(stmt, A.Assign) and (stmt.loc.line, stmt.loc.col) == (2, 3)
    add = stmt.value
    assert (add.loc.file, add.loc.line, add.loc.col) == ("m.graph", 2, 10)   # the operator
    assert (add.right.loc.line, add.right.loc.col) == (3, 6)
    assert (add.right.left.loc.line, add.right.left.loc.col) == (3, 4)


@pytest.mark.parametrize("src, line, col, words", [
    ("graph g {\n  y = x +\n}", 2, 10, "expected an expression"),
    ("graph g {\n  y = 3 x\n}", 2, 9, "unexpected name 'x'; expected an operator"),
    ("graph g {\n  x += 1\n}", 2, 5, "augmented assignment"),
    ("graph g {\n  input x f32[3]\n}", 2, 11, "expected ':'"),
    ("graph g {\n  for t in range(3) { }\n}", 2, 21, "for t in a..b"),
    ("graph g\n{\n}", 1, 8, "same line"),
    ("graph g {\n  h = relu(x\n  y = 2\n}", 3, 3, "'(' opened at 2:11 is never closed"),
    ("graph g {\n  y = 1\n", 2, 8, "unexpected end of file; expected a statement or '}'"),
    ("graph g {\n  y = 'a'\n}", 2, 7, "double quotes"),
    ("graph g {\n  y = x.foo\n}", 2, 9, "only .T"),
    ("graph g {\n  if x > 0 { }\n}", 2, 6, "no 'if'"),
    ("graph g {\n  y = input + 1\n}", 2, 7, "unexpected keyword 'input'"),
    ("graph g {\n  output a + b\n}", 2, 12, "output takes names"),
    ("graph g {\n  y = f(a=1, 2)\n}", 2, 14, "positional argument after a keyword"),
    ("graph g {\n  y = f(a=1, a=2)\n}", 2, 14, "given twice"),
    ("graph g {\n  return x\n}", 2, 3, "'return' cannot appear inside a graph"),
    ("fn f(x) {\n  y = x\n}", 1, 4, "has no 'return'"),
    ("fn f(x) {\n  return x\n  y = x\n}", 3, 3, "nothing may follow 'return'"),
    ("fn f(x) {\n  input y: f32\n  return x\n}", 2, 3, "cannot appear inside a fn"),
    ("graph g {\n  for t in 0..2 {\n    output t\n  }\n}", 3, 5, "inside a 'for' loop"),
    ("y = 1\n", 1, 1, "at the top level"),
    ("graph g {\n  y = a < b < c\n}", 2, 13, "logical_and"),
    ("graph g { y = [1, 2; ] }", 1, 20, "unexpected ';'"),
    ("graph g {\n  paam W: f32[3]\n}", 2, 8, "did you mean 'param'"),
    ("graph g {\n  y = 1 @ $\n}", 2, 11, "unexpected character '$'"),
])
def test_syntax_errors_say_where_and_what(src: str, line: int, col: int, words: str) -> None:
    with pytest.raises(GraphSyntaxError) as info:
        parse(src, "t.graph")
    err = info.value
    assert (err.loc.file, err.loc.line, err.loc.col) == ("t.graph", line, col)
    text = str(err)
    head, source_line, caret = text.split("\n")[:3]
    assert head.startswith(f"t.graph:{line}:{col}: ") and words in head
    assert source_line.startswith(f" {line} | ")
    # the caret sits under column ``col`` of the quoted line
    assert caret.index("^") - caret.index("|") - 2 == col - 1


def test_syntax_error_caret_follows_tabs() -> None:
    with pytest.raises(GraphSyntaxError) as info:
        parse("graph g {\n\ty = 3 x\n}", "t.graph")
    *_, caret = str(info.value).split("\n")
    assert caret.endswith("| \t      ^")
