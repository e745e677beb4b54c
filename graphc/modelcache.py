"""A whole-model cache hit: compiling the same source with the same options again loads the
optimised functions, their shape requirements and each entry point's plan and object-code key
from the disk cache, so it runs no pass and makes no plan. The bundle is pickled next to the
object code, under a key of everything that shapes it: graphc's own sources, the graph's source
text, file name, name and consts, and the compile options. Anything that goes wrong (an entry
from another version, a graph too deep to pickle) is a miss, never an error."""
from __future__ import annotations

import hashlib
import pickle
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from graphc.program import GraphDef

# pickle recurses once per value along the IR's longest chain of inputs: graphs deeper than
# this (long unrolled loops) are compiled from their source every time, as before
DEPTH = 6000
_SOURCES: list[str] = []


def sources_hash() -> str:
    """A hash of every source file of graphc (front end, IR, passes, runtime): a bundle holds
    their output, so editing any one of them must miss."""
    if not _SOURCES:
        from graphc.ir import core
        from graphc.ir.ops import registry
        from graphc.passes import manager
        from graphc.runtime import cache
        h = hashlib.sha256()
        for module in (__file__, core.__file__, registry.__file__, manager.__file__,
                       cache.__file__):
            folder = Path(module).parent
            for p in sorted(folder.glob("*.py")) + sorted(folder.glob("*.lark")):
                h.update(p.name.encode() + b"\0" + p.read_bytes())
        _SOURCES.append(h.hexdigest()[:24])
    return _SOURCES[0]


def key(graph: GraphDef, options: Mapping[str, Any], host: str) -> str | None:
    """The bundle's key, or None when the options cannot be told apart by their text (an
    object without a faithful repr)."""
    import llvmlite
    import numpy as np
    parts = ["model-bundle", sources_hash(), graph.source, graph.filename, graph.name,
             repr(graph.consts), host, llvmlite.__version__, np.__version__,
             f"{sys.version_info[:3]}"]
    for name in sorted(options):
        text = repr(options[name])
        if " at 0x" in text:        # a default object repr: two different objects may match
            return None
        parts.append(f"{name}={text}")
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


def load(store: Any, k: str) -> tuple[Any, ...] | None:
    """The bundle stored under ``k``, or None."""
    blob = store.get(k) if store is not None else None
    if blob is None:
        return None
    limit = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(max(limit, DEPTH + 200))
        got = pickle.loads(blob)
    except Exception:  # noqa: BLE001 - another version's entry, a damaged file: a miss
        return None
    finally:
        sys.setrecursionlimit(limit)
    return got if isinstance(got, tuple) else None


def save(store: Any, k: str, bundle: tuple[Any, ...]) -> None:
    """Store ``bundle`` under ``k``; a graph too deep to pickle is skipped."""
    if store is None:
        return
    limit = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(max(limit, DEPTH))
        blob = pickle.dumps(bundle, protocol=pickle.HIGHEST_PROTOCOL)
    except (RecursionError, pickle.PicklingError, TypeError, AttributeError):
        return
    finally:
        sys.setrecursionlimit(limit)
    store.put(k, blob)
