"""The calling convention: check and convert the caller's arrays (docs/runtime.md), bind the
symbolic dims, allocate fresh outputs, take this thread's arena (grown if this binding needs
more), pack one pointer block and make one native call with the GIL released; error codes from
the native side become GraphCallError / NumericsError (runtime/errcodes.py)."""
from __future__ import annotations

import ctypes
from typing import Any, Mapping

import numpy as np

from graphc.ir.args import Binder
from graphc.ir.errors import GraphCallError
from graphc.runtime import fastcall
from graphc.runtime.arena import Arena, arena_bytes
from graphc.runtime.errcodes import DETAIL_WORDS, error_for
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
    for r, name in inplace.items():
        if not 0 <= r < len(plan.func.results):
            raise GraphCallError(f"{plan.func.name} has no result {r} to write in place")
        a = args.get(name)
        res = plan.func.results[r]
        if not isinstance(a, np.ndarray) or a.dtype != res.dtype.np or a.shape != shapes[r] \
                or not a.flags.c_contiguous or not a.flags.writeable:
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
        flags = (ctypes.c_uint8 * max(n, 1))(*([1] * max(n, 1)))
        outs = []
        for r in range(n):
            t = targets.get(r)
            if t is None:
                outs.append(allocate(shapes[r], func.results[r]))
            else:
                outs.append(t)
                if not direct(plan, r, t, arrays):
                    flags[r] = 0
                    mask &= ~(1 << r)
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


def direct(plan: Plan, r: int, target: np.ndarray, arrays: list[np.ndarray]) -> bool:
    """Whether result ``r`` may be written straight into the caller's ``target`` (else it is
    staged in the arena and copied at the end): ``target`` shares no memory with any argument,
    or it is exactly the array of the param the plan lets this result overwrite."""
    names = [p.attrs["name"] for p in plan.func.params]
    shared = [k for k, a in enumerate(arrays) if np.may_share_memory(a, target)]
    if not shared:
        return True
    a = arrays[shared[0]]
    return len(shared) == 1 and plan.inplace.get(r) == names[shared[0]] and \
        a.ctypes.data == target.ctypes.data and a.nbytes == target.nbytes
