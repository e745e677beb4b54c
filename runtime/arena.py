"""Where a plan's buffers live: one arena per model and thread, allocated once and grown when a
larger binding needs more (never per call). Intermediates sit at the byte offsets of the memory
plan (or, for a function the memplan pass did not plan, at offsets assigned here from the
steps' lifetimes); a result written in place of the caller's array is staged after them and
copied at the end. All offsets are dim polynomials that the driver evaluates from the call's
dims."""
from __future__ import annotations

import contextlib
import ctypes
import itertools
import threading
import weakref
from collections.abc import Iterator, Mapping

import numpy as np

from graphc.ir.errors import GraphCallError
from graphc.ir.slots import Interval, allocate, poly_max, round_up
from graphc.ir.types import DimLike, dim_add, dim_eval, dim_mul
from graphc.runtime.plantypes import Plan, buffers_read

ALIGN = 64


class _Workspace:
    """One thread's block of memory for one model. Its state lives in five native words
    (``WORDS``: busy, address, size, small_calls, release) so that the native call path
    (runtime/fastmethod.py) can take the block without Python; every change to them happens with
    the GIL held."""

    BUSY, ADDRESS, SIZE, SMALL, RELEASE = range(5)

    def __init__(self) -> None:
        self.block: np.ndarray | None = None
        self.words = (ctypes.c_int64 * 5)()

    def _word(k: int) -> property:          # type: ignore[misc]
        return property(lambda self: self.words[k],
                        lambda self, v: self.words.__setitem__(k, int(v)))

    busy = _word(BUSY)                # a native call is using the block right now
    address = _word(ADDRESS)
    size = _word(SIZE)
    small_calls = _word(SMALL)        # consecutive calls that needed far less than ``size``
    release = _word(RELEASE)          # drop the block when that call ends
    del _word


class Arena:
    """Each thread's block of memory for one model (threads never share one). A block grows to
    the largest binding a call needs and shrinks back once a run of calls has needed far less
    (``SHRINK_AFTER`` calls all needing under ``1/SHRINK_RATIO`` of it); ``release()`` frees
    every idle thread's block now and a busy one's when its call ends. A thread's block dies
    with the thread."""

    SHRINK_AFTER = 16
    SHRINK_RATIO = 4

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: weakref.WeakSet[_Workspace] = weakref.WeakSet()
        self._lock = threading.Lock()
        # where the native call path finds this thread's workspace: the key in the thread
        # state's dict (never reused, so a dead arena's entry is never found again)
        self.key = f"graphc.arena.{next(_KEYS)}"

    def __del__(self) -> None:
        """This thread's entry for the native path goes too (other threads' entries stay,
        unused, until those threads end: their dicts are theirs)."""
        try:
            tdict = _thread_dict()
            if tdict is not None:
                tdict.pop(self.key, None)
        except Exception:  # noqa: BLE001, S110 - at interpreter exit, anything may be gone
            pass

    def _mine(self) -> _Workspace:
        ws = getattr(self._local, "ws", None)
        if ws is None:
            ws = self._local.ws = _Workspace()
            with self._lock:
                self._all.add(ws)
            tdict = _thread_dict()
            if tdict is not None:            # cleared when the thread ends, as _local is
                tdict[self.key] = ctypes.addressof(ws.words)
        return ws

    @contextlib.contextmanager
    def lease(self, nbytes: int) -> Iterator[int]:
        """The address of at least ``nbytes`` bytes, 64-byte aligned, valid inside the block."""
        ws = self.take(nbytes)
        try:
            yield ws.address
        finally:
            self.give(ws, nbytes)

    def take(self, nbytes: int) -> _Workspace:
        """This thread's workspace, holding at least ``nbytes`` bytes at ``.address``, marked
        busy until ``give`` (``lease`` without a generator: the call path's hot spot)."""
        ws = self._mine()
        with self._lock:
            if ws.release:                           # released while a native call ran
                self._drop(ws)
            if ws.block is None or nbytes > ws.size:
                ws.block = None                      # free the old block before the new one
                try:
                    ws.block = np.empty(max(nbytes, 1) + ALIGN, np.uint8)
                except (MemoryError, ValueError):
                    raise GraphCallError(f"out of memory for the workspace of this call "
                                         f"({nbytes} bytes)") from None
                base = ws.block.ctypes.data
                ws.address = base + (-base) % ALIGN
                ws.size = nbytes
            ws.busy = True
        return ws

    def give(self, ws: _Workspace, nbytes: int) -> None:
        """The end of the call that took ``ws`` for ``nbytes``: shrink or drop it if due."""
        with self._lock:
            ws.busy = False
            small = nbytes * self.SHRINK_RATIO < ws.size
            ws.small_calls = ws.small_calls + 1 if small else 0
            if ws.release or ws.small_calls >= self.SHRINK_AFTER:
                self._drop(ws)

    @property
    def address(self) -> int:
        """Where this thread's block starts (0 when it has none)."""
        ws = getattr(self._local, "ws", None)
        return ws.address if ws is not None and ws.block is not None else 0

    @property
    def size(self) -> int:
        """Bytes this thread's block holds (0 when it has none)."""
        ws = getattr(self._local, "ws", None)
        return ws.size if ws is not None and ws.block is not None else 0

    def release(self) -> None:
        with self._lock:
            for ws in list(self._all):
                # the flag first: a native call that starts after it sees it and leaves the
                # block alone; one that started before has set busy (both under the GIL)
                ws.release = True
                if not ws.busy:
                    self._drop(ws)

    @staticmethod
    def _drop(ws: _Workspace) -> None:
        ws.address, ws.size, ws.small_calls = 0, 0, 0     # the native path sees no block
        ws.block = None
        ws.release = False


_KEYS = itertools.count()
_GET_DICT = ctypes.pythonapi.PyThreadState_GetDict
_GET_DICT.restype, _GET_DICT.argtypes = ctypes.c_void_p, []     # a borrowed reference


def _thread_dict() -> dict | None:
    """This thread's state dict (the one threading.local keeps its values in)."""
    p = _GET_DICT()
    d = ctypes.cast(p, ctypes.py_object).value if p else None    # a new reference
    return d if type(d) is dict else None


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
