"""``native_method``: a CPython method (METH_FASTCALL | METH_KEYWORDS) written in LLVM IR whose
hit path never enters Python: a call whose arguments match a cached signature is checked,
given its results and run natively (see method.ll). It reads the ndarray fields it checks at
offsets measured on live arrays at start-up (as runtime/fastcall.py measures a tuple's), and is
off (None) on any interpreter it was not made for: a debug or free-threaded build, another
object layout, ``GRAPHC_NATIVE_CALL=0``."""
from __future__ import annotations

import ctypes
import os
import sys
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np

from graphc.runtime.errcodes import DETAIL_WORDS
from graphc.runtime.fastcall import _LOCK, _STATE, _digest, _tuple_offsets

# ``graphc_method(self, args, nargs, kwnames)`` (METH_FASTCALL | METH_KEYWORDS). The model's
# attribute (``attr`` of native_method) holds the address of its signature table (runtime/call.py
# ``Signatures``, whose layout the word offsets below follow). On a hit (keyword arguments only,
# or, with a scalar param, one or two exact dicts of arrays and a float first, as sgd_step and
# train_step take them; each array an exact C-contiguous aligned ndarray of a cached dtype and
# shape) it allocates the results with np.empty (or, for the params and state a step updates,
# takes the caller's own arrays, when no other argument shares their memory), takes this
# thread's workspace (runtime/arena.py: its five words, found in the thread state's dict under
# the arena's key; idle, big enough, not due to shrink), calls the compiled entry point (without
# the GIL for a large call) and returns {name: result}, two such dicts, result 0 alone or a
# tuple of every result. Anything else calls the Python method ``fallback(self, *args,
# **kwargs)``, which checks everything and raises the errors; so does a failing call that wrote
# nothing into its arguments (it runs again there, where the error is described). One that did
# (a step) must not run again: it calls ``failed(self, what)``, which raises the error that
# ``what`` describes (bytes: the code, the slot, the dims and the kernel's details). Between
# reading the table and calling, no Python code runs (np.empty may run some: what it could
# change is read again after it, and the arrays are held by references of the method's own),
# so the GIL keeps it consistent.
HEADER = 13        # words before the names in a table (runtime/call.py Signatures)
RECORD = 12        # words per param in a signature: dtype, rank, 8 dims, wanted flags, bytes
# The method's LLVM IR, with {NAME} for the object offsets measured at start-up.
METHOD_IR = Path(__file__).with_name("method.ll")
METH_FASTCALL_KEYWORDS = 0x80 | 0x02
NPY_C_CONTIGUOUS, NPY_ALIGNED, NPY_WRITEABLE = 0x1, 0x100, 0x400


class _MethodDef(ctypes.Structure):
    _fields_ = [("ml_name", ctypes.c_char_p), ("ml_meth", ctypes.c_void_p),
                ("ml_flags", ctypes.c_int), ("ml_doc", ctypes.c_char_p)]


def _word_at(obj: Any, off: int, ty: Any = ctypes.c_void_p) -> Any:
    return ty.from_address(id(obj) + off).value


def _array_offsets() -> dict[str, int] | None:
    """Where an ndarray keeps its type, data, ndim, shape, dtype and flags, found on live
    arrays of several ranks and flags (None: not all found, or not where NumPy keeps them)."""
    base = np.zeros(64, np.uint8)
    probes = [np.arange(6.0).reshape(2, 3), np.ones((2, 3, 4), np.float32)[:, ::2],
              np.zeros(5, np.int16), np.zeros((1, 2, 3, 4, 5)), base[1:9].view(np.int32),
              np.frombuffer(b"abcdefgh", np.uint8)]
    word, end = ctypes.sizeof(ctypes.c_void_p), np.ndarray.__basicsize__
    found: dict[str, int] = {}

    def shape_at(a: np.ndarray, off: int) -> bool:
        """Whether the word at ``off`` points at ``a.shape`` (only words that look like heap
        pointers are followed: inside the object, the others are small ints or NULL)."""
        p = _word_at(a, off)
        return bool(p) and p >= 1 << 16 and p % 8 == 0 and \
            all(ctypes.c_int64.from_address(p + 8 * k).value == n for k, n in enumerate(a.shape))
    for off in range(word, end - word + 1, word):
        if "type" not in found and all(_word_at(a, off) == id(np.ndarray) for a in probes):
            found["type"] = off
        if all(_word_at(a, off) == a.ctypes.data for a in probes):
            found.setdefault("data", off)
        if all(_word_at(a, off) == id(a.dtype) for a in probes):
            found.setdefault("descr", off)
        if "dims" not in found and off not in found.values() and \
                all(shape_at(a, off) for a in probes):
            found["dims"] = off
    for off in range(word, end - 3, 4):
        if all(_word_at(a, off, ctypes.c_int32) == a.ndim for a in probes):
            found.setdefault("nd", off)
        if all(_word_at(a, off, ctypes.c_int32) == a.flags.num for a in probes):
            found.setdefault("flags", off)
    want = NPY_C_CONTIGUOUS | NPY_ALIGNED
    ok = len(found) == 6 and [a.flags.num & want == want for a in probes] == \
        [True, False, True, True, False, True]
    return found if ok else None


def _interpreter_ok() -> bool:
    """An interpreter whose calling convention and object header this code was written for."""
    return (sys.implementation.name == "cpython" and (3, 9) <= sys.version_info[:2] < (3, 14)
            and not hasattr(sys, "gettotalrefcount")
            and not sysconfig.get_config_var("Py_GIL_DISABLED")
            and int(np.__version__.split(".")[0]) in (1, 2)
            and ctypes.sizeof(ctypes.c_void_p) == 8
            and _word_at(1.5, 8) == id(float) and _word_at(10 ** 30, 8) == id(int))


_API = ("Py_IncRef", "Py_DecRef", "PyObject_GetAttr", "PyLong_AsVoidPtr", "PyObject_Call",
        "PyThreadState_GetDict", "PyDict_GetItem", "PyEval_SaveThread",
        "PyEval_RestoreThread", "PyDict_New", "PyDict_SetItem", "PyErr_Clear",
        "PyObject_Vectorcall", "PyObject_RichCompareBool", "PyMethod_New",
        "PyTuple_Pack", "PyDict_Size", "PyFloat_AsDouble", "PyObject_CallFunctionObjArgs",
        "PyBytes_FromStringAndSize", "PyTuple_New", "PyTuple_SetItem")


def native_method(cls: type, attr: str, fallback: Any, doc: str = "",
                  name: str = "__call__", failed: Any = None) -> Any | None:
    """A method descriptor for ``cls`` running method.ll (the tables at ``getattr(self,
    attr)``), falling back to the Python function ``fallback``; ``failed(self, what)`` raises
    the error of a failing call that wrote into its arguments (needed only then). None where this
    interpreter or NumPy is not one it knows, or ``GRAPHC_NATIVE_CALL=0``."""
    if os.environ.get("GRAPHC_NATIVE_CALL", "1") == "0" or not _interpreter_ok():
        return None
    arr, tup = _array_offsets(), _tuple_offsets()
    if arr is None or tup is None:
        return None
    from graphc.runtime import jit  # lazy: LLVM only when a model is made
    attr = sys.intern(attr)
    subs = {"OFF_TYPE": arr["type"], "OFF_DATA": arr["data"], "OFF_ND": arr["nd"],
            "OFF_DIMS": arr["dims"], "OFF_DESCR": arr["descr"], "OFF_FLAGS": arr["flags"],
            "TUPLE_SIZE": tup[0], "TUPLE_ITEMS": tup[1], "HEADER": HEADER, "RECORD": RECORD,
            "DETAIL_WORDS": DETAIL_WORDS}
    text = METHOD_IR.read_text()
    for k, v in subs.items():
        text = text.replace("{" + k + "}", str(v))
    # what the code calls and points at is linked in by name: the object code holds no address
    # of this process, so it is compiled once per host and layout, then read from the cache
    imports = {f: ctypes.cast(getattr(ctypes.pythonapi, f), ctypes.c_void_p).value
               for f in _API}
    imports.update({"graphc_obj_ndarray": id(np.ndarray), "graphc_obj_long": id(int),
                    "graphc_obj_attr": id(attr), "graphc_obj_empty": id(np.empty),
                    "graphc_obj_fallback": id(fallback), "graphc_obj_dict": id(dict),
                    "graphc_obj_float": id(float),
                    "graphc_obj_failed": id(fallback if failed is None else failed)})
    with _LOCK:
        obj = jit.cached_object(f"native-method {_digest(text)}", lambda: text)
        loaded = jit.link(obj, ["graphc_method"], imports)
        mdef = _MethodDef(name.encode(), loaded.addresses["graphc_method"],
                          METH_FASTCALL_KEYWORDS, doc.encode() or None)
        new = ctypes.pythonapi.PyDescr_NewMethod
        new.restype, new.argtypes = ctypes.py_object, [ctypes.py_object, ctypes.c_void_p]
        descr = new(cls, ctypes.addressof(mdef))
        # all of it lives as long as the process: the code, the def, what the code points at
        _STATE.setdefault("methods", []).append((loaded, mdef, attr, fallback, failed,
                                                 np.empty))
    return descr
