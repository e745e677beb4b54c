"""User-facing errors and warnings. They live in ``ir/`` so that the IR and the passes can raise
them without importing ``graphc``; ``graphc`` re-exports them. Also where graphc's own frames
are told from its user's: warnings point at the user's line, tracebacks leave graphc out."""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass, field
from types import TracebackType


@dataclass(frozen=True, slots=True)
class Loc:
    """A ``.graph`` source position; ``via`` is the call site when the op was inlined from a fn.
    ``grad_of`` marks ops that autodiff made: they compute the gradient of the op written here
    (``"sqrt"``; ``"the gradient of sqrt"`` for a second derivative), so a NaN made in a
    backward names the op whose gradient it is. Neither printed nor compared: a Loc is a place,
    and the place is the forward op's."""
    file: str
    line: int
    col: int
    via: Loc | None = None
    grad_of: str | None = field(default=None, compare=False)

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

    @classmethod
    def produced_by(cls, op: str, result: object, loc: Loc | None) -> NumericsError:
        """The error for op ``op`` whose result (of type ``result``) holds NaN or Inf; one that
        autodiff made is named as the gradient it computes (the interpreter and the native
        runtime both word it here, so the two backends say the same)."""
        if loc is not None and loc.grad_of is not None:
            return cls(f"the gradient of {loc.grad_of} produced NaN or Inf (in its {op}, "
                       f"result {result})", loc)
        return cls(f"{op} produced NaN or Inf (result {result})", loc)


class GraphWarning(UserWarning):
    """Something legal but probably unintended (e.g. a gradient that is identically zero)."""


# ---- graphc's frames and its user's -----------------------------------------------------------
PACKAGES = ("graphc", "graphc.ir", "graphc.passes", "graphc.runtime")


def _package_dirs() -> tuple[str, ...]:
    """The folders of graphc's packages (``ir/``, ``passes/`` and ``runtime/`` install as
    subpackages but may sit anywhere), each ending in a separator."""
    dirs = []
    for name in PACKAGES:
        for d in getattr(sys.modules.get(name), "__path__", ()):
            dirs.append(os.path.join(os.path.abspath(d), ""))
    return tuple(dirs)


def is_internal(filename: str) -> bool:
    """Whether a frame in ``filename`` is graphc's own code (a test or example is not)."""
    return os.path.abspath(filename).startswith(_package_dirs())


def full_tracebacks() -> bool:
    """``GRAPHC_TRACEBACK=full`` keeps graphc's own frames in errors' tracebacks (for people
    working on graphc); by default a GraphError's traceback ends at the user's call."""
    return os.environ.get("GRAPHC_TRACEBACK", "").strip().lower() not in ("", "0")


def user_traceback(tb: TracebackType | None) -> TracebackType | None:
    """``tb`` without graphc's own frames (JAX filters its tracebacks the same way)."""
    frames = []
    while tb is not None:
        if not is_internal(tb.tb_frame.f_code.co_filename):
            frames.append(tb)
        tb = tb.tb_next
    out = None
    for t in reversed(frames):
        out = TracebackType(out, t.tb_frame, t.tb_lasti, t.tb_lineno)
    return out


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the innermost caller outside graphc
    (counted from the function that calls ``warnings.warn``, which is level 1)."""
    frame = sys._getframe(1)             # whoever asked: the warning's own function
    level = 1
    while frame.f_back is not None and is_internal(frame.f_code.co_filename):
        frame = frame.f_back             # (all graphc's, as under the CLI: the outermost)
        level += 1
    return level


def warn(warning: Warning) -> None:
    """Issue ``warning`` attributed to the user's line that led here, not graphc's."""
    warnings.warn(warning, stacklevel=user_stacklevel())
