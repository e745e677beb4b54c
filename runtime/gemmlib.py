"""The GEMM library: the macro-kernels, B's packing and their worker-pool tasks for f32 and f64
(runtime/gemm.py) in one object of their own. They do not depend on the model, so they are
compiled once per host and graphc version (kept in the disk cache, as a model's object code
is) and linked once per process; each model's module only declares them and links against
their addresses (``symbols``)."""
from __future__ import annotations

import re
import threading
from typing import Any

import llvmlite
import llvmlite.ir as ll

from graphc.ir.types import DType
from graphc.runtime import gemm, gemmdriver, jit, pool
from graphc.runtime.cache import cache_key, graphc_version

PREFIX = b"graphc.gemm."        # how a model's object code names what it calls here
SEP = b"\0\0graphc.gemm.object\0\0"   # between the cached names and the object code
OPT_LEVEL = 3                   # with loop unrolling, which the macro-kernels need (runtime/jit)
_LOCK = threading.Lock()
_LOADED: dict[DType, Any] = {}
DTYPES = (DType.f32, DType.f64)


def build(dtype: DType) -> tuple[str, list[str]]:
    """The ``dtype`` half of the library: its LLVM IR text and the functions it defines."""
    module = ll.Module(name=f"graphc.gemm.{dtype.name}")
    setattr(module, gemm.LIBRARY, True)
    lanes = gemm.blocking(dtype).lanes
    for rows in ("big", "small", "one"):
        blk = gemm.blocking(dtype, rows)
        gemm.macro(module, dtype, blk)
        gemm.task(module, dtype, blk)
    gemm.rows_task(module, dtype, gemm.blocking(dtype))
    gemm.pack_a(module, dtype)
    gemm.pack_a_task(module, dtype, gemm.blocking(dtype).mc)
    gemm.pack_b(module, dtype, lanes)
    gemm.pack_task(module, dtype, lanes)
    gemmdriver.driver(module, dtype)
    gemmdriver.epilogue_task(module, dtype)
    # "no-builtins": LLVM would turn the packing's row copies and the edge tiles' stores into
    # calls of memcpy for 40-128 bytes (6-7% of a CNN's step went to those calls); llvmlite
    # has no API for string attributes, so it goes into the text of each definition
    text = re.sub(r'(define [^\n]*\)) noinline', r'\1 noinline "no-builtins"', str(module))
    return text, [f.name for f in module.functions if f.blocks]


def needed(obj: bytes) -> list[DType]:
    """The dtypes whose half of the library object code ``obj`` calls."""
    return [dt for dt in DTYPES if PREFIX in obj and re.search(
        rb"graphc\.gemm\.\w+\." + dt.name.encode() + rb"(\b|\.)", obj)]


def symbols(dtypes: list[DType] | tuple[DType, ...] = ()) -> dict[str, int]:
    """Name -> address of the library functions for ``dtypes``, each half compiled (or read
    from the disk cache) and linked on first use: an f32 model never waits for f64's."""
    out: dict[str, int] = {}
    with _LOCK:
        for dtype in dtypes:
            if dtype not in _LOADED:
                _LOADED[dtype] = _load(dtype)
            out.update(_LOADED[dtype].addresses)
    return out


def _load(dtype: DType) -> Any:
    key = cache_key("gemm-library", dtype.name, graphc_version(), llvmlite.__version__,
                    jit.host_id())
    store = jit.open_cache(quiet=True)
    blob = store.get(key) if store is not None else None
    if blob is None or SEP not in blob:
        text, names = build(dtype)
        blob = "\n".join(names).encode() + SEP + jit.compile_object(text, OPT_LEVEL)
        if store is not None:
            store.put(key, blob)
    head, obj = bytes(blob).split(SEP, 1)
    return jit.link(obj, head.decode().split("\n"), pool.POOL.symbols(1))
