"""Where a plan's buffers live: one arena per model and thread, allocated once and grown when a
larger binding needs more (never per call). Intermediates sit at the byte offsets of the memory
plan (or of the runtime's own slot assignment for functions the memplan pass did not plan); a
result written in place of the caller's array is staged after them and copied at the end. All
offsets are dim polynomials that the driver evaluates from the call's dims."""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Mapping

import numpy as np

from ir.errors import GraphCallError
from ir.types import DimLike, dim_add, dim_eval, dim_mul
from passes.memplan import Interval, allocate, poly_max, round_up

if TYPE_CHECKING:
    from runtime.plan import Plan

ALIGN = 64


class Arena(threading.local):
    """This thread's block of memory for one model (threads never share one)."""

    def __init__(self) -> None:
        self.block: np.ndarray | None = None
        self.address = 0
        self.size = 0

    def get(self, nbytes: int) -> int:
        """The address of at least ``nbytes`` bytes, 64-byte aligned."""
        if self.block is None or nbytes > self.size:
            try:
                self.block = np.empty(max(nbytes, 1) + ALIGN, np.uint8)
            except (MemoryError, ValueError):
                raise GraphCallError(f"out of memory for the arena of this call ({nbytes} "
                                     f"bytes)") from None
            base = self.block.ctypes.data
            self.address = base + (-base) % ALIGN
            self.size = nbytes
        return self.address


def buffer_bytes(plan: Plan, buf: int) -> DimLike:
    b = plan.buffers[buf]
    return dim_mul(b.size, b.dtype.itemsize)


def lay_out(plan: Plan, offsets: Mapping[int, DimLike] | None = None) -> None:
    """Fill ``plan.offsets`` (given by the memory plan, else assigned here from the steps'
    lifetimes), ``plan.peak``, and the staging offsets of result buffers."""
    slots = [k for k, b in enumerate(plan.buffers) if b.kind == "slot"]
    if offsets is None:
        layout = allocate(_intervals(plan, slots))
        offsets = layout.offsets
    plan.offsets = {k: offsets[k] for k in slots}
    plan.peak = poly_max([dim_add(plan.offsets[k], buffer_bytes(plan, k)) for k in slots])
    end = round_up(plan.peak, ALIGN)
    plan.stage, plan.stage_ends = {}, {}
    staged = [k for k, b in enumerate(plan.buffers) if b.kind == "result"]
    for k in sorted(staged, key=lambda k: plan.buffers[k].index in plan.inplace):
        plan.stage[k] = end         # results that can overwrite their param's array go last
        end = dim_add(end, round_up(buffer_bytes(plan, k), ALIGN))
        plan.stage_ends[plan.buffers[k].index] = end
    plan.stage_end = end


def _intervals(plan: Plan, slots: list[int]) -> list[Interval]:
    from runtime.plan import buffers_read
    last: dict[int, int] = {}
    made: dict[int, int] = {}
    for s in plan.steps:
        made.setdefault(s.out.buf, s.index)
        for a in s.args:
            for b in buffers_read(a):
                last[b] = s.index
    for src, _ in plan.results:
        for b in buffers_read(src):
            last[b] = len(plan.steps)
    return [Interval(k, buffer_bytes(plan, k), plan.buffers[k].dtype.itemsize, made[k],
                     max(last.get(k, made[k]), made[k])) for k in slots]


def arena_bytes(plan: Plan, env: Mapping[str, int], direct: int) -> int:
    """Bytes the arena needs for this binding when the results whose bit is clear in ``direct``
    are staged (the staging area ends after the last of them)."""
    key = (tuple(env.get(s, 0) for s in plan.symbols), direct)
    n = plan.arena_cache.get(key)
    if n is None:
        ends = [e for r, e in plan.stage_ends.items() if not direct >> r & 1]
        n = max(0, max(dim_eval(e, env) for e in ends) if ends else dim_eval(plan.peak, env))
        if len(plan.arena_cache) < 256:
            plan.arena_cache[key] = n
    return n
