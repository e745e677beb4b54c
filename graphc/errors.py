"""graphc's user-facing errors (defined in ir.errors so ir/ and passes/ can raise them),
``attach_snippet``, which adds the offending source line and a caret to an error's text, and
``public``, which keeps graphc's own frames out of the tracebacks its API's errors carry."""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from graphc.ir.errors import (
    GraphCallError,
    GraphError,
    GraphFileError,
    GraphSyntaxError,
    GraphTypeError,
    GraphWarning,
    Loc,
    NumericsError,
    full_tracebacks,
    user_traceback,
)
from graphc.ir.ops.registry import suggest

__all__ = ["GraphCallError", "GraphError", "GraphFileError", "GraphSyntaxError",
           "GraphTypeError", "GraphWarning", "Loc", "NumericsError", "attach_snippet",
           "snippet", "describe_parse_error", "public", "public_methods"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T", bound=type)


def public(fn: F) -> F:
    """Mark ``fn`` as an entry point of the API: a GraphError leaving it has a traceback that
    ends at the user's call (with at most this wrapper's frame), not ~30 frames inside graphc,
    as JAX filters its own. ``GRAPHC_TRACEBACK=full`` keeps every frame."""
    @functools.wraps(fn)
    def entry(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GraphError as e:
            if full_tracebacks():
                raise
            raise e.with_traceback(user_traceback(e.__traceback__)) from e.__cause__
    return entry  # type: ignore[return-value]


def public_methods(cls: T) -> T:
    """``public`` on every method of ``cls`` a user calls: those not named ``_...``, and
    ``__call__``. (Methods added later by a subclass are its own business.)"""
    for name, fn in list(vars(cls).items()):
        if inspect.isfunction(fn) and (not name.startswith("_") or name == "__call__"):
            setattr(cls, name, public(fn))
    return cls


def snippet(source_text: str, line: int, col: int, note: str = "") -> str:
    """The 1-based ``line`` of ``source_text`` with a caret under ``col``, rustc style:

       14 |     logits = x @ W
          |                ^
    """
    lines = source_text.split("\n")         # as lark counts lines (not str.splitlines)
    if not 1 <= line <= len(lines):
        return ""
    text = lines[line - 1].rstrip()
    # keep tabs in the caret's padding so that it lines up however the terminal shows tabs
    pad = "".join(c if c == "\t" else " " for c in text[:max(col - 1, 0)])
    gutter = str(line)
    blank = " " * len(gutter)
    caret = f"{pad}^" + (f" {note}" if note else "")
    return f" {gutter} | {text}\n {blank} | {caret}"


def attach_snippet(err: GraphError, source_text: str) -> GraphError:
    """Fill ``err.snippet`` from ``err.loc`` (and the call sites it was inlined through), so
    ``str(err)`` reads ``file:line:col: message`` then the line and a caret. Returns ``err``."""
    if err.snippet or err.loc is None:
        return err
    parts = [snippet(source_text, err.loc.line, err.loc.col)]
    via = err.loc.via
    while via is not None:
        parts.append(snippet(source_text, via.line, via.col, "(inlined from here)"))
        via = via.via
    err.snippet = "\n".join(p for p in parts if p) or None
    return err


# ---- syntax errors in words ---------------------------------------------------------------
# Common mistakes, found as lark's ``match_examples`` does: each example fails in some parser
# state on some token type; a user's error in the same state on the same token type gets the
# example's message instead of the generic "unexpected X; expected Y".
MISTAKES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("comparisons do not chain: write logical_and(a < b, b < c)",
     ("graph g { y = a < b < c }",)),
    ("augmented assignment is not supported: write 'x = x + y'",
     ("graph g { x += 1 }", "graph g { x -= 1 }", "graph g { x *= 1 }", "graph g { x /= 1 }",
      "graph g { x @= 1 }", "graph g { x **= 1 }")),
    ("'=' assigns once per statement; to compare, write '=='",
     ("graph g { y = x = 3 }", "graph g { y = f(x) = 3 }", "graph g { y = (x = 3) }")),
    ("a declaration reads 'input x: f32[N, 3]' (a ':' before the type)",
     ("graph g { input x f32 }", "graph g { param x f32 }", "graph g { input x = 1 }")),
    ("a for loop reads 'for t in a..b { ... }' (the half-open range a <= t < b)",
     ("graph g { for t in 3 { } }", "graph g { for t in 0..3: y = 1 }",
      "graph g { for t in [1, 2] { } }")),
    ("a '{' must be on the same line as the 'fn', 'graph' or 'for' it opens",
     ("graph g\n{ }", "fn f(x)\n{ return x }", "graph g { for t in 0..3\n{ } }")),
    ("a fn reads 'fn name(a, b) { ...; return y }'",
     ("fn f(x): return x", "fn f x { return x }", "fn f(x) return x")),
    ("output takes names ('output a, b') or one named expression ('output z = a + b')",
     ("graph g { output a + b }", "graph g { output f(x) }", "graph g { output 3 }",
      "graph g { output a, b = c }")),
    ("a grad line reads 'grad loss' or 'grad loss wrt W1, b1'",
     ("graph g { grad(loss) }", "graph g { grad loss W1 }", "graph g { grad loss, W1 }")),
)

# statements that other languages have and .graph does not, told by the line's first word
FOREIGN = {
    "if": "there is no 'if': the graph is static; select with where(cond, a, b)",
    "while": "there is no 'while': loops are unrolled, write 'for t in a..b { ... }'",
    "def": "functions are written 'fn name(a, b) { ...; return y }'",
    "let": "assign with 'name = expr' (no 'let')", "var": "assign with 'name = expr'",
    "import": "a .graph file has no imports",
}

KEYWORDS = ("const", "fn", "graph", "input", "param", "output", "grad", "for", "return")

_WORDS = {"NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string",
          "_SEP": "the end of the statement", "CMP": "a comparison", "$END": "the end of the file"}
_EXPR_START = {"NAME", "INT", "FLOAT", "STRING", "LPAR", "LSQB", "MINUS", "TRUE", "FALSE",
               "GRAD"}
_STMT_START = {"NAME", "CONST", "FN", "FOR", "GRAD", "GRAPH", "INPUT", "OUTPUT", "PARAM",
               "RETURN"}
_OPERATORS = {"PLUS", "MINUS", "STAR", "SLASH", "AT", "POW", "CMP", "DOT", "LSQB"}


def _terminal_words(lark: Any) -> dict[str, str]:
    words = {t.name: f"'{t.pattern.value}'" for t in lark.terminals
             if type(t.pattern).__name__ == "PatternStr"}
    words.update(_WORDS)
    return words


def _expected_words(expected: set[str], words: dict[str, str]) -> list[str]:
    out: list[str] = []
    rest = set(expected)
    if {"NAME", "OUTPUT", "INPUT"} <= rest:
        out.append("a statement")
        rest -= _STMT_START
    if {"NAME", "INT", "LPAR"} <= rest:
        out.append("an expression")
        rest -= _EXPR_START
    if {"PLUS", "STAR"} <= rest:
        out.append("an operator")
        rest -= _OPERATORS
    out += sorted(words.get(t, t) for t in rest)
    return out


def _token_words(tok: Any, words: dict[str, str]) -> str:
    kind, value = tok.type, str(tok)
    if kind == "_SEP":
        return {";": "';'", "}": "'}'", "": "end of file"}.get(value, "end of line")
    if kind == "$END":
        return "end of file"
    if kind == "NAME":
        return f"name '{value}'"
    if kind in ("INT", "FLOAT"):
        return f"number {value}"
    if kind == "STRING":
        return f"string {value}"
    if value.isalpha():
        return f"keyword '{value}'"
    return f"'{value}'"


def _state(e: Any) -> Any:
    """The LALR state number an UnexpectedToken happened in (not the stack depth)."""
    return getattr(e.state, "position", e.state)


@functools.lru_cache(maxsize=4)
def _mistake_table(lark: Any) -> dict[tuple[Any, str], str]:
    from lark.exceptions import UnexpectedToken
    table: dict[tuple[Any, str], str] = {}
    for message, examples in MISTAKES:
        for example in examples:
            try:
                lark.parse(example)
            except UnexpectedToken as e:
                table.setdefault((_state(e), e.token.type), message)
    return table


def _unclosed(text: str, stop: int) -> tuple[str, int, int] | None:
    """The innermost bracket still open at offset ``stop``, as (char, line, col)."""
    stack: list[tuple[str, int, int]] = []
    line, col, i = 1, 1, 0
    quote = comment = False
    while i < min(stop, len(text)):
        c = text[i]
        if c == "\n":
            line, col, comment, quote = line + 1, 0, False, False
        elif comment or (quote and c != '"'):
            pass
        elif c == '"':
            quote = not quote
        elif c == "#":
            comment = True
        elif c in "([{":
            stack.append((c, line, col))
        elif c in ")]}" and stack and "([{"[")]}".index(c)] == stack[-1][0]:
            stack.pop()
        i, col = i + 1, col + 1
    return stack[-1] if stack else None


def _offset(text: str, line: int, col: int) -> int:
    lines = text.split("\n")
    return sum(len(s) + 1 for s in lines[:line - 1]) + col - 1


def _keyword_fix(text: str, lines: list[str], line: int, col: int, first: str,
                 lark: Any) -> str:
    """"did you mean 'input'?" for a line's misspelt first word, only when writing the keyword
    there gets the parse past the error (so ``graph g { ... }`` never hears of 'grad')."""
    from lark.exceptions import UnexpectedInput
    if first in KEYWORDS:
        return ""
    hint = suggest(first, list(KEYWORDS))
    if not hint:
        return ""
    word = hint.split("'")[1]
    start = _offset(text, line, lines[line - 1].index(first) + 1)
    fixed = text[:start] + word + text[start + len(first):]
    try:
        lark.parse(fixed)
    except UnexpectedInput as e:
        where = getattr(e, "token", None)
        if e.line is not None and e.line > 0 and not (
                where is not None and where.type in ("$END", "_SEP") and str(where) == ""):
            moved = _offset(fixed, e.line, e.column) - (len(word) - len(first))
            if moved <= _offset(text, line, col):
                return ""
    return hint.removeprefix("; ")


def describe_parse_error(e: Any, text: str, filename: str, lark: Any) -> GraphSyntaxError:
    """Word a lark ``UnexpectedInput`` for people: where, what was found, what would fit."""
    from lark.exceptions import UnexpectedCharacters, UnexpectedToken
    words = _terminal_words(lark)
    lines = text.split("\n")
    hint = ""
    at_end = False
    if isinstance(e, UnexpectedCharacters):
        line, col, c = e.line, e.column, e.char
        message = f"unexpected character {c!r}"
        hint = {"'": "strings use double quotes", "!": "write '!=' or logical_not(x)",
                "&": "write logical_and(a, b)", "|": "write logical_or(a, b)",
                "%": "there is no '%' operator"}.get(c, "")
    else:
        tok = e.token
        at_end = tok.type in ("$END", "<EOF>") or getattr(tok, "line", None) is None or (
            tok.type == "_SEP" and str(tok) == "")
        if at_end:
            line = max((i + 1 for i, s in enumerate(lines) if s.strip()), default=1)
            line, col = line, len(lines[line - 1].rstrip()) + 1
        else:
            line, col = tok.line, tok.column
        message = f"unexpected {_token_words(tok, words)}"
        expected = _expected_words(set(getattr(e, "accepts", None) or e.expected), words)
        if expected:
            message += "; expected " + (" or ".join(expected) if len(expected) <= 2 else
                                        ", ".join(expected[:-1]) + " or " + expected[-1])
        if isinstance(e, UnexpectedToken):
            hint = _mistake_table(lark).get((_state(e), tok.type), "")
        first = lines[line - 1].split(None, 1)[0] if lines[line - 1].strip() else ""
        hint = hint or FOREIGN.get(first.split("(")[0], "")
        if not hint and first.isidentifier() and col > lines[line - 1].index(first) + 1:
            hint = _keyword_fix(text, lines, line, col, first, lark)
    opened = _unclosed(text, _offset(text, line, col))
    if opened is not None and (at_end or opened[0] != "{" and opened[1] < line):
        hint = (hint + "; " if hint else "") + \
            f"the '{opened[0]}' opened at {opened[1]}:{opened[2]} is never closed"
    return GraphSyntaxError(message + (f" ({hint})" if hint else ""), Loc(filename, line, col))
