"""The GEMM library: the macro-kernels, B's packing and their worker-pool tasks for f32 and f64
(runtime/gemm.py) in one object of their own. They do not depend on the model, so they are
compiled once per host and graphc version (kept in the disk cache, as a model's object code
is) and linked once per process; each model's module only declares them and links against
their addresses (``symbols``)."""
from __future__ import annotations

import threading
from typing import Any

import llvmlite
import llvmlite.ir as ll

from graphc.ir.types import DType
from graphc.runtime import gemm, jit, pool
from graphc.runtime.cache import cache_key, graphc_version

PREFIX = b"graphc.gemm."        # how a model's object code names what it calls here
SEP = b"\0\0graphc.gemm.object\0\0"   # between the cached names and the object code
OPT_LEVEL = 2                   # what a model's kernels were compiled at when they held these
_LOCK = threading.Lock()
_LOADED: list[Any] = []


def build() -> tuple[str, list[str]]:
    """The library's LLVM IR text and the functions it defines."""
    module = ll.Module(name="graphc.gemm")
    setattr(module, gemm.LIBRARY, True)
    for dtype in (DType.f32, DType.f64):
        lanes = gemm.blocking(dtype).lanes
        for rows in ("big", "small", "one"):
            blk = gemm.blocking(dtype, rows)
            gemm.macro(module, dtype, blk)
            gemm.task(module, dtype, blk)
        gemm.pack_b(module, dtype, lanes)
        gemm.pack_task(module, dtype, lanes)
    return str(module), [f.name for f in module.functions if f.blocks]


def symbols() -> dict[str, int]:
    """Name -> address of every library function, compiled (or read from the disk cache)
    and linked on first use."""
    with _LOCK:
        if not _LOADED:
            key = cache_key("gemm-library", graphc_version(), llvmlite.__version__,
                            jit.host_id())
            store = jit.open_cache()
            blob = store.get(key) if store is not None else None
            if blob is None or SEP not in blob:
                text, names = build()
                blob = "\n".join(names).encode() + SEP + jit.compile_object(text, OPT_LEVEL)
                if store is not None:
                    store.put(key, blob)
            head, obj = bytes(blob).split(SEP, 1)
            names = head.decode().split("\n")
            _LOADED.append(jit.link(obj, names, pool.POOL.symbols(1)))
        return dict(_LOADED[0].addresses)
