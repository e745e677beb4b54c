"""The memory plan's scheduler, on integers alone: the order in which to run kernels, given each
one's buffer size and reads, so that few bytes are live at once. Apart from memplan.py because it
knows no IR: memplan.py hands it sizes at a reference binding and schedule nodes by number."""
from __future__ import annotations

import heapq
from collections import Counter


def schedule_sizes(size: list[int], reads: list[list[int]], same: list[list[int]],
                   outs: set[int], keep: set[int], after: dict[int, set[int]]) -> list[int]:
    """List scheduling: a ready kernel that frees at least what it allocates goes first (most
    freed first), else the earliest in program order, which keeps recomputation late.

    Incremental, so that a schedule costs about the size of the graph: what running a kernel
    would free changes only when the second-to-last reader of one of its inputs runs."""
    count = len(size)
    readers: list[set[int]] = [set() for _ in range(count)]
    for n, rs in enumerate(reads):
        for u in rs:
            readers[u].add(n)
    left = [len(r) for r in readers]               # readers of each buffer not yet run
    waiting = [len(set(rs)) for rs in reads]       # inputs of each kernel not yet run
    times = [Counter(rs) for rs in reads]          # how often each kernel lists each input
    in_same = [set(s) for s in same]
    # per kernel, over its inputs it would free (each as often as ``reads`` lists it): bytes
    # in all, bytes of those it may overwrite in place, and how many of those there are
    freed, freed_same, dying_same = [0] * count, [0] * count, [0] * count

    def dies_at(u: int, n: int) -> None:
        if u in keep or u in outs:
            return
        freed[n] += times[n][u] * size[u]
        if u in in_same[n]:
            freed_same[n] += times[n][u] * size[u]
            dying_same[n] += times[n][u]

    for u in range(count):
        if left[u] == 1:
            dies_at(u, next(iter(readers[u])))

    def delta(n: int) -> int:
        inplace = dying_same[n] > 0
        alloc = 0 if n in outs or inplace else size[n]
        return alloc - (freed[n] - freed_same[n] if inplace else freed[n])

    done: set[int] = set()
    order: list[int] = []
    score: dict[int, int] = {}                    # ready kernels whose soft edges are met
    held: set[int] = set()                         # ready kernels still waiting on soft edges
    freeing: list[tuple[int, int]] = []            # heaps over ``score``, stale entries skipped
    earliest: list[int] = []

    def offer(n: int) -> None:
        if not after.get(n, set()) <= done:
            held.add(n)
            return
        score[n] = d = delta(n)
        heapq.heappush(earliest, n)
        if d <= 0:
            heapq.heappush(freeing, (d, n))

    for n in range(count):
        if waiting[n] == 0:
            offer(n)
    while len(order) < count:
        if score:
            while freeing and score.get(freeing[0][1]) != freeing[0][0]:
                heapq.heappop(freeing)
            while earliest[0] not in score:
                heapq.heappop(earliest)
            n = freeing[0][1] if freeing else earliest[0]
            del score[n]
        else:                                      # soft edges give way rather than deadlock
            scored = [(delta(m), m) for m in held]
            least = [x for x in scored if x[0] <= 0]
            n = min(least)[1] if least else min(held)
            held.discard(n)
        order.append(n)
        done.add(n)
        for u in times[n]:
            left[u] -= 1
            if left[u] == 1:                       # its last reader would now free it
                last = next(r for r in readers[u] if r not in done)
                dies_at(u, last)
                if last in score:
                    offer(last)
        for r in readers[n]:
            waiting[r] -= 1
            if waiting[r] == 0:
                offer(r)
        for m in [m for m in held if after.get(m, set()) <= done]:
            held.discard(m)
            offer(m)
    return order
