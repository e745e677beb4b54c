"""The worker pool that generated code runs parallel loops on: ``graphc_parallel_for(fn, ctx,
ntasks, limit)`` calls ``fn(ctx, t)`` once for each task t, on the calling thread and up to
``limit - 1`` workers, and returns when all are done.

Everything that runs per parallel loop is native code (a small LLVM module built once per
process), so a loop costs about a microsecond while the workers spin: a job is published
by bumping the generation in one 64-bit word whose low half hands out task numbers by
compare-and-swap. An idle worker spins for about a millisecond, then sleeps on a futex. The
workers are Python daemon threads parked inside the native worker loop (ctypes releases the
GIL for the call), so nothing outside the pip wheels is needed: no OpenMP, no compiler.

The caller runs tasks too and waits only for tasks a worker has claimed, so a pool with no
workers (after ``fork``, or while another thread's loop holds it) still finishes every loop,
on the caller alone. Which thread runs a task never changes what it computes: results are
bitwise the same at any thread count."""
from __future__ import annotations

import atexit
import ctypes
import os
import platform
import re
import threading
from typing import Any

PARALLEL_FOR = "graphc_parallel_for"
_WORKER = "graphc_pool_worker"
_STOP = "graphc_pool_stop"
_RESET = "graphc_pool_reset"

# futex(2) numbers by machine; elsewhere an idle worker naps with usleep instead
_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}
SPIN_CYCLES = 3_000_000      # about a millisecond of waiting for work before a worker sleeps
# (the first twentieth spinning hard, the rest yielding the core on each poll)

# The state (field numbers as the IR uses them; padding keeps the fields written most often
# on cache lines of their own): 0 word (gen << 32 | next task), 2 fn, 3 ctx, 4 ntasks,
# 5 done, 7 limit, 8 joined, 9 lock, 13 seq (the futex word), 15 sleepers, 16 stop
_IR = r"""
%state = type { i64, [7 x i64], ptr, ptr, i64, i64, [4 x i64], i64, i64, i64, [5 x i64], i64,
                i64, i32, i32, i64, i64 }
@graphc.pool = internal global %state zeroinitializer, align 64

declare i64 @syscall(i64, ...)
declare i32 @usleep(i32)
declare i32 @sched_yield()
declare i64 @llvm.readcyclecounter()
{pause_decl}

define internal void @pause() alwaysinline {
  {pause_call}
  ret void
}

; claim and run tasks of generation %g until none is left
define internal void @run_tasks(i64 %g) {
entry:
  %wordp = call ptr @field(i32 0)
  %fnp = call ptr @field(i32 2)
  %ctxp = call ptr @field(i32 3)
  %np = call ptr @field(i32 4)
  %donep = call ptr @field(i32 5)
  br label %loop
loop:
  %w = load atomic i64, ptr %wordp seq_cst, align 8
  %wg = lshr i64 %w, 32
  %same = icmp eq i64 %wg, %g
  br i1 %same, label %check, label %out
check:
  %idx = and i64 %w, 4294967295
  %n = load atomic i64, ptr %np seq_cst, align 8
  %more = icmp slt i64 %idx, %n
  br i1 %more, label %claim, label %out
claim:
  %fn = load atomic ptr, ptr %fnp seq_cst, align 8
  %ctx = load atomic ptr, ptr %ctxp seq_cst, align 8
  %w1 = add i64 %w, 1
  %pair = cmpxchg ptr %wordp, i64 %w, i64 %w1 seq_cst seq_cst
  %ok = extractvalue { i64, i1 } %pair, 1
  br i1 %ok, label %run, label %loop
run:
  call void %fn(ptr %ctx, i64 %idx)
  %d = atomicrmw add ptr %donep, i64 1 seq_cst
  br label %loop
out:
  ret void
}

define void @graphc_parallel_for(ptr %fn, ptr %ctx, i64 %n, i64 %limit) {
entry:
  %few = icmp sle i64 %n, 1
  %alone = icmp sle i64 %limit, 1
  %serial0 = or i1 %few, %alone
  br i1 %serial0, label %serial, label %trylock
trylock:
  %lockp = call ptr @field(i32 9)
  %pair = cmpxchg ptr %lockp, i64 0, i64 1 seq_cst seq_cst
  %got = extractvalue { i64, i1 } %pair, 1
  br i1 %got, label %publish, label %serial
serial:
  %i = phi i64 [ 0, %entry ], [ 0, %trylock ], [ %i1, %serial_body ]
  %c = icmp slt i64 %i, %n
  br i1 %c, label %serial_body, label %done
serial_body:
  call void %fn(ptr %ctx, i64 %i)
  %i1 = add i64 %i, 1
  br label %serial
publish:
  store atomic ptr %fn, ptr {F2} seq_cst, align 8
  store atomic ptr %ctx, ptr {F3} seq_cst, align 8
  store atomic i64 %n, ptr {F4} seq_cst, align 8
  store atomic i64 0, ptr {F5} seq_cst, align 8
  store atomic i64 %limit, ptr {F7} seq_cst, align 8
  store atomic i64 1, ptr {F8} seq_cst, align 8
  %w = load atomic i64, ptr @graphc.pool seq_cst, align 8
  %g = lshr i64 %w, 32
  %g1 = add i64 %g, 1
  %g2 = and i64 %g1, 4294967295
  %neww = shl i64 %g2, 32
  store atomic i64 %neww, ptr @graphc.pool seq_cst, align 8
  %seqp = call ptr @field(i32 13)
  %s = atomicrmw add ptr %seqp, i32 1 seq_cst
  %sleepers = load atomic i64, ptr {F15} seq_cst, align 8
  %wake = icmp sgt i64 %sleepers, 0
  br i1 %wake, label %do_wake, label %work
do_wake:
  {wake_call}
  br label %work
work:
  call void @run_tasks(i64 %g2)
  br label %wait
; wait for the tasks workers claimed; past a short spin, give the core away on each poll, so a
; worker the OS paused (a busy machine) gets it back sooner than a spinning caller would let it
wait:
  %spins = phi i64 [ 0, %work ], [ %spins1, %yield ], [ %spins1, %spin ]
  %d = load atomic i64, ptr {F5} seq_cst, align 8
  %all = icmp sge i64 %d, %n
  br i1 %all, label %unlock, label %check
check:
  %spins1 = add i64 %spins, 1
  %polite = icmp ugt i64 %spins, 64
  br i1 %polite, label %yield, label %spin
yield:
  %yr = call i32 @sched_yield()
  br label %wait
spin:
  call void @pause()
  br label %wait
unlock:
  ; retire the generation before the lock goes: a worker still holding this job's word must
  ; see no task left, not the next caller's task count next to a stale word
  %retired = or i64 %neww, 4294967295
  store atomic i64 %retired, ptr @graphc.pool seq_cst, align 8
  store atomic i64 0, ptr %lockp seq_cst, align 8
  br label %done
done:
  ret void
}

; a worker thread's whole life: wait for a job, join it if the job wants more threads, run
; tasks, and again, until stop is set
define void @graphc_pool_worker() {
entry:
  %wordp = call ptr @field(i32 0)
  %stopp = call ptr @field(i32 16)
  %seqp = call ptr @field(i32 13)
  %sleepp = call ptr @field(i32 15)
  %w0 = load atomic i64, ptr %wordp seq_cst, align 8
  %g0 = lshr i64 %w0, 32
  br label %idle
idle:
  %seen = phi i64 [ %g0, %entry ], [ %g, %job ], [ %g, %skip ]
  %t0 = call i64 @llvm.readcyclecounter()
  br label %poll
poll:
  %stop = load atomic i64, ptr %stopp seq_cst, align 8
  %stopping = icmp ne i64 %stop, 0
  br i1 %stopping, label %exit, label %look
look:
  %w = load atomic i64, ptr %wordp seq_cst, align 8
  %g = lshr i64 %w, 32
  %new = icmp ne i64 %g, %seen
  br i1 %new, label %join, label %quiet
quiet:
  %t = call i64 @llvm.readcyclecounter()
  %dt = sub i64 %t, %t0
  %long = icmp ugt i64 %dt, {spin}
  br i1 %long, label %sleep, label %again
again:
  %early = icmp ult i64 %dt, {polite}
  br i1 %early, label %pause_now, label %yield_now
pause_now:
  call void @pause()
  br label %poll
yield_now:
  %yr = call i32 @sched_yield()
  br label %poll
sleep:
  %s = load atomic i32, ptr %seqp seq_cst, align 4
  %x = atomicrmw add ptr %sleepp, i64 1 seq_cst
  %w2 = load atomic i64, ptr %wordp seq_cst, align 8
  %g2 = lshr i64 %w2, 32
  %still = icmp eq i64 %g2, %seen
  %stop2 = load atomic i64, ptr %stopp seq_cst, align 8
  %run2 = icmp eq i64 %stop2, 0
  %nap = and i1 %still, %run2
  br i1 %nap, label %nap_now, label %woke
nap_now:
  {wait_call}
  br label %woke
woke:
  %y = atomicrmw sub ptr %sleepp, i64 1 seq_cst
  br label %poll
join:
  %joinp = call ptr @field(i32 8)
  %limp = call ptr @field(i32 7)
  %j = atomicrmw add ptr %joinp, i64 1 seq_cst
  %lim = load atomic i64, ptr %limp seq_cst, align 8
  %room = icmp slt i64 %j, %lim
  br i1 %room, label %job, label %skip
job:
  call void @run_tasks(i64 %g)
  br label %idle
skip:
  br label %idle
exit:
  ret void
}

define void @graphc_pool_stop() {
  store atomic i64 1, ptr {F16} seq_cst, align 8
  %seqp = call ptr @field(i32 13)
  %s = atomicrmw add ptr %seqp, i32 1 seq_cst
  {wake_call}
  ret void
}

; after fork: the child has no workers and no loop in flight
define void @graphc_pool_reset() {
  store %state zeroinitializer, ptr @graphc.pool, align 64
  ret void
}
"""


def _ir() -> str:
    machine = platform.machine().lower()
    futex = _FUTEX.get(machine) if platform.system() == "Linux" else None
    x86 = machine in ("x86_64", "amd64", "i686", "x86")
    seq = "getelementptr (%state, ptr @graphc.pool, i32 0, i32 13)"
    if futex is not None:
        # FUTEX_WAIT_PRIVATE = 128, FUTEX_WAKE_PRIVATE = 129
        wake = (f"%wk = call i64 (i64, ...) @syscall(i64 {futex}, ptr {seq}, i32 129, "
                f"i32 2147483647)")
        wait = (f"%wt = call i64 (i64, ...) @syscall(i64 {futex}, ptr {seq}, i32 128, i32 %s, "
                f"ptr null)")
    else:
        wake = "%wk = add i64 0, 0"
        wait = "%wt = call i32 @usleep(i32 200)"
    text = re.sub(r"call ptr @field\(i32 (\d+)\)",
                  r"getelementptr %state, ptr @graphc.pool, i32 0, i32 \1", _IR)
    text = re.sub(r"\{F(\d+)\}", r"getelementptr (%state, ptr @graphc.pool, i32 0, i32 \1)", text)
    return (text.replace("{pause_decl}", "declare void @llvm.x86.sse2.pause()" if x86 else "")
            .replace("{pause_call}", "call void @llvm.x86.sse2.pause()" if x86 else "")
            .replace("{wake_call}", wake).replace("{wait_call}", wait)
            .replace("{spin}", str(SPIN_CYCLES)).replace("{polite}", str(SPIN_CYCLES // 20)))


class _Pool:
    """The process's pool: native code linked once, workers started as loops ask for them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loaded: Any = None
        self.workers: list[threading.Thread] = []
        self.pid = os.getpid()

    def symbols(self, threads: int) -> dict[str, int]:
        """The addresses to link generated code against, with ``threads - 1`` workers up."""
        with self.lock:
            if self.loaded is None:
                from graphc.runtime import jit  # lazy: LLVM only once threads are asked for
                from graphc.runtime.cache import cache_key, graphc_version
                key = cache_key("worker-pool", graphc_version(), jit.host_id())
                store = jit.open_cache(quiet=True)
                obj = store.get(key) if store is not None else None
                if obj is None:                  # compiled once per host, then read back
                    obj = jit.compile_object(_ir(), 2)
                    if store is not None:
                        store.put(key, obj)
                obj = bytes(obj)
                self.loaded = jit.link(obj, [PARALLEL_FOR, _WORKER, _STOP, _RESET])
                atexit.register(self.stop)
            if self.pid != os.getpid():          # a forked child: the workers stayed behind
                ctypes.CFUNCTYPE(None)(self.loaded.addresses[_RESET])()
                self.workers, self.pid = [], os.getpid()
            worker = ctypes.CFUNCTYPE(None)(self.loaded.addresses[_WORKER])
            while len(self.workers) < threads - 1:
                t = threading.Thread(target=worker, name=f"graphc-worker-{len(self.workers)}",
                                     daemon=True)
                t.start()
                self.workers.append(t)
            return {PARALLEL_FOR: self.loaded.addresses[PARALLEL_FOR]}

    def stop(self) -> None:
        if self.loaded is not None and self.pid == os.getpid():
            ctypes.CFUNCTYPE(None)(self.loaded.addresses[_STOP])()
            for t in self.workers:
                t.join(timeout=1.0)

    @property
    def size(self) -> int:
        return len(self.workers) + 1


POOL = _Pool()


def default_threads() -> int:
    """GRAPHC_NUM_THREADS, else the cores this process may run on."""
    env = os.environ.get("GRAPHC_NUM_THREADS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
