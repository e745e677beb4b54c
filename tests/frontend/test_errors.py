"""Compile-time errors: what bad .graph input gets. Each error is a GraphError subclass
whose text starts ``file:line:col: message`` and quotes the source line with a caret."""
from __future__ import annotations

import pytest

from graphc.elaborate import elaborate_source
from graphc.errors import GraphError, GraphSyntaxError, GraphTypeError

HEAD = """graph g {
    input x: f32[N, 784]
    input i: i32[3]
    param W: f32[785, 256]
"""

# (body lines after HEAD, error class, line, col, fragments the message must contain)
CASES = [
    # syntax error
    ("    y = x @ @ W", GraphSyntaxError, 5, 13, ["unexpected '@'", "expected an expression"]),
    # unknown name / op, wrong arity, bad keyword: "did you mean"
    ("    y = exq(x)", GraphTypeError, 5, 9, ["unknown fn or op 'exq'", "did you mean 'exp'"]),
    ("    y = xx + 1", GraphTypeError, 5, 9, ["unknown name 'xx'", "did you mean 'x'"]),
    ("    y = relu(x, x)", GraphTypeError, 5, 9, ["'relu' takes at most 1 argument (x), got 2"]),
    ("    y = where(x > 0, x)", GraphTypeError, 5, 9, ["'where' needs 3 tensor arguments",
                                                      "'y' is missing"]),
    ("    y = sum(x, axes=1)", GraphTypeError, 5, 16, ["no argument 'axes'",
                                                     "did you mean 'axis'"]),
    ("    y = cast(x, f33)", GraphTypeError, 5, 17, ["unknown name 'f33'",
                                                   "did you mean 'f32'"]),
    # shape / dtype mismatch naming both types
    ("    y = x @ W", GraphTypeError, 5, 11, ["f32[N,784] @ f32[785,256]"]),
    ("    y = x + i", GraphTypeError, 5, 11, ["f32[N,784] + i32[3]"]),
    ("    y = i * 2.5", GraphTypeError, 5, 11, ["float literal 2.5", "i32[3]"]),
    ("    y = i / 2", GraphTypeError, 5, 11, ["i32[3] / i32[]", "float"]),
    ("    y = mean(i)", GraphTypeError, 5, 9, ["mean(i32[3])", "float"]),
    ("    y = reshape(x, [7, 7])", GraphTypeError, 5, 9, ["f32[N,784]", "[7,7]"]),
    # names that cannot be (re)bound
    ("    x = relu(x)", GraphTypeError, 5, 5, ["cannot assign to 'x'", "input"]),
    ("    W = 1", GraphTypeError, 5, 5, ["cannot assign to 'W'", "param"]),
    ("    exp = 1", GraphTypeError, 5, 5, ["cannot assign to 'exp'", "op"]),
    ("    N = 1", GraphTypeError, 5, 5, ["cannot assign to 'N'", "symbolic dim"]),
    ("    input x: f32[3]", GraphTypeError, 5, 11, ["'x' is already declared at 2:11"]),
    # indexing
    ("    y = x[0, 784]", GraphTypeError, 5, 14, ["index 784 is out of range", "f32[N,784]"]),
    ("    y = x[0, 1, 2]", GraphTypeError, 5, 9, ["3 indices for f32[N,784]"]),
    ("    y = x[i]", GraphTypeError, 5, 11, ["compile-time integer", "take("]),
    ("    y = i[1:9]", GraphTypeError, 5, 13, ["slice bound 9 is out of range"]),
    # grad lines
    ("    grad x", GraphTypeError, 5, 10, ["float scalar", "f32[N,784]"]),
    ("    y = sum(x)\n    grad y wrt h", GraphTypeError, 6, 16, ["inputs and params",
                                                              "'h' is not one"]),
    ("    y = sum(x)\n    grad y wrt i", GraphTypeError, 6, 16, ["i32[3] is not float"]),
    ("    y = sum(x)\n    grad y\n    grad y", GraphTypeError, 7, 5, ["one 'grad' line",
                                                                    "first is at 6:5"]),
    ("    y = grad(x, W)", GraphTypeError, 5, 9, ["scalar", "f32[N,784]"]),
    # unpacking and loops
    ("    a, b = relu(x)", GraphTypeError, 5, 5, ["cannot unpack 1 value into 2 names"]),
    ("    for t in 0..N { }", GraphTypeError, 5, 17, ["compile-time integer", "symbolic dim N"]),
    ("    for t in 0..1000000 { }", GraphTypeError, 5, 5, ["too long to unroll"]),
    ("    y = 1 / 0", GraphTypeError, 5, 11, ["division by zero"]),
    ("    y = i[::0]", GraphTypeError, 5, 13, ["step must be a non-zero integer"]),
    ("    for t in 0..2 { }\n    y = t", GraphTypeError, 6, 9, ["unknown name 't'"]),  # scoped
    ("    y = x[0] if x else x", GraphSyntaxError, 5, 14, ["unexpected name 'if'"]),
    ("    output z", GraphTypeError, 5, 12, ["unknown name 'z'"]),
]


def check(src: str, cls: type, line: int, col: int, fragments: list[str]) -> GraphError:
    with pytest.raises(GraphError) as info:
        elaborate_source(src, "t.graph")
    err = info.value
    assert type(err) is cls, str(err)
    assert err.loc is not None and (err.loc.file, err.loc.line, err.loc.col) == \
        ("t.graph", line, col), str(err)
    text = str(err)
    head, quoted, caret = text.split("\n")[:3]
    assert head.startswith(f"t.graph:{line}:{col}") and ": " in head
    for f in fragments:
        assert f in head, f"{f!r} not in {head!r}"
    assert quoted == f" {line} | {src.splitlines()[line - 1]}"
    assert caret.index("^") - caret.index("|") - 2 == col - 1
    return err


@pytest.mark.parametrize("body, cls, line, col, fragments", CASES)
def test_compile_time_errors(body: str, cls: type, line: int, col: int,
                             fragments: list[str]) -> None:
    check(HEAD + body + "\n    output x\n}\n", cls, line, col, fragments)


@pytest.mark.parametrize("src, cls, line, col, fragments", [
    ("fn f(x) { return g(x) }\nfn g(x) { return f(x) }\n"
     "graph h { input x: f32[3]; output y = f(x) }", GraphTypeError, 2, 18,
     ["calls itself (f -> g -> f)"]),
    ("fn f(x) { return x + N }\ngraph h { input x: f32[N]; output y = f(x) }",
     GraphTypeError, 1, 22, ["unknown name 'N'", "a fn sees only"]),
    ("fn f(x, y) { return x }\ngraph h { input x: f32[3]; output y = f(x) }",
     GraphTypeError, 2, 39, ["fn 'f' is missing argument 'y'"]),
    ("fn f(x, y) { return x, y }\ngraph h { input x: f32[3]; a = f(x, x); output a }",
     GraphTypeError, 2, 28, ["gives 2 values"]),
    ("const A = B\nconst B = A\ngraph h { input x: f32[3]; output x }", GraphTypeError,
     2, 11, ["const 'A' depends on itself (A -> B -> A)"]),
    ("const H = 4\nfn f(H) { return H }\ngraph h { input x: f32[3]; output x }",
     GraphTypeError, 2, 6, ["cannot assign to 'H'", "const"]),
    ("fn relu(x) { return x }\ngraph h { input x: f32[3]; output x }", GraphTypeError,
     1, 4, ["'relu' is an op"]),
    ("graph h { input x: f32[3]; output x }\ngraph h { input x: f32[3]; output x }",
     GraphTypeError, 2, 7, ["'h' is already defined at 1:7"]),
    ("graph h { input x: f32[3]; param p: f32[N]; output x }", GraphTypeError, 1, 41,
     ["must be static"]),
    ("graph h { input x: f32[3]; param p: i32[3]; output x }", GraphTypeError, 1, 37,
     ["must be float", "i32[3]"]),
    ("graph h { input x: f32[3]; param p: f32[3] = normel(1.0); output x }", GraphTypeError,
     1, 46, ["unknown initializer 'normel'", "did you mean 'normal'"]),
    ("graph h { input x: f32[3]; param p: f32[3] = uniform(1.0); output x }",
     GraphTypeError, 1, 46, ["takes 2 arguments (lo, hi), got 1"]),
    ("graph h { input x: f32[3]; output y = x; output y }", GraphTypeError, 1, 49,
     ["output 'y' is named twice"]),
    ("graph h { input x: f32[3] }", GraphTypeError, 1, 7, ["no 'output'"]),
])
def test_definition_errors(src: str, cls: type, line: int, col: int,
                           fragments: list[str]) -> None:
    check(src, cls, line, col, fragments)


def test_error_inside_a_fn_quotes_the_fn_line_and_the_call_site() -> None:
    src = "fn dense(x, W) {\n    return x @ W\n}\ngraph g {\n    input x: f32[N, 3]\n" \
          "    param W: f32[4, 2]\n    h = dense(x, W)\n    output h\n}\n"
    err = check(src, GraphTypeError, 2, 14, ["f32[N,3] @ f32[4,2]"])
    assert str(err.loc) == "t.graph:2:14 <- t.graph:7:9"
    lines = str(err).split("\n")
    assert lines[3] == " 7 |     h = dense(x, W)"
    assert lines[4].endswith("^ (inlined from here)")
