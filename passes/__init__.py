"""graphc's passes, each a ``Pass`` object named after its module, and the pipelines that ``-O0``
.. ``-O3`` run, written as pipeline specs (``"autodiff,simplify,cse,dce"``; grammar in
passes/manager.py). ``run_pipeline`` runs one, verifying after each pass. Autodiff runs first; the
optimisations leave a function that still holds grad ops unchanged."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphc.ir.core import Func
from graphc.passes.rewrite import NoOptions, PassContext


@dataclass(frozen=True)
class Pass:
    """A pass: ``run(func, ctx, options)`` with ``options`` an instance of ``Options`` (a frozen
    dataclass whose defaults are the pass's behaviour when nobody sets them)."""
    name: str
    run: Callable[[Func, PassContext, Any], Func]
    doc: str                                    # one line: what it does
    Options: type = NoOptions


def _load(name: str) -> Pass:
    """The pass in ``passes/<name>.py`` (its ``run`` and ``Options``, if it takes any); its doc is
    the first sentence of the module docstring."""
    mod = importlib.import_module(f"{__name__}.{name}")
    text = " ".join((mod.__doc__ or name).replace("``", "").split())
    return Pass(name, mod.run, text.split(". ")[0].rstrip(".") + ".",
                getattr(mod, "Options", NoOptions))


# Ordered as in the -O3 pipeline; the file name is the pass name (``--dump-after``, ``graphc
# passes``, pipeline specs).
PASSES: dict[str, Pass] = {name: _load(name) for name in
                           ("autodiff", "constant_fold", "simplify", "cse", "dce", "checkpoint",
                            "fusion", "memplan")}

# Passes correctness needs: in every pipeline a model compiles (a spec without them gets them
# added), never skipped by opt-bisect. dce is one of them: code whose result is unused never
# runs, at any level (so a dead out-of-range slice is never an error).
REQUIRED: tuple[str, ...] = ("autodiff", "dce")

_ROUND = "constant_fold,simplify,cse"
_KERNELS = "checkpoint,fusion,memplan"          # the backend runs the kernels they give
LEVELS: tuple[str, ...] = (                     # -O0 .. -O3 as pipeline specs
    "autodiff,dce",
    "autodiff,simplify,cse,dce",
    f"autodiff,{_ROUND},dce,{_KERNELS}",        # the default
    f"autodiff,{_ROUND},{_ROUND},dce,{_KERNELS}",  # a 2nd round finds more
)

from graphc.passes.manager import (  # noqa: E402,F401
    PassStat,
    Step,
    describe_pipeline,
    format_pipeline,
    format_stats,
    parse_pipeline,
    pipeline,
    run_pipeline,
)

# The pass names of each level, in order.
PIPELINES: tuple[tuple[str, ...], ...] = tuple(tuple(s.name for s in parse_pipeline(spec))
                                               for spec in LEVELS)
