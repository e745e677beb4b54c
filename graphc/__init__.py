"""graphc: a static computational-graph compiler for neural networks.

    model = graphc.compile("mlp.graph")
    params = model.init_params(seed=0)
    out, grads = model.value_and_grad(x=X, y=Y, **params)
"""
from __future__ import annotations

import os
from typing import Any

from ir.errors import (GraphCallError, GraphError, GraphFileError, GraphSyntaxError,
                       GraphTypeError, GraphWarning, NumericsError)
from graphc.model import Model

__all__ = ["compile", "compile_source", "Model", "GraphError", "GraphSyntaxError",
           "GraphTypeError", "GraphCallError", "GraphFileError", "NumericsError", "GraphWarning",
           "__version__"]
__version__ = "0.1.0"


def compile_source(text: str, graph: str | None = None, *, filename: str = "<source>",
                   **options: Any) -> Model:
    """Compile ``.graph`` source text. ``options``: opt_level (0-3, default 2), backend
    ("native" | "interp"), cache, check_numerics."""
    from graphc.elaborate import elaborate_source
    graphs = elaborate_source(text, filename)
    if not graphs:
        raise GraphTypeError(f"{filename} defines no graph")
    if graph is None:
        if len(graphs) > 1:
            raise GraphTypeError(f"{filename} defines several graphs ({', '.join(graphs)}); "
                                 f"choose one with graph=")
        graph = next(iter(graphs))
    if graph not in graphs:
        from ir.ops.registry import suggest
        raise GraphTypeError(f"{filename} has no graph '{graph}'" + suggest(graph, list(graphs)))
    return Model(graphs[graph], **options)


def compile(path: str | os.PathLike[str], graph: str | None = None,  # noqa: A001 - SPEC name
            **options: Any) -> Model:
    """Compile the ``.graph`` file at ``path``; see ``compile_source`` for the options."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise GraphFileError(f"cannot read {os.fspath(path)!s}: "
                             f"{getattr(e, 'strerror', None) or e}") from None
    return compile_source(text, graph, filename=os.fspath(path), **options)
