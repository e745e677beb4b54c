"""The calling convention: check and convert the caller's arrays (docs/runtime.md), bind the
symbolic dims, allocate fresh outputs, take this thread's arena (grown if this binding needs
more), pack one pointer block and make one native call with the GIL released; error codes from
the native side become GraphCallError / NumericsError (runtime/errcodes.py). ``Signatures`` is
the table of the native method (runtime/fastmethod.py) that skips all of this for a call whose
arrays have the dtypes and shapes of an earlier one (``__call__``, ``value_and_grad``,
``sgd_step`` and train_step's results)."""
from __future__ import annotations

import ctypes
import threading
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np

from graphc.ir.args import Binder
from graphc.ir.errors import GraphCallError, GraphError
from graphc.ir.types import DType, TensorType
from graphc.runtime import fastcall
from graphc.runtime.arena import Arena, arena_bytes
from graphc.runtime.errcodes import DETAIL_WORDS, error_for
from graphc.runtime.fastmethod import (
    HEADER,
    NPY_ALIGNED,
    NPY_C_CONTIGUOUS,
    NPY_WRITEABLE,
    RECORD,
)
from graphc.runtime.plantypes import Plan

ENTRY_TYPE = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p)   # CFUNCTYPE drops the GIL


def prepare_args(plan: Plan, args: Mapping[str, Any], dims: Mapping[str, int] | None = None
                 ) -> tuple[list[np.ndarray], dict[str, int]]:
    """Arrays for every param, in order (contiguous, declared dtype), and the dim bindings,
    through the plan's binder (made once per plan)."""
    if plan.binder is None:
        plan.binder = Binder(plan.func, symbols=plan.symbols)
    arrays, env = plan.binder.bind(args, dims)
    return list(arrays.values()), env


def check_inplace(plan: Plan, inplace: Mapping[int, str], args: Mapping[str, Any],
                  shapes: list[tuple[int, ...]]) -> dict[int, np.ndarray]:
    """Result index -> the caller's own array that receives it (must fit exactly)."""
    out: dict[int, np.ndarray] = {}
    dtypes = _memo(plan).dtypes
    for r, name in inplace.items():
        if not 0 <= r < len(plan.func.results):
            raise GraphCallError(f"{plan.func.name} has no result {r} to write in place")
        a = args.get(name)
        if not isinstance(a, np.ndarray) or a.dtype != dtypes[r] or a.shape != shapes[r] \
                or not a.flags.c_contiguous or not a.flags.writeable:
            res = plan.func.results[r]
            raise GraphCallError(f"argument '{name}' cannot be updated in place: it must be a "
                                 f"writeable C-contiguous {res.type} array")
        out[r] = a
    return out


def invoke(plan: Plan, native: Any, args: Mapping[str, Any],
           inplace: Mapping[int, str] | None = None, dims: Mapping[str, int] | None = None,
           arena: Arena | None = None) -> list[np.ndarray]:
    """Check, convert and bind ``args`` by name, then run (the low-level entry; ``Model``
    prepares once and calls ``run`` itself)."""
    arrays, env = prepare_args(plan, args, dims)
    targets = check_inplace(plan, inplace or {}, args, result_shapes(plan, env)) \
        if inplace else {}
    return run(plan, native, arrays, env, targets, arena)


def result_shapes(plan: Plan, env: Mapping[str, int]) -> list[tuple[int, ...]]:
    """Each result's shape for this binding (cached per binding: the call path's hot spot)."""
    key = tuple(env.get(s, 0) for s in plan.symbols)
    shapes = plan.shape_cache.get(key)
    if shapes is None:
        # a negative extent means a bounds check will fail natively, before anything is written
        shapes = [tuple(max(d, 0) for d in r.type.concrete(env)) for r in plan.func.results]
        if len(plan.shape_cache) >= 256:
            plan.shape_cache.clear()
        plan.shape_cache[key] = shapes
    return shapes


def run(plan: Plan, native: Any, arrays: list[np.ndarray], env: Mapping[str, int],
        targets: Mapping[int, np.ndarray], arena: Arena | None = None) -> list[np.ndarray]:
    """One native call on prepared ``arrays`` (params in order, declared dtypes, contiguous)
    with dims ``env``; result ``r`` goes into ``targets[r]`` when given (checked by
    ``check_inplace``), else into a fresh array. ``native`` is the entry point's address (or
    its ctypes function). The pointer block is filled natively (runtime/fastcall.py)."""
    func = plan.func
    shapes = result_shapes(plan, env)
    n = len(shapes)
    # one byte per result: 1 = written straight into the caller's array, 0 = staged in the
    # arena and copied at the end (any number of results; the arena key is a Python int)
    mask = (1 << n) - 1
    if not targets:
        flags = _all_direct(n)
        outs = [allocate(shapes[r], func.results[r]) for r in range(n)]
    else:
        outs = [targets.get(r) for r in range(n)]
        for r in range(n):
            if outs[r] is None:
                outs[r] = allocate(shapes[r], func.results[r])
        flags, mask = _memo(plan).direct(plan, targets, arrays)
    nsym = len(plan.symbols)
    # the dims, then room for a kernel's error details
    dims = (ctypes.c_int64 * (nsym + DETAIL_WORDS))(*[env[s] for s in plan.symbols])
    k = len(arrays) + n
    block = (ctypes.c_void_p * (k + 3))()
    block[k] = ctypes.addressof(dims)
    block[k + 1] = ctypes.addressof(flags)
    arena = arena or Arena()
    nbytes = arena_bytes(plan, env, mask)
    ws = arena.take(nbytes)
    try:
        block[k + 2] = ws.address
        if isinstance(native, int):
            rc = fastcall.call(native, [*arrays, *outs], block)
        else:                       # a ctypes function or a wrapper around one (tests)
            for j, a in enumerate([*arrays, *outs]):
                block[j] = a.ctypes.data
            rc = native(ctypes.addressof(block))
    finally:
        arena.give(ws, nbytes)
    if rc:
        raise error_for(plan, rc, env, list(dims[nsym:]))
    return outs


_DIRECT: dict[int, Any] = {}


def _all_direct(n: int) -> Any:
    """The flags of a call that writes every result straight into a fresh array: a shared,
    read-only block of ones per result count."""
    flags = _DIRECT.get(n)
    if flags is None:
        flags = _DIRECT[n] = (ctypes.c_uint8 * max(n, 1))(*([1] * max(n, 1)))
    return flags


def allocate(shape: tuple[int, ...], result: Any) -> np.ndarray:
    """A fresh result array, or a GraphCallError when it is too large to allocate."""
    try:
        return np.empty(shape, result.dtype.np)
    except (MemoryError, ValueError):
        raise GraphCallError(f"a result of type {result.type} has shape {shape}, too large to "
                             f"allocate", result.loc) from None


class _Memo:
    """What the call path works out once per plan: the results' dtypes, and the flags of the
    last call that wrote results into the caller's arrays, valid while the call passes the very
    same array objects (held by weak references: the caller's params, step after step)."""

    def __init__(self, plan: Plan) -> None:
        self.dtypes = [r.dtype.np for r in plan.func.results]
        self.names = [p.attrs["name"] for p in plan.func.params]
        self.last: tuple[list[Any], Any, int] | None = None

    def direct(self, plan: Plan, targets: Mapping[int, np.ndarray],
               arrays: list[np.ndarray]) -> tuple[Any, int]:
        """The direct flags (ctypes bytes) and their bit mask for writing ``targets``."""
        n = len(self.dtypes)
        key = [*arrays, *[targets.get(r) for r in range(n)]]
        last = self.last
        if last is not None and len(last[0]) == len(key) and \
                all(w is None if a is None else w is not None and w() is a
                    for w, a in zip(last[0], key)):
            return last[1], last[2]
        flags = (ctypes.c_uint8 * max(n, 1))(*([1] * max(n, 1)))
        mask = (1 << n) - 1
        owns = [a.flags.owndata for a in arrays]
        for r, t in targets.items():
            if not direct(plan, r, t, arrays, self.names, owns):
                flags[r] = 0
                mask &= ~(1 << r)
        refs = [None if a is None else weakref.ref(a) for a in key]
        self.last = (refs, flags, mask)
        return flags, mask


def _memo(plan: Plan) -> _Memo:
    memo = vars(plan).get("_call_memo")
    if memo is None:
        memo = vars(plan)["_call_memo"] = _Memo(plan)
    return memo


def direct(plan: Plan, r: int, target: np.ndarray, arrays: list[np.ndarray],
           names: list[str] | None = None, owns: list[bool] | None = None) -> bool:
    """Whether result ``r`` may be written straight into the caller's ``target`` (else it is
    staged in the arena and copied at the end): ``target`` shares no memory with any argument,
    or it is exactly the array of the param the plan lets this result overwrite. (Two distinct
    arrays that each own their data share none: no call to may_share_memory for them.)"""
    names = names or [p.attrs["name"] for p in plan.func.params]
    owns = owns or [a.flags.owndata for a in arrays]
    mine = target.flags.owndata
    shared = [k for k, a in enumerate(arrays)
              if a is target or not (mine and owns[k]) and np.may_share_memory(a, target)]
    if not shared:
        return True
    a = arrays[shared[0]]
    return len(shared) == 1 and plan.inplace.get(r) == names[shared[0]] and \
        a.ctypes.data == target.ctypes.data and a.nbytes == target.nbytes


class Signatures:
    """The native method's table for one entry point (runtime/method.ll reads
    it): a header, the interned names of params and results, which param's array receives each
    result (-1: a fresh array), where each param comes from and its dict key, then ``SLOTS``
    signatures, each what a call with arrays of exactly these dtypes and shapes needs (dims,
    arena bytes, each array's wanted flags and bytes, np.empty's arguments per result). Filled
    by ``install`` after a call that went through the Python path; a slot is invalidated before
    it is rewritten, all with the GIL held."""

    SLOTS = 4
    MAX_RANK, MAX_ARRAYS, MAX_SYMBOLS = 8, 64, 64
    BIG = 1 << 16        # calls touching more bytes than this release the GIL
    ALONE, ALL = -1, -2  # ``split``: the method returns result 0 alone, a tuple of all

    def __init__(self, plan: Plan, address: int, arena: Arena, names: list[str],
                 results: list[str], split: int = 0, dicts: int = 0,
                 sources: list[int] | None = None, keys: list[str] | None = None,
                 targets: list[int] | None = None) -> None:
        """``names``: the params that take arrays, in order. With ``dicts`` (1 or 2), one f64
        param follows them: the method takes ``dicts`` dicts of arrays, then that param as a
        float, then keywords (sgd_step, train_step), and param ``j`` comes from keyword
        ``names[j]`` (``sources[j]`` -1) or from dict ``sources[j]`` under ``keys[j]``. ``split``
        > 0: the method returns two dicts, of the first ``split`` results and of the rest
        (value_and_grad); ``ALONE``: result 0 alone; ``ALL``: a tuple of every result; else one
        dict of them all. ``targets[r]``: the param whose array receives result ``r`` (the
        updates of sgd_step and train_step), -1 for a fresh array; a failing call that writes
        into its arguments is never run again: ``failure(what)`` is its error."""
        import sys
        self.plan, self.arena = plan, arena
        self.names = [sys.intern(n) for n in names]
        self.results = [sys.intern(n) for n in results]
        p, r, nsym = len(names), len(results), len(plan.symbols)
        self.targets = list(targets or [-1] * r)
        self.sources = list(sources or [-1] * p)
        self.keys = [sys.intern(k) for k in (keys or names)]
        params = plan.func.params
        self.usable = p <= self.MAX_ARRAYS and 0 < r <= self.MAX_ARRAYS and \
            nsym <= self.MAX_SYMBOLS and len(set(self.names)) == p and \
            (0 <= split <= r or split in (self.ALONE, self.ALL)) and len(self.targets) == r \
            and all(-1 <= t < p for t in self.targets) and 0 <= dicts <= 2 and \
            len(params) == p + bool(dicts) and len(self.sources) == len(self.keys) == p and \
            all(-1 <= s < dicts for s in self.sources) and \
            (not dicts or params[-1].type == TensorType(DType.f64, ()))
        self.stride = 3 + nsym + RECORD * p + r
        self.base = HEADER + 3 * p + 2 * r
        self.words = (ctypes.c_int64 * (self.base + self.SLOTS * self.stride))()
        # which results the code writes straight into their arrays (1), which it stages in the
        # arena and copies at the end (0: a param the plan may not overwrite while it runs)
        self.direct = [t < 0 or plan.inplace.get(k) == self.names[t]
                       for k, t in enumerate(self.targets)]
        self.mask = sum(1 << k for k, d in enumerate(self.direct) if d)
        self.flags = _all_direct(r) if all(self.direct) else \
            (ctypes.c_uint8 * r)(*map(int, self.direct))
        writes = any(t >= 0 for t in self.targets)
        self.keep: list[Any] = [None] * self.SLOTS       # what each slot's words point at
        self.next = 0
        self._lock = threading.Lock()
        w = self.words
        w[0:HEADER] = [p, r, nsym, self.SLOTS, self.stride, address, id(arena.key),
                       ctypes.addressof(self.flags), Arena.SHRINK_AFTER, Arena.SHRINK_RATIO,
                       split, dicts, int(writes)]
        at = HEADER + p + r
        w[HEADER:at] = [id(n) for n in self.names + self.results]
        w[at:at + r] = self.targets
        w[at + r:at + r + p] = self.sources
        w[at + r + p:self.base] = [id(k) for k in self.keys]
        self.address = ctypes.addressof(self.words) if self.usable else 0

    def install(self, arrays: list[np.ndarray], env: Mapping[str, int]) -> None:
        """Remember the signature of a call that ran on ``arrays`` (the array params in order,
        as the caller passed them) bound to ``env``, if the native path can take it."""
        if not self.usable:
            return
        key = [(id(a.dtype), a.shape) if type(a) is np.ndarray else None for a in arrays]
        if any(k is not None and k[0] == key for k in self.keep):
            return                                      # the usual case: known already
        if any(type(a) is not np.ndarray or a.ndim > self.MAX_RANK or not a.size or
               not a.flags.c_contiguous or not a.flags.aligned for a in arrays):
            return
        if any(not arrays[t].flags.writeable for t in self.targets if t >= 0):
            return
        shapes = result_shapes(self.plan, env)
        if any(not np.prod(s, dtype=np.int64) for s in shapes):
            return                       # empty results: the Python path, as always
        with self._lock:
            if all(k is None or k[0] != key for k in self.keep):
                self._install(key, arrays, env, shapes)

    def _install(self, key: list, arrays: list[np.ndarray], env: Mapping[str, int],
                 shapes: list[tuple[int, ...]]) -> None:
        plan = self.plan
        dims = [env[s] for s in plan.symbols]
        nbytes = arena_bytes(plan, env, self.mask)
        touched = nbytes + sum(a.nbytes for a in arrays) + sum(
            int(np.prod(s, dtype=np.int64)) * r.dtype.np.itemsize
            for s, r in zip(shapes, plan.func.results))
        empties = [(tuple(s), r.dtype.np) for s, r in zip(shapes, plan.func.results)]
        words = [1, int(touched > self.BIG), nbytes, *dims]
        written = {t for t in self.targets if t >= 0}
        for j, a in enumerate(arrays):
            want = NPY_C_CONTIGUOUS | NPY_ALIGNED | (NPY_WRITEABLE if j in written else 0)
            words += [id(a.dtype), a.ndim, *a.shape, *[0] * (self.MAX_RANK - a.ndim), want,
                      a.nbytes]
        words += [id(e) for e in empties]
        k, self.next = self.next, (self.next + 1) % self.SLOTS
        at = self.base + k * self.stride
        self.words[at] = 0                              # invalid while it is rewritten
        self.keep[k] = (key, empties, [a.dtype for a in arrays])
        self.words[at + 1:at + self.stride] = words[1:]
        self.words[at] = 1

    def failure(self, what: bytes) -> GraphError:
        """The error of a native call that failed, from what the method says of it (i64
        words: the code, the slot, the dims, the kernel's details)."""
        w, nsym = np.frombuffer(what, np.int64).tolist(), len(self.plan.symbols)
        env = dict(zip(self.plan.symbols, w[2:2 + nsym]))
        return error_for(self.plan, w[0], env, w[2 + nsym:2 + nsym + DETAIL_WORDS])
