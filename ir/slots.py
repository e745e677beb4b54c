"""The slot allocator, shared by the memory-planning pass and the runtime: sizes are dim
polynomials, and two buffers share a slot only when one is at least as large as the other for
every binding (coefficient by coefficient), so slot sizes, offsets and the peak stay polynomials
(``4096*N+8192``) evaluated at call time. Slots whose sizes are multiples of 64 bytes come first,
then the others by element size, so every buffer is aligned for its dtype at every binding."""
from __future__ import annotations

import functools
import heapq
from dataclasses import dataclass
from typing import Mapping, Sequence

from graphc.ir.types import Dim, DimLike, dim_add, dim_eval, dim_mul

REF = 1024            # every symbol's value when the scheduler compares symbolic sizes

# ---------------------------------------------------------------------------- polynomials


def coeffs(d: DimLike) -> dict[tuple[str, ...], int]:
    return dict(d.terms) if isinstance(d, Dim) else ({(): d} if d else {})


def poly(cs: Mapping[tuple[str, ...], int]) -> DimLike:
    out: DimLike = 0
    for m, c in cs.items():
        term: DimLike = c
        for s in m:
            term = dim_mul(term, Dim.sym(s))
        out = dim_add(out, term)
    return out


@functools.lru_cache(maxsize=1 << 16)     # plans of unrolled loops ask the same questions often
def dominates(p: DimLike, q: DimLike) -> bool:
    """p >= q for every binding of the (non-negative) symbols: no coefficient of p - q is < 0."""
    return all(c >= 0 for c in coeffs(dim_add(p, dim_mul(-1, q))).values())


def poly_max(ds: Sequence[DimLike]) -> DimLike:
    """The coefficient-wise maximum: >= each of ``ds`` everywhere, equal to the one that
    dominates the others when there is one."""
    out: dict[tuple[str, ...], int] = {}
    for d in ds:
        for m, c in coeffs(d).items():
            out[m] = max(out.get(m, c), c)
    return poly({m: c for m, c in out.items()})


def round_up(d: DimLike, align: int) -> DimLike:
    """Each coefficient rounded up to a multiple of ``align``: >= d and a multiple of it."""
    return poly({m: -(-c // align) * align for m, c in coeffs(d).items()})


@functools.lru_cache(maxsize=1 << 16)
def at_ref(d: DimLike) -> int:
    return dim_eval(d, {s: REF for s in (d.symbols if isinstance(d, Dim) else ())})

# ---------------------------------------------------------------------------- slots


@dataclass(frozen=True)
class Interval:
    """A buffer of ``size`` bytes written at step ``start`` and last read at step ``end``;
    ``takes`` names a buffer that dies at ``start`` whose slot it takes over (in place)."""
    key: int
    size: DimLike
    align: int
    start: int
    end: int
    takes: int | None = None


@dataclass(frozen=True)
class Layout:
    offsets: dict[int, DimLike]          # key -> byte offset in the arena
    slot_of: dict[int, int]              # key -> slot (numbered in arena order)
    slots: tuple[DimLike, ...]           # each slot's size in bytes, in arena order
    peak: DimLike                        # arena bytes: max over buffers of offset + size


def allocate(intervals: Sequence[Interval]) -> Layout:
    """Greedy slot reuse in step order: a freed slot that is large enough for every binding,
    else one the new buffer is larger than (it grows), else a new slot."""
    sizes: list[DimLike] = []
    aligns: list[int] = []
    slot_of: dict[int, int] = {}
    free = _FreeSlots(sizes)
    live: dict[int, Interval] = {}
    ends: list[tuple[int, int, int]] = []          # (end, order, key) of live buffers: a heap
    for t, iv in enumerate(sorted(intervals, key=lambda iv: iv.start)):
        while ends and ends[0][0] < iv.start:
            key = heapq.heappop(ends)[2]
            if live.pop(key, None) is not None:
                free.add(slot_of[key])
        if iv.takes is not None and iv.takes in slot_of:
            old = live.pop(iv.takes)
            assert old.end == iv.start and dominates(sizes[slot_of[old.key]], iv.size)
            slot = slot_of[old.key]
        else:
            pick = free.take(iv.size)
            if pick is None:
                sizes.append(iv.size)
                aligns.append(iv.align)
                slot = len(sizes) - 1
            else:
                slot = pick
                sizes[slot] = sizes[slot] if dominates(sizes[slot], iv.size) else iv.size
        aligns[slot] = max(aligns[slot], iv.align)
        slot_of[iv.key] = slot
        live[iv.key] = iv
        heapq.heappush(ends, (iv.end, t, iv.key))
    order = sorted(range(len(sizes)), key=lambda s: (not _aligned64(sizes[s]), -aligns[s], s))
    rank = {s: k for k, s in enumerate(order)}
    offsets: dict[int, DimLike] = {}
    start: DimLike = 0
    slot_start = {}
    padded = []
    for s in order:
        slot_start[s] = start
        padded.append(round_up(sizes[s], aligns[s]))
        start = dim_add(start, padded[-1])
    for iv in intervals:
        offsets[iv.key] = slot_start[slot_of[iv.key]]
    peak = poly_max([dim_add(offsets[iv.key], iv.size) for iv in intervals])
    return Layout(offsets, {k: rank[s] for k, s in slot_of.items()}, tuple(padded), peak)


def _aligned64(d: DimLike) -> bool:
    return all(c % 64 == 0 for c in coeffs(d).values())


class _FreeSlots:
    """Free slots grouped by size, each group a heap of slot numbers, so that picking one looks
    at each distinct size once instead of at every free slot."""

    def __init__(self, sizes: list[DimLike]):
        self.sizes = sizes
        self.groups: dict[DimLike, list[int]] = {}

    def add(self, slot: int) -> None:
        heapq.heappush(self.groups.setdefault(self.sizes[slot], []), slot)

    def take(self, need: DimLike) -> int | None:
        """The smallest free slot that holds ``need`` for every binding (the lowest numbered
        among equals), else the largest one that ``need`` holds (it grows), else None."""
        big = [d for d in self.groups if dominates(d, need)]
        if big:
            d = min(big, key=lambda d: (at_ref(d), self.groups[d][0]))
        else:
            small = [d for d in self.groups if dominates(need, d)]
            if not small:
                return None
            d = max(small, key=lambda d: (at_ref(d), -self.groups[d][0]))
        slot = heapq.heappop(self.groups[d])
        if not self.groups[d]:
            del self.groups[d]
        return slot
