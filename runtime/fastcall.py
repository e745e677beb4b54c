"""The thin end of a call: one native trampoline reads the data pointer of every array in a
tuple straight from the array objects, writes them into the entry point's argument block after
any fixed words, and calls the entry point, all with the GIL released (ctypes passes the tuple
as one object pointer). From Python, ``arr.ctypes.data`` costs about a microsecond per array;
here the whole block costs less than one.

The field offsets (where a tuple keeps its items, where an ndarray keeps its data pointer)
are measured on live objects at start-up, not assumed, so a CPython or NumPy with another
object layout still works; when the measurement fails, ``pointers`` falls back to Python.
The native method that skips Python altogether on a repeated call is runtime/fastmethod.py."""
from __future__ import annotations

import ctypes
import hashlib
import threading
from typing import Any, Sequence

import numpy as np

TRAMPOLINE = "graphc_call"
_IR = """
define i32 @graphc_call(ptr %fn, ptr %tuple, ptr %block) {
entry:
  %sizep = getelementptr i8, ptr %tuple, i64 {size}
  %n = load i64, ptr %sizep
  %first = getelementptr i8, ptr %tuple, i64 {items}
  br label %head
head:
  %i = phi i64 [ 0, %entry ], [ %i1, %body ]
  %more = icmp slt i64 %i, %n
  br i1 %more, label %body, label %call
body:
  %slot = getelementptr ptr, ptr %first, i64 %i
  %obj = load ptr, ptr %slot
  %field = getelementptr i8, ptr %obj, i64 {data}
  %p = load ptr, ptr %field
  %out = getelementptr ptr, ptr %block, i64 %i
  store ptr %p, ptr %out
  %i1 = add i64 %i, 1
  br label %head
call:
  %rc = call i32 %fn(ptr %block)
  ret i32 %rc
}
"""

_LOCK = threading.Lock()
_STATE: dict[str, Any] = {}
_FN_TYPE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.py_object, ctypes.c_void_p)


def _data_offset() -> int | None:
    """Where an ndarray object keeps its data pointer, found by looking (None: not found)."""
    probes = [np.arange(k + 1, dtype=np.float64) for k in range(3)]
    for off in range(ctypes.sizeof(ctypes.c_void_p), 128, ctypes.sizeof(ctypes.c_void_p)):
        if all(ctypes.c_void_p.from_address(id(a) + off).value == a.ctypes.data for a in probes):
            return off
    return None


def _tuple_offsets() -> tuple[int, int] | None:
    """Where a tuple keeps its length and its item pointers (None: not where a CPython tuple
    keeps them)."""
    word = ctypes.sizeof(ctypes.c_void_p)
    items, size = tuple.__basicsize__, tuple.__basicsize__ - word   # PyVarObject: ob_size last
    probes = [tuple(object() for _ in range(k)) for k in (1, 2, 5)]
    ok = all(ctypes.c_ssize_t.from_address(id(p) + size).value == len(p) and
             all(ctypes.c_void_p.from_address(id(p) + items + k * word).value == id(x)
                 for k, x in enumerate(p)) for p in probes)
    return (size, items) if ok else None


def _digest(text: str) -> str:
    """What names a runtime object's IR in the disk cache (its text varies with the layouts
    measured at start-up)."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def trampoline() -> Any | None:
    """The native trampoline ``(entry, tuple, block) -> code``, built once with the offsets
    measured here; None where the object layout could not be measured."""
    with _LOCK:
        if "fn" not in _STATE:
            tup, data = _tuple_offsets(), _data_offset()
            if tup is None or data is None:
                _STATE["fn"] = None
            else:
                from graphc.runtime import jit  # lazy: LLVM only at the first native call
                text = (_IR.replace("{size}", str(tup[0])).replace("{items}", str(tup[1]))
                        .replace("{data}", str(data)))
                # cached like every runtime object, so a warm process never loads LLVM
                loaded = jit.link(jit.cached_object(f"trampoline {_digest(text)}",
                                                    lambda: text), [TRAMPOLINE])
                _STATE["loaded"] = loaded
                _STATE["fn"] = _FN_TYPE(loaded.addresses[TRAMPOLINE])
        return _STATE["fn"]


def call(entry: int, arrays: Sequence[np.ndarray], block: Any) -> int:
    """Run the entry point at address ``entry`` with ``block`` (a ctypes pointer array) whose
    first len(arrays) words become the arrays' data pointers (the caller set the words after
    them). Returns the entry point's code."""
    fn = _STATE.get("fn") if "fn" in _STATE else trampoline()
    if fn is None:
        for k, a in enumerate(arrays):
            block[k] = a.ctypes.data
        return ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)(entry)(ctypes.addressof(block))
    return fn(entry, tuple(arrays), block)
