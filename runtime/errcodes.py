"""The error codes generated code returns, encoded and decoded here only. A code is
``kind << 24 | index``: ``kind`` says what failed, ``index`` which check, step, result or param
(see each kind). A kernel may also describe its error in DETAIL_WORDS i64 words after the
run-time dims. ``error_for`` turns a code into the GraphCallError / NumericsError the caller
sees, naming the op and source line from the plan."""
from __future__ import annotations

import math
from collections.abc import Mapping
from enum import IntEnum

import numpy as np

from graphc.ir.errors import GraphCallError, GraphError, NumericsError
from graphc.ir.types import dim_str
from graphc.runtime.plantypes import Plan


class ErrorKind(IntEnum):
    BOUNDS = 1              # index: the plan's check (Plan.checks) that failed
    NUMERICS = 2            # index: the step whose output holds NaN or Inf (check_numerics)
    ARG_NUMERICS = 3        # index: the param that holds NaN or Inf (check_numerics)
    ALLOC = 4               # index: the step whose scratch memory (GEMM packing) malloc refused
    INDEX = 5               # index: the step; details (bad value, its flat position, bound)
    # A debug build's access outside its buffer: index = the step (< len(steps)), else
    # len(steps) + r for the copy of result r, else len(steps) + len(results) + k for the check
    # of param k. Details: (element index, buffer number, buffer bytes, access bytes).
    DEBUG_BOUNDS = 6


# the names the code generator uses (ints: ``ERR_INDEX << 24 | s.index`` is a plain int)
ERR_BOUNDS = int(ErrorKind.BOUNDS)
ERR_NUMERICS = int(ErrorKind.NUMERICS)
ERR_ARG_NUMERICS = int(ErrorKind.ARG_NUMERICS)
ERR_ALLOC = int(ErrorKind.ALLOC)
ERR_INDEX = int(ErrorKind.INDEX)
ERR_DEBUG_BOUNDS = int(ErrorKind.DEBUG_BOUNDS)
# i64 words after the run-time dims where a failing kernel describes its error
DETAIL_WORDS = 4
INDEX_BITS = 24


def encode(kind: ErrorKind | int, index: int) -> int:
    """The i32 code of error ``kind`` at ``index``."""
    if not 0 <= index < 1 << INDEX_BITS:
        raise ValueError(f"error index {index} does not fit in {INDEX_BITS} bits")
    return int(kind) << INDEX_BITS | index


def decode(rc: int) -> tuple[int, int]:
    """(kind, index) of code ``rc``."""
    return rc >> INDEX_BITS, rc & ((1 << INDEX_BITS) - 1)


def error_for(plan: Plan, rc: int, env: Mapping[str, int],
              detail: list[int] | None = None) -> GraphError:
    """The error a native error code stands for; ``detail`` holds the words a failing kernel
    wrote after the dims (all zero when it wrote none)."""
    kind, index = decode(rc)
    d = detail or [0] * DETAIL_WORDS
    if kind == ErrorKind.BOUNDS:
        c = plan.checks[index]
        v = c.value
        return GraphCallError(
            f"{v.op} is out of range at run time: needs {dim_str(c.lo)} <= {dim_str(c.x)}"
            + (f" <= {dim_str(c.hi)}" if c.hi is not None else "") + " with "
            + ", ".join(f"{k} = {n}" for k, n in sorted(env.items())), v.loc)
    if kind == ErrorKind.INDEX:
        return _index_error(plan, index, env, d)
    if kind == ErrorKind.NUMERICS:
        v = plan.step_of[index]
        return NumericsError.produced_by(v.op, v.type, v.loc)
    if kind == ErrorKind.ARG_NUMERICS:
        p = plan.func.params[index]
        return NumericsError(f"argument '{p.attrs['name']}' contains NaN or Inf", p.loc)
    if kind == ErrorKind.ALLOC:
        v = plan.step_of[index]
        return GraphCallError(f"out of memory for the scratch buffers of {v.op}", v.loc)
    if kind == ErrorKind.DEBUG_BOUNDS:
        return _debug_bounds(plan, index, d)
    return GraphError(f"native code returned unknown error code {rc}")


def _index_error(plan: Plan, index: int, env: Mapping[str, int], d: list[int]) -> GraphError:
    v = plan.step_of[index]
    indices = v.inputs[0] if v.op == "one_hot" else v.inputs[1]
    value, pos, bound = d[:3]
    shape = tuple(max(n, 0) for n in indices.type.concrete(env))
    at = [int(i) for i in np.unravel_index(pos, shape)] if 0 <= pos < math.prod(
        shape) else None
    if v.op == "one_hot":
        return GraphCallError(f"a label is out of range [0, {bound}): {value}"
                              + (f" at labels{at}" if at is not None else ""), v.loc)
    return GraphCallError(f"{v.op}: index {value} is out of range for an axis of size "
                          f"{bound}" + (f" at indices{at}" if at is not None else ""), v.loc)


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
