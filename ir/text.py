"""IR text (README, "The IR"): ``print_func`` writes canonical text and ``parse`` reads it back
through ``make``, so ``str(parse(t)) == t`` and a pass is tested as IR text in, IR text out. The
grammar is ``ir/ir.lark``; a Func-valued attribute (a fused body) prints as a nested block."""
from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lark import Lark, Token, Transformer
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput
from lark.lexer import PatternStr

from graphc.ir.core import Func, Value, const, make, normalize_scalar
from graphc.ir.errors import GraphError, GraphSyntaxError, GraphTypeError, Loc
from graphc.ir.types import DIM_MAX, Dim, DType, TensorType, dim_add, dim_mul, dim_str

# ---------------------------------------------------------------------------------------- print

_IDENT = re.compile(r"[A-Za-z_][\w.]*")
_RESERVED = {"func", "return", "const", "true", "false", "none", *(d.value for d in DType)}


def _name(s: str, reserved: bool = False) -> str:
    """A bare name when it reads back as one, else a JSON-quoted string."""
    if _IDENT.fullmatch(s) and not (reserved and s in _RESERVED):
        return s
    return json.dumps(s)


def _float_str(x: float, dtype: DType = DType.f64) -> str:
    """Shortest text that reads back to the same value of ``dtype`` (``repr`` style)."""
    if dtype is DType.f32 and math.isfinite(x):
        x = float(str(np.float32(x)))   # numpy's shortest f32 digits, then Python's repr
    return repr(float(x))


def _attr_str(v: Any, depth: int) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return _float_str(float(v))
    if v is None:
        return "none"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, DType):
        return v.value
    if isinstance(v, Dim):
        return dim_str(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(_attr_str(x, depth) for x in v) + "]"
    if isinstance(v, Func):
        return _print(v, depth)
    # not canonical (verify rejects it): shown for debugging, in a form that never reads back
    return f"<{type(v).__name__}: {' '.join(repr(v).split())}>"


def _const_str(v: Value) -> str:
    """A const's value inline (its dtype and shape are the type's); a flat tuple as ``[a, b]``."""
    def one(x: Any) -> str:
        floating = v.dtype.is_float and isinstance(x, (int, float)) and not isinstance(x, bool)
        return _float_str(float(x), v.dtype) if floating else _attr_str(x, 0)
    val = v.attrs.get("value")
    return "[" + ", ".join(map(one, val)) + "]" if isinstance(val, tuple) else one(val)


def _op_str(v: Value, names: dict[int, str], depth: int) -> str:
    if v.op == "const":
        rhs = f"const {_const_str(v)}"
    else:
        rhs = " ".join([v.op] + ([", ".join(names[id(x)] for x in v.inputs)] if v.inputs else []))
        if v.attrs.items:
            rhs += " {" + ", ".join(f"{k}={_attr_str(a, depth)}" for k, a in v.attrs.items) + "}"
    line = f"{names[id(v)]} = {rhs} : {v.type}"
    return line if v.loc is None else f"{line}  # {v.loc}"


def _print(func: Func, depth: int) -> str:
    """``func`` with its ops indented one level below ``depth`` (its closing brace at ``depth``)."""
    pad = "  " * depth
    names: dict[int, str] = {}
    params = []
    for i, p in enumerate(func.params):
        names[id(p)] = "%" + _name(str(p.attrs.get("name", f"arg{i}")))
        params.append(f"{names[id(p)]}: {p.type}")
    rnames = [_name(n, reserved=True) + ": " for n in func.result_names]
    rnames += [""] * (len(func.results) - len(rnames))      # a mismatch (verify rejects it) shows
    results = ", ".join(f"{n}{r.type}" for n, r in zip(rnames, func.results))
    lines = [f"func @{_name(func.name)}({', '.join(params)}) -> ({results}) {{"]
    for v in func.values():
        if id(v) not in names:
            names[id(v)] = f"%{len(names) - len(params)}"
            lines.append(f"{pad}  {_op_str(v, names, depth + 1)}")
    lines.append(f"{pad}  return {', '.join(names[id(r)] for r in func.results)}".rstrip())
    lines.append(pad + "}")
    return "\n".join(lines)


def print_func(func: Func) -> str:
    """Canonical text of one function: values numbered in ``func.values()`` order, attrs sorted."""
    return _print(func, 0)


def print_funcs(funcs: Any) -> str:
    """Several functions, separated by a blank line (what ``parse`` reads back as a Module)."""
    return "\n\n".join(print_func(f) for f in funcs)


@dataclass(frozen=True, slots=True)
class Module:
    """What ``parse`` returns for text holding several functions; prints back the same text."""
    funcs: tuple[Func, ...]

    def __iter__(self) -> Iterator[Func]:
        return iter(self.funcs)

    def __len__(self) -> int:
        return len(self.funcs)

    def __getitem__(self, key: int | str) -> Func:
        if isinstance(key, str):
            for f in self.funcs:
                if f.name == key:
                    return f
            raise KeyError(key)
        return self.funcs[key]

    def __str__(self) -> str:
        return print_funcs(self.funcs)


# ---------------------------------------------------------------------------------------- parse

class _TextError(Exception):
    """Raised inside the transformer, turned into a GraphError with a snippet by ``_Reader``."""

    def __init__(self, cls: type[GraphError], message: str, line: int, col: int):
        super().__init__(message)
        self.cls, self.message, self.line, self.col = cls, message, line, col


@dataclass(frozen=True, slots=True)
class _Typed:
    type: TensorType
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class _OpSyn:
    target: Token
    op: str
    operands: tuple[Token, ...]
    attrs: tuple[tuple[Token, Any], ...]
    type: _Typed
    loc: Loc | None
    where: Token                        # the op name (or the target, for const): error position


@dataclass(frozen=True, slots=True)
class _FuncSyn:
    name: Token
    params: tuple[tuple[Token, _Typed], ...]
    results: tuple[tuple[Token | None, _Typed], ...]
    body: tuple[_OpSyn, ...]
    returns: tuple[Token, ...]


class _AttrList(tuple):  # type: ignore[type-arg]
    """The ``{k=v, ...}`` of an op, told apart from a tuple-valued attribute."""


_LOC_PART = re.compile(r"(.*):(\d+):(\d+)")


def _read_loc(tok: Token) -> Loc:
    loc: Loc | None = None
    for part in reversed(tok[1:].strip().split(" <- ")):
        m = _LOC_PART.fullmatch(part)
        if m is None:
            raise _TextError(GraphSyntaxError, f"expected a location 'file:line:col' after '#', "
                             f"got {part!r}", tok.line, tok.column)
        loc = Loc(m[1], int(m[2]), int(m[3]), loc)
    assert loc is not None
    return loc


def _unquote(tok: Token) -> str:
    s = tok[1:] if tok.type in ("VNAME", "FNAME") else str(tok)
    return json.loads(s) if s.startswith('"') else s


class _Syntax(Transformer):  # type: ignore[type-arg]
    """Parse tree -> plain syntax records and attribute values; no IR is built here."""

    def start(self, items: list[Any]) -> list[_FuncSyn]:
        return [x for x in items if isinstance(x, _FuncSyn)]

    def func(self, items: list[Any]) -> _FuncSyn:
        name, params, results, (body, returns) = items
        return _FuncSyn(name, params, results, body, returns)

    def params(self, items: list[Any]) -> tuple[Any, ...]:
        return tuple(items)

    results = params

    def param(self, items: list[Any]) -> tuple[Token, _Typed]:
        return (items[0], items[1])

    def result(self, items: list[Any]) -> tuple[Token | None, _Typed]:
        return (items[0], items[1]) if len(items) == 2 else (None, items[0])

    def body(self, items: list[Any]) -> tuple[tuple[_OpSyn, ...], tuple[Token, ...]]:
        return (tuple(x for x in items if isinstance(x, _OpSyn)),
                tuple(x for x in items if isinstance(x, Token)))

    def const_op(self, items: list[Any]) -> _OpSyn:
        loc = _read_loc(items[3]) if len(items) == 4 else None
        return _OpSyn(items[0], "const", (), (("value", items[1]),), items[2], loc, items[0])

    def op(self, items: list[Any]) -> _OpSyn:
        loc = _read_loc(items[-1]) if isinstance(items[-1], Token) and items[-1].type == "LOC" \
            else None
        operands = tuple(t for t in items[2:] if isinstance(t, Token) and t.type == "VNAME")
        attrs = next((a for a in items if isinstance(a, _AttrList)), _AttrList())
        ty = next(t for t in items if isinstance(t, _Typed))
        return _OpSyn(items[0], str(items[1]), operands, tuple(attrs), ty, loc, items[1])

    def attrs(self, items: list[Any]) -> _AttrList:
        return _AttrList(items)

    def attr(self, items: list[Any]) -> tuple[Token, Any]:
        return (items[0], items[1])

    def type(self, items: list[Any]) -> _Typed:
        tok = items[0]
        for d in items[1:]:
            if isinstance(d, int) and d < 0:
                raise _TextError(GraphTypeError, f"dim {d} is negative", tok.line, tok.column)
        try:
            return _Typed(TensorType(DType(str(tok)), tuple(items[1:])), tok.line, tok.column)
        except GraphTypeError as e:                 # a dim too large for int64
            raise _TextError(GraphTypeError, e.message, tok.line, tok.column) from None

    def float(self, items: list[Token]) -> float:
        return float(items[0])

    def string(self, items: list[Token]) -> str:
        return str(json.loads(items[0]))

    def keyword(self, items: list[Token]) -> bool | None:
        return {"true": True, "false": False, "none": None}[str(items[0])]

    def dtype(self, items: list[Token]) -> DType:
        return DType(str(items[0]))

    def tuple(self, items: list[Any]) -> tuple[Any, ...]:
        return tuple(items)

    def int(self, items: list[Token]) -> int:
        tok = items[0]
        digits = str(tok).lstrip("0") or "0"
        if len(digits) > 19 or int(digits) > DIM_MAX + 1:   # never int() 5,000 digits; 2**63
            raise _TextError(GraphTypeError, "integer too large: integers (dims, attributes) "
                             "must fit in int64", tok.line, tok.column)   # is -2**63 negated
        return int(digits)

    def sym(self, items: list[Token]) -> Dim:
        return Dim.sym(str(items[0]))

    def neg(self, items: list[Any]) -> Any:
        return dim_mul(-1, items[0])

    def add(self, items: list[Any]) -> Any:
        return dim_add(items[0], items[1])

    def sub(self, items: list[Any]) -> Any:
        return dim_add(items[0], dim_mul(-1, items[1]))

    def mul(self, items: list[Any]) -> Any:
        return dim_mul(items[0], items[1])


@functools.cache
def _lark() -> Lark:
    return Lark(Path(__file__).with_name("ir.lark").read_text(), parser="lalr",
                maybe_placeholders=False, transformer=_Syntax(), start=["start", "type"])


_WORDS = {"VNAME": "a value like %0", "FNAME": "a function name like @f", "NAME": "a name",
          "STRING": "a string", "INT": "an integer", "FLOAT": "a float", "DTYPE": "a dtype",
          "LOC": "'# file:line:col'", "_NL": "end of line", "$END": "end of text"}


def _describe(name: str) -> str:
    try:
        pattern = _lark().get_terminal(name).pattern
    except KeyError:
        return _WORDS.get(name, name)
    return repr(pattern.value) if isinstance(pattern, PatternStr) else _WORDS.get(name, name)


class _Reader:
    """Builds Funcs from syntax records through ``make``; every error gets ``line:col``."""

    def __init__(self, text: str, file: str):
        self.lines = text.split("\n")          # as lark counts lines
        self.file = file

    def error(self, cls: type[GraphError], message: str, line: int, col: int) -> GraphError:
        snippet = None
        if 1 <= line <= len(self.lines):
            snippet = f"{self.lines[line - 1]}\n{' ' * (col - 1)}^"
        return cls(message, Loc(self.file, line, col), snippet)

    def at(self, tok: Token, cls: type[GraphError], message: str) -> GraphError:
        return self.error(cls, message, tok.line or 0, tok.column or 0)

    def syntax(self, text: str, start: str = "start") -> Any:
        try:
            return _lark().parse(text, start=start)
        except _TextError as e:          # the inline transformer's errors are not wrapped
            raise self.error(e.cls, e.message, e.line, e.col) from None
        except UnexpectedInput as e:
            raise self.unexpected(e) from None

    def unexpected(self, e: UnexpectedInput) -> GraphError:
        line, col = e.line, e.column
        tok = getattr(e, "token", None)
        if isinstance(e, UnexpectedEOF) or line < 1 or (tok is not None and tok.type == "$END"):
            lines = self.lines[:-1] if len(self.lines) > 1 and not self.lines[-1] else self.lines
            line = max(len(lines), 1)                   # the end of the last line of text
            col = len(lines[-1]) + 1 if lines else 1
        if isinstance(e, UnexpectedCharacters):
            what = f"unexpected character {e.char!r}"
            expected = e.allowed or set()
        else:
            what = "unexpected end of text" if tok is None or tok.type == "$END" \
                else f"unexpected {str(tok)!r}" if tok.type != "_NL" else "unexpected end of line"
            expected = getattr(e, "accepts", None) or getattr(e, "expected", None) or set()
        words = sorted({_describe(t) for t in expected})
        return self.error(GraphSyntaxError, what + (f"; expected {', '.join(words)}"
                                                    if words else ""), line, col)

    def func(self, fs: _FuncSyn) -> Func:
        env: dict[str, Value] = {}
        params = []
        for tok, typed in fs.params:
            name = _unquote(tok)
            if any(p.attrs["name"] == name for p in params):
                raise self.at(tok, GraphSyntaxError, f"argument {tok} appears twice")
            env[str(tok)] = make("arg", name=name, dtype=typed.type.dtype, shape=typed.type.shape)
            params.append(env[str(tok)])
        for op in fs.body:
            if str(op.target) in env:
                raise self.at(op.target, GraphSyntaxError, f"{op.target} is defined twice")
            env[str(op.target)] = self.value(op, env)
        results = tuple(self.use(tok, env) for tok in fs.returns)
        names = [_unquote(n) for n, _ in fs.results if n is not None]
        if names and len(names) != len(fs.results):
            raise self.at(fs.name, GraphSyntaxError, "either every result is named or none is")
        if len(fs.results) != len(results):
            raise self.at(fs.name, GraphSyntaxError, f"the signature has {len(fs.results)} "
                          f"results but 'return' gives {len(results)}")
        for (_, typed), r in zip(fs.results, results):
            self.check_type(typed, r.type, "return value")
        return Func(_unquote(fs.name), tuple(params), results, tuple(names))

    def use(self, tok: Token, env: dict[str, Value]) -> Value:
        if str(tok) not in env:
            raise self.at(tok, GraphSyntaxError, f"{tok} is used before it is defined")
        return env[str(tok)]

    def attr(self, v: Any) -> Any:
        if isinstance(v, _FuncSyn):
            return self.func(v)
        if isinstance(v, tuple):
            return tuple(self.attr(x) for x in v)
        return v

    def value(self, op: _OpSyn, env: dict[str, Value]) -> Value:
        inputs = [self.use(tok, env) for tok in op.operands]
        attrs: dict[str, Any] = {}
        for key, v in op.attrs:
            if str(key) in attrs:
                raise self.at(key, GraphSyntaxError, f"attribute '{key}' is given twice")
            attrs[str(key)] = self.attr(v)
        try:
            if op.op == "const":
                value = self.const_value(op.where, attrs["value"], op.type.type.dtype)
                out = const(value, op.type.type.dtype, op.type.type.shape, loc=op.loc)
            else:
                out = make(op.op, *inputs, loc=op.loc, **attrs)
        except GraphError as e:
            raise self.at(op.where, type(e), e.message) from None
        except Exception as e:  # a shape rule fed nonsense attrs from text: still a user error
            raise self.at(op.where, GraphTypeError, f"bad attributes for '{op.op}': {e}") from e
        self.check_type(op.type, out.type, f"'{op.op}'")
        return out

    def const_value(self, where: Token, v: Any, dtype: DType) -> Any:
        ok = {DType.bool: (bool,), DType.i32: (int,), DType.i64: (int,)}.get(dtype, (int, float))
        for x in v if isinstance(v, tuple) else (v,):
            if not isinstance(x, ok) or (isinstance(x, bool) and dtype is not DType.bool):
                shown = "a function" if isinstance(x, _FuncSyn) else _attr_str(x, 0)
                raise self.at(where, GraphTypeError, f"a {dtype} constant cannot hold {shown}")
        try:
            return normalize_scalar(v, dtype)
        except OverflowError:
            raise self.at(where, GraphTypeError, f"constant {v} does not fit {dtype}") from None

    def check_type(self, typed: _Typed, inferred: TensorType, what: str) -> None:
        if typed.type != inferred:
            raise self.error(GraphSyntaxError, f"printed type {typed.type} differs from the type "
                             f"{inferred} inferred for {what}", typed.line, typed.col)


def _normalize(text: str) -> str:
    """``\n`` line ends (from ``\r\n`` or a lone ``\r``) and no BOM, as the .graph reader."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def parse_type(text: str, file: str = "<ir>") -> TensorType:
    """``f32[N+4,6]`` -> TensorType (dims are ints or ir.types.Dim polynomials)."""
    text = _normalize(text)
    typed: _Typed = _Reader(text, file).syntax(text.rstrip(), start="type")
    return typed.type


def parse_funcs(text: str, file: str = "<ir>") -> list[Func]:
    """Read one or several printed functions back; bad text raises GraphSyntaxError (line:col)."""
    text = _normalize(text)
    reader = _Reader(text, file)
    return [reader.func(fs) for fs in reader.syntax(text)]


def parse(text: str, file: str = "<ir>") -> Func | Module:
    """Read a dump back: a Func for one function, a Module (printing as the same text) for more."""
    funcs = parse_funcs(text, file)
    return funcs[0] if len(funcs) == 1 else Module(tuple(funcs))
