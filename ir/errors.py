"""User-facing errors and warnings. They live in ``ir/`` so that the IR and the passes can raise
them without importing ``graphc``; ``graphc`` re-exports them."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Loc:
    """A ``.graph`` source position; ``via`` is the call site when the op was inlined from a fn."""
    file: str
    line: int
    col: int
    via: Loc | None = None

    def __str__(self) -> str:
        s = f"{self.file}:{self.line}:{self.col}"
        return s if self.via is None else f"{s} <- {self.via}"


class GraphError(Exception):
    """Base of every error graphc reports about user input."""

    def __init__(self, message: str, loc: Loc | None = None, snippet: str | None = None):
        self.message = message
        self.loc = loc
        self.snippet = snippet          # the source line and a caret, when the source is known
        super().__init__(message)

    def with_loc(self, loc: Loc | None) -> GraphError:
        if self.loc is None and loc is not None:
            self.loc = loc
        return self

    def __str__(self) -> str:
        head = self.message if self.loc is None else f"{self.loc}: {self.message}"
        return head if not self.snippet else f"{head}\n{self.snippet}"


class GraphSyntaxError(GraphError):
    """The text does not parse."""


class GraphTypeError(GraphError):
    """Names, arities, keywords, shapes or dtypes do not fit."""


class GraphCallError(GraphError, ValueError):
    """Arguments passed at call time do not match the compiled signature."""


class GraphArgumentTypeError(GraphCallError, TypeError):
    """An argument to the API has the wrong Python type (``opt_level=2.0``, ``graph=123``)."""


class GraphFileError(GraphError, OSError):
    """A file cannot be read."""


class NumericsError(GraphError, FloatingPointError):
    """An op produced NaN or Inf under ``check_numerics=True``."""


class GraphWarning(UserWarning):
    """Something legal but probably unintended (e.g. a gradient that is identically zero)."""
