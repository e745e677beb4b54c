"""graphc's passes, each a pure ``Func -> Func`` named after its module, and the pipelines that
``-O0`` .. ``-O3`` run. ``run_pipeline`` (passes/manager.py) runs one, verifying after each pass.
Autodiff runs first; the optimisations leave a function that still holds grad ops unchanged."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import NamedTuple

from graphc.ir.core import Func


class Pass(NamedTuple):
    run: Callable[[Func], Func]
    doc: str                        # one line: what it does


def _load(name: str) -> Pass:
    """The pass in ``passes/<name>.py``; its doc is the first sentence of the module docstring."""
    mod = importlib.import_module(f"{__name__}.{name}")
    text = " ".join((mod.__doc__ or name).replace("``", "").split())
    return Pass(mod.run, text.split(". ")[0].rstrip(".") + ".")


# Ordered as in the -O3 pipeline; the file name is the pass name (``--dump-after``, ``graphc
# passes``).
PASSES: dict[str, Pass] = {name: _load(name) for name in
                           ("autodiff", "constant_fold", "simplify", "cse", "dce", "checkpoint",
                            "fusion", "memplan")}

# Passes correctness needs: in every pipeline, never skipped by opt-bisect.
# dce is one of them: code whose result is unused never runs, at any level (so a dead
# out-of-range slice is never an error).
REQUIRED: tuple[str, ...] = ("autodiff", "dce")

_ROUND = ("constant_fold", "simplify", "cse")
_KERNELS = ("checkpoint", "fusion", "memplan")       # the backend runs the kernels they give
PIPELINES: tuple[tuple[str, ...], ...] = (
    ("autodiff", "dce"),                             # -O0
    ("autodiff", "simplify", "cse", "dce"),          # -O1
    ("autodiff",) + _ROUND + ("dce",) + _KERNELS,    # -O2 (default)
    ("autodiff",) + _ROUND + _ROUND + ("dce",) + _KERNELS,  # -O3: a 2nd round finds more
)

from graphc.passes.manager import describe_pipeline, format_stats, run_pipeline  # noqa: E402,F401
