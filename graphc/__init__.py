"""graphc: a static computational-graph compiler for neural networks.

    model = graphc.compile("mlp.graph")
    params = model.init_params(seed=0)
    out, grads = model.value_and_grad(x=X, y=Y, **params)
"""
from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from graphc.errors import public
from graphc.ir.errors import (
    GraphArgumentTypeError,
    GraphCallError,
    GraphError,
    GraphFileError,
    GraphSyntaxError,
    GraphTypeError,
    GraphWarning,
    NumericsError,
)
from graphc.model import OPTIONS, Model, check_options

__all__ = ["compile", "compile_source", "Model", "GraphError", "GraphSyntaxError",
           "GraphTypeError", "GraphCallError", "GraphArgumentTypeError", "GraphFileError",
           "NumericsError", "GraphWarning", "__version__"]
__version__ = "0.1.0"


@public
def compile_source(text: str, graph: str | None = None, *, filename: str = "<source>",
                   consts: Mapping[str, Any] | None = None,
                   opt_level: int = 2, backend: str = "native", cache: bool = True,
                   check_numerics: bool = False, checkpoint: Any = None, debug: bool | None = None,
                   passes: str | None = None, optimizer: Any = None, monitor: bool = False,
                   micro_batches: int = 1, num_threads: int | None = None,
                   data_parallel: Any = None, flush_denormals: bool = False,
                   **unknown: Any) -> Model:
    """Compile ``.graph`` source text into a Model.

    graph: which graph of the file (needed when it defines several).
    filename: the file name errors give the text.
    consts: values for the file's ``const`` definitions by name, each of the kind the file's
        value has: ``{"HIDDEN": 128}``; ``{"DT": "f64"}`` for ``const DT = f32`` used as
        a dtype (``input x: DT[N, 784]``), which makes the whole model f64.
    opt_level: 0-3 (default 2).
    backend: "native", or "interp" (the NumPy reference interpreter).
    cache: reuse compiled code from the disk cache.
    check_numerics: raise NumericsError at the first op that makes a NaN/Inf; one in a
        backward names the gradient ("the gradient of sqrt produced NaN or Inf").
    checkpoint: "elementwise", "all" or {"budget": bytes, "N": n}.
    debug: bounds-check every load and store of the generated code (default: the
        GRAPHC_DEBUG environment variable).
    passes: the pass pipeline as a spec such as "autodiff,simplify,cse,dce" instead of
        opt_level's (the required autodiff and dce are added where missing; grammar:
        ``graphc.passes.manager``).
    optimizer: a ``graphc.optim`` optimiser, which adds the entry point ``train_step``
        (docs/training.md).
    monitor: train_step also reports per-param gradient and param norms.
    micro_batches: k: train_step accumulates the gradient over k equal slices of the batch.
    num_threads: threads for large matmuls, loops and reductions (default:
        GRAPHC_NUM_THREADS, else every core this process may use; results are bitwise the
        same for any count).
    data_parallel: a communicator from ``graphc.distributed.init()``: train_step averages
        gradients over every rank (needs an optimizer; docs/distributed.md).
    flush_denormals: every native call runs with subnormal floats flushed to zero and read
        as zero (FTZ+DAZ, on the pool's threads too; the caller's mode is back on return):
        x86 computes with subnormals, which Adam's decaying moments make, many times slower.
        Results may then differ from the IEEE reference interpreter where subnormals occur.
        No effect on a machine other than x86-64 or aarch64, nor on backend="interp"
        (docs/training.md).

    A misspelt option is a GraphError that names the one meant. A GraphError from here or
    from a Model's methods has a traceback that starts at the caller's line, without
    graphc's own frames (``GRAPHC_TRACEBACK=full`` keeps them)."""
    _no_such_option(unknown, "filename")
    if not isinstance(text, str):
        raise GraphArgumentTypeError(f"the source must be a str, got {type(text).__name__}")
    if graph is not None and not isinstance(graph, str):
        raise GraphArgumentTypeError(f"graph= must be a graph's name (a str), got "
                                     f"{type(graph).__name__}")
    options = dict(opt_level=opt_level, backend=backend, cache=cache,
                   check_numerics=check_numerics, checkpoint=checkpoint, debug=debug,
                   passes=passes, optimizer=optimizer, monitor=monitor,
                   micro_batches=micro_batches, num_threads=num_threads,
                   data_parallel=data_parallel, flush_denormals=flush_denormals)
    check_options(options)
    from graphc.ir.core import gc_paused
    with gc_paused():            # a compile's objects live until it ends: no sweep frees any
        return _compiled(text, graph, filename, consts, options)


def _compiled(text: str, graph: str | None, filename: str, consts: Mapping[str, Any] | None,
              options: dict[str, Any]) -> Model:
    from graphc.elaborate import elaborate_source
    start = time.perf_counter()
    graphs = elaborate_source(text, filename, consts)
    elaborated = time.perf_counter() - start
    if not graphs:
        raise GraphTypeError(f"{filename} defines no graph")
    if graph is None:
        if len(graphs) > 1:
            raise GraphTypeError(f"{filename} defines several graphs ({', '.join(graphs)}); "
                                 f"choose one with graph=")
        graph = next(iter(graphs))
    if graph not in graphs:
        from graphc.ir.ops.registry import suggest
        raise GraphTypeError(f"{filename} has no graph '{graph}'" + suggest(graph, list(graphs)))
    model = Model(graphs[graph], **options)
    model.compile_stats.add("parse+elaborate", elaborated)
    return model


@public
def compile(path: str | os.PathLike[str], graph: str | None = None,  # noqa: A001 - the API's name
            *, consts: Mapping[str, Any] | None = None,
            opt_level: int = 2, backend: str = "native", cache: bool = True,
            check_numerics: bool = False, checkpoint: Any = None, debug: bool | None = None,
            passes: str | None = None, optimizer: Any = None, monitor: bool = False,
            micro_batches: int = 1, num_threads: int | None = None,
            data_parallel: Any = None, flush_denormals: bool = False,
            **unknown: Any) -> Model:
    """Compile the ``.graph`` file at ``path``, e.g.
    ``graphc.compile("mlp.graph", consts={"HIDDEN": 128}, optimizer=graphc.optim.Adam())``.
    The options are ``compile_source``'s (its docstring says what each does)."""
    _no_such_option(unknown)
    options = {"consts": consts, "opt_level": opt_level, "backend": backend, "cache": cache,
               "check_numerics": check_numerics, "checkpoint": checkpoint, "debug": debug,
               "passes": passes, "optimizer": optimizer, "monitor": monitor,
               "micro_batches": micro_batches, "num_threads": num_threads,
               "data_parallel": data_parallel, "flush_denormals": flush_denormals}
    if not isinstance(path, (str, os.PathLike)):
        raise GraphArgumentTypeError(f"compile takes the path of a .graph file (a str or "
                                     f"PathLike), got {type(path).__name__}; for source text "
                                     f"use compile_source")
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise GraphFileError(f"cannot read {os.fspath(path)!s}: "
                             f"{getattr(e, 'strerror', None) or e}") from None
    return compile_source(text, graph, filename=os.fspath(path), **options)


def _no_such_option(unknown: Mapping[str, Any], *also: str) -> None:
    """A misspelt keyword is a GraphError that suggests the option meant."""
    if unknown:
        from graphc.ir.ops.registry import suggest
        name = next(iter(unknown))
        raise GraphArgumentTypeError(f"compile has no option '{name}'"
                                     + suggest(name, ["consts", *OPTIONS, *also]))
