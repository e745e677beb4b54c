"""What the front end hands to the rest of the compiler: per graph, its declarations, its
elaborated forward function and its ``grad`` line."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphc.ir.core import Func, Value
from graphc.ir.errors import Loc
from graphc.ir.types import TensorType


@dataclass(frozen=True, slots=True)
class Init:
    """A param initializer as written: ``normal(0.1)`` is Init("normal", (0.1,))."""
    name: str
    args: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class Decl:
    """An ``input`` or ``param`` declaration."""
    name: str
    type: TensorType
    loc: Loc
    init: Init | None = None          # params only; None means the rank-based default


@dataclass(frozen=True, slots=True)
class GradSpec:
    """The graph's ``grad target [wrt a, b]`` line; ``wrt`` lists every param when omitted."""
    target: Value                     # the scalar being differentiated (need not be an output)
    wrt: tuple[str, ...]              # names of inputs/params, in the order written
    loc: Loc


@dataclass(frozen=True, slots=True)
class GraphDef:
    name: str
    inputs: tuple[Decl, ...]
    params: tuple[Decl, ...]
    forward: Func                     # params: inputs then params, as arg values; results: outputs
    grad: GradSpec | None
    source: str                       # the whole file's text, for error snippets
    filename: str
    consts: tuple[tuple[str, Any], ...] = ()
