"""Parse .graph text (grammar.lark, LALR) into the frozen AST of graphc/ast.py. This module only
builds nodes and checks where statements may appear; names and types are elaborate.py's
and evaluator.py's."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Iterator

from lark import Lark, Token, v_args
from lark.exceptions import UnexpectedInput, VisitError
from lark.visitors import Transformer_NonRecursive

from graphc import ast as A
from graphc.errors import (
    GraphError,
    GraphSyntaxError,
    GraphTypeError,
    Loc,
    attach_snippet,
    describe_parse_error,
)
from graphc.values import INT_MAX

OPENERS = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}


class SepPostLexer:
    """Turns newlines and ';' into one ``_SEP`` token per statement end, as Python's tokenizer
    does: newlines inside ( ) and [ ] vanish, runs of separators collapse, none follows '{', and
    one is put before and after every '}' and at the end of the file."""
    always_accept = ("NEWLINE", "SEMI")

    def process(self, stream: Iterator[Token]) -> Iterator[Token]:
        stack: list[str] = []               # the closers of the brackets now open
        prev: Token | None = None
        for tok in stream:
            kind = tok.type
            in_parens = bool(stack) and stack[-1] != "RBRACE"
            if kind in ("NEWLINE", "SEMI"):
                if kind == "SEMI" or not in_parens:
                    if prev is not None and prev.type not in ("_SEP", "LBRACE"):
                        prev = Token.new_borrow_pos("_SEP", ";" if kind == "SEMI" else "\n",
                                                    tok)
                        yield prev
                continue
            if prev is not None and prev.type not in ("_SEP", "LBRACE") and (
                    kind == "RBRACE" and not in_parens or prev.type == "RBRACE"):
                yield Token.new_borrow_pos("_SEP", "}", tok)
            if kind in OPENERS:
                stack.append(OPENERS[kind])
            elif stack and kind == stack[-1]:
                stack.pop()
            prev = tok
            yield tok
        if prev is not None and prev.type != "_SEP":
            yield Token.new_borrow_pos("_SEP", "", prev)


@functools.lru_cache(maxsize=1)
def parser() -> Lark:
    return Lark((Path(__file__).parent / "grammar.lark").read_text(), parser="lalr",
                lexer="basic", postlex=SepPostLexer(), propagate_positions=True,
                maybe_placeholders=True, cache=True)   # grammar analysis cached on disk


BINARY = {"+": "add", "-": "sub", "*": "mul", "/": "div", "@": "matmul", "**": "pow",
          "<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne"}


@v_args(meta=True, inline=True)
class _ToAst(Transformer_NonRecursive):  # type: ignore[misc]
    """Parse tree -> AST; method names are the grammar's ``-> alias`` names."""

    def __init__(self, filename: str):
        super().__init__()
        self.filename = filename

    def _loc(self, where: Any) -> Loc:
        return Loc(self.filename, where.line, where.column)

    def _name(self, tok: Token) -> A.Name:
        return A.Name(str(tok), self._loc(tok))

    # ---- definitions and statements
    def start(self, meta: Any, *stmts: Any) -> tuple:
        return stmts

    def block(self, meta: Any, *stmts: Any) -> tuple:
        return stmts

    def names(self, meta: Any, *toks: Token) -> tuple[A.Name, ...]:
        return tuple(self._name(t) for t in toks)

    def exprs(self, meta: Any, *items: A.Expr) -> tuple[A.Expr, ...]:
        return items

    def const_def(self, meta: Any, name: Token, value: A.Expr) -> A.ConstDef:
        return A.ConstDef(self._name(name), value, self._loc(meta))

    def fn_def(self, meta: Any, name: Token, *rest: Any) -> A.FnDef:
        *params, body = rest
        return A.FnDef(self._name(name), tuple(self._name(p) for p in params), body,
                       self._loc(meta))

    def graph_def(self, meta: Any, name: Token, body: tuple) -> A.GraphBlock:
        return A.GraphBlock(self._name(name), body, self._loc(meta))

    def type(self, meta: Any, dtype: Token, *dims: A.Expr) -> A.TypeExpr:
        return A.TypeExpr(self._name(dtype), dims, self._loc(meta))

    def input_decl(self, meta: Any, name: Token, ty: A.TypeExpr) -> A.InputDecl:
        return A.InputDecl(self._name(name), ty, self._loc(meta))

    def param_decl(self, meta: Any, name: Token, ty: A.TypeExpr,
                   init: A.Expr | None) -> A.ParamDecl:
        return A.ParamDecl(self._name(name), ty, init, self._loc(meta))

    def assign(self, meta: Any, targets: tuple, value: A.Expr) -> A.Assign:
        return A.Assign(targets, value, self._loc(meta))

    def output(self, meta: Any, names: tuple) -> A.Output:
        return A.Output(names, None, self._loc(meta))

    def output_expr(self, meta: Any, name: Token, value: A.Expr) -> A.Output:
        return A.Output((self._name(name),), value, self._loc(meta))

    def grad_stmt(self, meta: Any, kw: Token, target: Token, wrt: tuple | None) -> A.GradStmt:
        return A.GradStmt(self._name(target), wrt, self._loc(meta))

    def return_stmt(self, meta: Any, values: tuple) -> A.Return:
        return A.Return(values, self._loc(meta))

    def for_stmt(self, meta: Any, var: Token, start: A.Expr, stop: A.Expr,
                 body: tuple) -> A.For:
        return A.For(self._name(var), start, stop, body, self._loc(meta))

    # ---- expressions
    def binary(self, meta: Any, left: A.Expr, op: Token, right: A.Expr) -> A.Binary:
        return A.Binary(BINARY[str(op)], left, right, self._loc(op))

    def neg(self, meta: Any, op: Token, operand: A.Expr) -> A.Unary:
        return A.Unary("neg", operand, self._loc(op))

    def int(self, meta: Any, tok: Token) -> A.Int:
        digits = str(tok).lstrip("0") or "0"
        if len(digits) > 19 or int(digits) > INT_MAX:     # never int() a 5,000-digit string
            raise GraphTypeError("integer literal too large: integers must fit in int64 "
                                 "(at most 9223372036854775807); write a float (1e30) for "
                                 "a larger number", self._loc(tok))
        return A.Int(int(digits), self._loc(tok))

    def float(self, meta: Any, tok: Token) -> A.Float:
        return A.Float(float(tok), self._loc(tok))

    def string(self, meta: Any, tok: Token) -> A.Str:
        return A.Str(str(tok)[1:-1], self._loc(tok))

    def true(self, meta: Any) -> A.Bool:
        return A.Bool(True, self._loc(meta))

    def false(self, meta: Any) -> A.Bool:
        return A.Bool(False, self._loc(meta))

    def name(self, meta: Any, tok: Token) -> A.Name:
        return self._name(tok)

    def list(self, meta: Any, *items: A.Expr) -> A.List:
        return A.List(items, self._loc(meta))

    def args(self, meta: Any, *items: Any) -> tuple:
        return items

    def keyword(self, meta: Any, name: Token, value: A.Expr) -> A.Keyword:
        return A.Keyword(str(name), value, self._loc(name))

    def call(self, meta: Any, func: Token, args: tuple | None = None) -> A.Call:
        pos: list[A.Expr] = []
        kws: list[A.Keyword] = []
        for a in args or ():
            if isinstance(a, A.Keyword):
                if any(k.name == a.name for k in kws):
                    raise GraphSyntaxError(f"keyword argument '{a.name}' given twice", a.loc)
                kws.append(a)
            elif kws:
                raise GraphSyntaxError("positional argument after a keyword argument",
                                       a.loc)
            else:
                pos.append(a)
        return A.Call(self._name(func), tuple(pos), tuple(kws), self._loc(func))

    def subscripts(self, meta: Any, *items: Any) -> tuple:
        return items

    def slice(self, meta: Any, start: A.Expr | None, stop: A.Expr | None,
              step: A.Expr | None) -> A.Slice:
        return A.Slice(start, stop, step, self._loc(meta))

    def index(self, meta: Any, value: A.Expr, items: tuple) -> A.Index:
        return A.Index(value, items, self._loc(meta))

    def attr(self, meta: Any, value: A.Expr, name: Token) -> A.Attr:
        if str(name) not in ("T", "mT"):
            raise GraphSyntaxError(f"unknown attribute '.{name}': only .T (reverse the axes) "
                                   "and .mT (swap the last two) exist", self._loc(name))
        return A.Attr(value, str(name), self._loc(name))


# ---- where statements may appear ------------------------------------------------------------

_WHAT = {A.InputDecl: "an 'input' declaration", A.ParamDecl: "a 'param' declaration",
         A.Assign: "an assignment", A.Output: "an 'output' line", A.GradStmt: "a 'grad' line",
         A.Return: "'return'", A.For: "a 'for' loop", A.ConstDef: "a 'const' definition",
         A.FnDef: "a 'fn' definition", A.GraphBlock: "a 'graph' definition"}
_TOP = (A.ConstDef, A.FnDef, A.GraphBlock)
_IN_GRAPH = (A.InputDecl, A.ParamDecl, A.Assign, A.Output, A.GradStmt, A.For)
_IN_LOOP = (A.Assign, A.For)
_IN_FN = (A.Assign, A.For, A.Return)


def _misplaced(stmt: Any, where: str) -> GraphSyntaxError:
    return GraphSyntaxError(f"{_WHAT[type(stmt)]} cannot appear {where}", stmt.loc)


def _check_body(body: tuple, allowed: tuple, where: str, loop_where: str) -> None:
    todo = [(body, allowed, where)]                 # no recursion: loops may nest 10,000 deep
    while todo:
        stmts, ok, here = todo.pop()
        for stmt in stmts:
            if not isinstance(stmt, ok):
                raise _misplaced(stmt, here)
            if isinstance(stmt, A.For):
                todo.append((stmt.body, _IN_LOOP, loop_where))


def check_placement(defs: tuple) -> None:
    """Top level: const/fn/graph; graph: declarations, assignments, loops, output, grad;
    loop bodies: assignments and loops; fn: assignments, loops, and one final return."""
    for d in defs:
        if not isinstance(d, _TOP):
            raise _misplaced(d, "at the top level (only const, fn and graph definitions can)")
        if isinstance(d, A.GraphBlock):
            _check_body(d.body, _IN_GRAPH, "inside a graph", "inside a 'for' loop")
        elif isinstance(d, A.FnDef):
            _check_body(d.body, _IN_FN, "inside a fn", "inside a 'for' loop")
            returns = [i for i, s in enumerate(d.body) if isinstance(s, A.Return)]
            if not returns:
                raise GraphSyntaxError(f"fn '{d.name.id}' has no 'return'", d.name.loc)
            if returns[0] != len(d.body) - 1:
                raise GraphSyntaxError("nothing may follow 'return' in a fn",
                                       d.body[returns[0] + 1].loc)
            for stmt in d.body:
                if isinstance(stmt, A.For):
                    _check_body(stmt.body, _IN_LOOP, "inside a 'for' loop",
                                "inside a 'for' loop")


def normalize_source(text: str) -> str:
    """Line ends as ``\n`` (``\r\n`` and a lone ``\r`` too) and no leading BOM, so that lark's
    line numbers, the caret and every other line/col computation agree."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def parse(text: str, filename: str = "<string>") -> A.Module:
    """Parse a whole .graph file. Raises GraphSyntaxError with file:line:col and a caret."""
    text = normalize_source(text)
    try:
        try:
            tree = parser().parse(text)
        except UnexpectedInput as e:
            raise describe_parse_error(e, text, filename, parser()) from None
        try:
            defs = _ToAst(filename).transform(tree)
        except VisitError as e:
            if isinstance(e.orig_exc, GraphError):
                raise e.orig_exc from None
            raise
        check_placement(defs)
    except RecursionError:
        raise attach_snippet(GraphSyntaxError("the program nests too deeply",
                                              Loc(filename, 1, 1)), text) from None
    except GraphError as e:
        raise attach_snippet(e, text)
    return A.Module(defs, filename)
