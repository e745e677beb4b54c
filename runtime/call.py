"""The calling convention: check and convert the caller's arrays (docs/runtime.md), bind the
symbolic dims, allocate fresh outputs, take this thread's arena (grown if this binding needs
more), pack one pointer block and make one native call with the GIL released; error codes from
the native side become GraphCallError / NumericsError."""
from __future__ import annotations

import ctypes
import math
from typing import Any, Mapping

import numpy as np

from graphc.ir.args import Binder
from graphc.ir.errors import GraphCallError, GraphError, NumericsError
from graphc.ir.types import dim_str
from graphc.runtime.arena import Arena, arena_bytes
from graphc.runtime.plan import (
    DETAIL_WORDS,
    ERR_ALLOC,
    ERR_ARG_NUMERICS,
    ERR_BOUNDS,
    ERR_DEBUG_BOUNDS,
    ERR_INDEX,
    ERR_NUMERICS,
    Plan,
)

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
    ``check_inplace``), else into a fresh array."""
    func = plan.func
    shapes = result_shapes(plan, env)
    n = len(shapes)
    # one byte per result: 1 = written straight into the caller's array, 0 = staged in the
    # arena and copied at the end (any number of results; the arena key is a Python int)
    flags = np.ones(max(n, 1), np.uint8)
    outs: list[np.ndarray] = []
    mask = (1 << n) - 1
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
    dims = np.zeros(nsym + DETAIL_WORDS, np.int64)    # then room for a kernel's error details
    dims[:nsym] = [env[s] for s in plan.symbols]
    with (arena or Arena()).lease(arena_bytes(plan, env, mask)) as space:
        block = (ctypes.c_void_p * (len(arrays) + n + 3))(
            *[a.ctypes.data for a in arrays], *[o.ctypes.data for o in outs],
            dims.ctypes.data, flags.ctypes.data, space)
        rc = native(ctypes.addressof(block))
    if rc:
        raise error_for(plan, rc, env, dims[nsym:].tolist())
    return outs


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


def error_for(plan: Plan, rc: int, env: Mapping[str, int],
              detail: list[int] | None = None) -> GraphError:
    """The error a native error code stands for; ``detail`` holds the words a failing kernel
    wrote after the dims (all zero when it wrote none)."""
    kind, index = rc >> 24, rc & 0xFFFFFF
    d = detail or [0] * DETAIL_WORDS
    if kind == ERR_BOUNDS:
        c = plan.checks[index]
        v = c.value
        return GraphCallError(
            f"{v.op} is out of range at run time: needs {dim_str(c.lo)} <= {dim_str(c.x)}"
            + (f" <= {dim_str(c.hi)}" if c.hi is not None else "") + " with "
            + ", ".join(f"{k} = {n}" for k, n in sorted(env.items())), v.loc)
    if kind == ERR_INDEX:
        v = plan.step_of[index]
        indices = v.inputs[0] if v.op == "one_hot" else v.inputs[1]
        value, pos, bound = d[:3]
        shape = tuple(max(n, 0) for n in indices.type.concrete(env))
        at = list(int(i) for i in np.unravel_index(pos, shape)) if 0 <= pos < math.prod(
            shape) else None
        if v.op == "one_hot":
            return GraphCallError(f"a label is out of range [0, {bound}): {value}"
                                  + (f" at labels{at}" if at is not None else ""), v.loc)
        return GraphCallError(f"{v.op}: index {value} is out of range for an axis of size "
                              f"{bound}" + (f" at indices{at}" if at is not None else ""),
                              v.loc)
    if kind == ERR_NUMERICS:
        v = plan.step_of[index]
        return NumericsError(f"{v.op} produced NaN or Inf (result {v.type})", v.loc)
    if kind == ERR_ARG_NUMERICS:
        p = plan.func.params[index]
        return NumericsError(f"argument '{p.attrs['name']}' contains NaN or Inf", p.loc)
    if kind == ERR_ALLOC:
        return GraphCallError("out of memory for the workspace of this call")
    if kind == ERR_DEBUG_BOUNDS:
        return _debug_bounds(plan, index, d)
    return GraphError(f"native code returned unknown error code {rc}")


def _debug_bounds(plan: Plan, index: int, d: list[int]) -> GraphError:
    """A debug build caught an access outside its buffer: a bug in graphc, reported with
    where it happened so that it can be fixed."""
    steps, results = len(plan.steps), len(plan.func.results)
    loc = None
    if index < steps:
        v = plan.step_of[index]
        where, loc = f"kernel {index} ({v.op})", v.loc
    elif index < steps + results:
        where = f"the copy of result {index - steps}"
    else:
        where = f"the NaN check of argument '{plan.func.params[index - steps - results]}'"
    return GraphError(f"debug build: {where} accessed memory outside its buffer (element "
                      f"{d[0]} of buffer {d[1]}: {d[2]} bytes, {d[3]}-byte access); this is a "
                      f"graphc bug, please report it", loc)
