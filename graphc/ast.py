"""The .graph syntax tree: frozen dataclasses that syntax.py builds and elaborate.py walks.
Every node carries the ``Loc`` of its first token (binary and unary ops: of the operator)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from graphc.ir.errors import Loc

# ---- expressions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Int:
    value: int
    loc: Loc


@dataclass(frozen=True, slots=True)
class Float:
    value: float
    loc: Loc


@dataclass(frozen=True, slots=True)
class Bool:
    value: bool
    loc: Loc


@dataclass(frozen=True, slots=True)
class Str:
    value: str
    loc: Loc


@dataclass(frozen=True, slots=True)
class Name:
    id: str
    loc: Loc


@dataclass(frozen=True, slots=True)
class List:
    items: tuple[Expr, ...]
    loc: Loc


@dataclass(frozen=True, slots=True)
class Unary:
    op: str                          # "neg"
    operand: Expr
    loc: Loc


@dataclass(frozen=True, slots=True)
class Binary:
    op: str                          # IR op name: add sub mul div matmul pow lt le gt ge eq ne
    left: Expr
    right: Expr
    loc: Loc


@dataclass(frozen=True, slots=True)
class Keyword:
    name: str
    value: Expr
    loc: Loc


@dataclass(frozen=True, slots=True)
class Call:
    func: Name
    args: tuple[Expr, ...]
    kwargs: tuple[Keyword, ...]
    loc: Loc


@dataclass(frozen=True, slots=True)
class Slice:
    start: Expr | None
    stop: Expr | None
    step: Expr | None
    loc: Loc


@dataclass(frozen=True, slots=True)
class Index:
    value: Expr
    items: tuple[Expr | Slice, ...]
    loc: Loc


@dataclass(frozen=True, slots=True)
class Attr:
    value: Expr
    name: str                        # "T" or "mT"
    loc: Loc


Expr = Union[Int, Float, Bool, Str, Name, List, Unary, Binary, Call, Index, Attr]

# ---- statements --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TypeExpr:
    dtype: Name
    dims: tuple[Expr, ...]           # () for a scalar
    loc: Loc


@dataclass(frozen=True, slots=True)
class InputDecl:
    name: Name
    type: TypeExpr
    loc: Loc


@dataclass(frozen=True, slots=True)
class ParamDecl:
    name: Name
    type: TypeExpr
    init: Expr | None                # a Name (glorot_uniform) or a Call (normal(0.1))
    loc: Loc


@dataclass(frozen=True, slots=True)
class Assign:
    targets: tuple[Name, ...]        # more than one: unpack a fn's multiple returns
    value: Expr
    loc: Loc


@dataclass(frozen=True, slots=True)
class Output:
    names: tuple[Name, ...]
    value: Expr | None               # ``output z = expr``: one name and its value
    loc: Loc


@dataclass(frozen=True, slots=True)
class GradStmt:
    target: Name
    wrt: tuple[Name, ...] | None     # None: every param
    loc: Loc


@dataclass(frozen=True, slots=True)
class Return:
    values: tuple[Expr, ...]
    loc: Loc


@dataclass(frozen=True, slots=True)
class For:
    var: Name
    start: Expr
    stop: Expr
    body: tuple[Stmt, ...]
    loc: Loc


Stmt = Union[InputDecl, ParamDecl, Assign, Output, GradStmt, Return, For]

# ---- definitions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConstDef:
    name: Name
    value: Expr
    loc: Loc


@dataclass(frozen=True, slots=True)
class FnDef:
    name: Name
    params: tuple[Name, ...]
    body: tuple[Stmt, ...]           # ends with its one Return
    loc: Loc


@dataclass(frozen=True, slots=True)
class GraphBlock:
    name: Name
    body: tuple[Stmt, ...]
    loc: Loc


Definition = Union[ConstDef, FnDef, GraphBlock]


@dataclass(frozen=True, slots=True)
class Module:
    """A whole .graph file: its definitions in source order."""
    defs: tuple[Definition, ...]
    filename: str
