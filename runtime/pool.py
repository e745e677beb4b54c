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
bitwise the same at any thread count.

Generated code reaches it two ways: the GEMM library's tasks (runtime/gemm.py), and
``split_loop`` below, which outlines the body of a kernel's outer loop into a function of its
own and runs parts of the loop as tasks (loop kernels, reductions, row kernels)."""
from __future__ import annotations

import atexit
import ctypes
import os
import platform
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any

import llvmlite.ir as ll

from graphc.runtime import fpmode

PARALLEL_FOR = "graphc_parallel_for"
_WORKER = "graphc_pool_worker"
_STOP = "graphc_pool_stop"
_RESET = "graphc_pool_reset"
_COUNTS = "graphc_pool_counts"

# futex(2) numbers by machine; elsewhere an idle worker naps with usleep instead
_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}
SPIN_CYCLES = 3_000_000      # about a millisecond of waiting for work before a worker sleeps
# (the first quarter spinning hard, the rest yielding the core on each poll: a region that
# starts in the quarter is joined within a microsecond, where a yield costs several)

# The state (field numbers as the IR uses them; padding keeps the fields written most often
# on cache lines of their own): 0 word (gen << 32 | next task), 2 fn, 3 ctx, 4 ntasks,
# 5 done, 7 limit, 8 joined, 9 lock, 13 seq (the futex word), 15 sleepers, 16 stop, 18 loops
# asked for and 19 their tasks (counts that tests read; apart from what idle workers poll),
# 20 the caller's floating-point control register (runtime/fpmode.py), which a worker loads
# for the tasks of the job it joins: a region runs in its caller's flush-to-zero mode
_IR = r"""
%state = type { i64, [7 x i64], ptr, ptr, i64, i64, [4 x i64], i64, i64, i64, [5 x i64], i64,
                i64, i32, i32, i64, i64, [7 x i64], i64, i64, i64 }
@graphc.pool = internal global %state zeroinitializer, align 64

declare i64 @syscall(i64, ...)
declare i32 @usleep(i32)
declare i32 @sched_yield()
declare i64 @llvm.readcyclecounter()
{pause_decl}
{fp_defs}

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
  br i1 %serial0, label %serial, label %count
count:
  %c0 = atomicrmw add ptr {F18}, i64 1 monotonic
  %c1 = atomicrmw add ptr {F19}, i64 %n monotonic
  br label %trylock
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
  %mode = call i64 @fp_get()
  store atomic i64 %mode, ptr {F20} seq_cst, align 8
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
  %own = call i64 @fp_get()
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
  %mode = load atomic i64, ptr {F20} seq_cst, align 8
  call void @fp_set(i64 %mode)
  call void @run_tasks(i64 %g)
  call void @fp_set(i64 %own)
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

define void @graphc_pool_counts(ptr %out) {
  %r = load atomic i64, ptr {F18} monotonic, align 8
  %t = load atomic i64, ptr {F19} monotonic, align 8
  store i64 %r, ptr %out
  %p = getelementptr i64, ptr %out, i64 1
  store i64 %t, ptr %p
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
            .replace("{fp_defs}", fpmode.pool_ir())
            .replace("{wake_call}", wake).replace("{wait_call}", wait)
            .replace("{spin}", str(SPIN_CYCLES)).replace("{polite}", str(SPIN_CYCLES // 4)))


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
                self.loaded = jit.link(obj, [PARALLEL_FOR, _WORKER, _STOP, _RESET, _COUNTS])
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

    def counts(self) -> tuple[int, int]:
        """(parallel loops asked of the pool with 2 or more tasks and threads, their tasks) in
        this process so far: what tests read to see that a build splits its loops."""
        if self.loaded is None:
            return 0, 0
        out = (ctypes.c_int64 * 2)()
        ctypes.CFUNCTYPE(None, ctypes.c_void_p)(self.loaded.addresses[_COUNTS])(
            ctypes.addressof(out))
        return int(out[0]), int(out[1])

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


# -- loops of generated kernels on the pool -----------------------------------------------------
PARALLEL_WORK = 1 << 15     # elements a loop needs before its parts go to the pool
TASK_WORK = 1 << 14         # elements of one task (a part is a multiple of ``align`` iterations)
_I64, _I32, _PTR = ll.IntType(64), ll.IntType(32), ll.PointerType()


def parallel_for(module: ll.Module) -> ll.Function:
    """``graphc_parallel_for``'s declaration in ``module``."""
    fn = module.globals.get(PARALLEL_FOR)
    if fn is None:
        fn = ll.Function(module, ll.FunctionType(ll.VoidType(), [_PTR, _PTR, _I64, _I64]),
                         PARALLEL_FOR)
    return fn


Body = Callable[[Any, ll.Value, ll.Value, list], None]


def split_loop(k: Any, n: ll.Value, per_item: ll.Value, body: Body, *, align: int = 1,
               always: bool = False, chunk: ll.Value | None = None,
               extra: Sequence[ll.Value] = (), name: str = "part") -> None:
    """``for i in range(n)`` at kernel ``k``'s position, its iterations independent of each
    other: ``body(kk, lo, hi, xs)`` emits iterations lo..hi-1 with kernel ``kk`` (``xs``:
    ``extra`` as kk sees them); ``per_item``: the elements one iteration touches.

    Built for more than one thread (and not debug), the body is outlined (``Kernel.outline``)
    and a loop of PARALLEL_WORK elements or more runs as tasks of the pool, each over a part
    of ``chunk`` iterations (default: about TASK_WORK elements, a multiple of ``align``); a
    smaller one calls it once over the whole range. ``always``: outlined in every build, so
    that a body whose numbers depend on how LLVM compiles it (a vectorised reduction) is the
    same code at every thread count. With ``chunk`` given, the parts are those in every build
    (a reduction into one partial per part): each is its own call, in order, where nothing
    runs in parallel. Which thread runs a part never changes what it computes."""
    b = k.b
    threads = k.cg.threads if not k.cg.debug else 1
    if threads <= 1 and not always and chunk is None:
        body(k, ll.Constant(_I64, 0), n, list(extra))
        return
    # (a typed pointer, as an alloca is, goes as a plain ``ptr``)
    sub, args = k.outline(name, [_PTR if isinstance(x.type, ll.PointerType) else x.type
                                 for x in extra])
    lo, hi = sub.fn.args[-2:]
    body(sub, lo, hi, list(sub.fn.args[-2 - len(extra):-2]))
    assert sub.code is None, "a loop split over threads has no error of its own to return"
    sub.finish()
    args = args + list(extra)
    parts = chunk is not None
    if chunk is None:
        one = ll.Constant(_I64, 1)
        want = _ceil_div(b, ll.Constant(_I64, TASK_WORK), _max(b, per_item, one))
        chunk = b.mul(_ceil_div(b, want, ll.Constant(_I64, align)), ll.Constant(_I64, align))
    ntasks = _ceil_div(b, n, chunk)

    def run(lo: ll.Value, hi: ll.Value) -> None:
        code = b.call(sub.fn, args + [lo, hi])
        if k.cg.debug:
            # its only error is a debug build's bad access (the loop bodies have none of
            # their own), which is k's own then (Kernel.finish)
            oob = k.oob_slot()
            b.store(b.or_(b.load(oob, typ=ll.IntType(1)),
                          b.icmp_signed("!=", code, ll.Constant(_I32, 0))), oob)

    def serial() -> None:
        if not parts:
            run(ll.Constant(_I64, 0), n)
            return
        with k.em.loop(ntasks, "part") as t:
            start = b.mul(t, chunk)
            run(start, _min(b, b.add(start, chunk), n))
    if threads <= 1:
        serial()
        return
    fields = [_PTR if isinstance(a.type, ll.PointerType) else a.type for a in args] + \
        [_I64, _I64]
    task = _task(k.cg.module, sub.fn, fields)
    work = b.mul(n, per_item)
    big = b.and_(b.icmp_signed(">=", work, ll.Constant(_I64, PARALLEL_WORK)),
                 b.icmp_signed(">", ntasks, ll.Constant(_I64, 1)))
    with b.if_else(big) as (split, alone):
        with split:
            ctx = k.em.alloca_entry(ll.LiteralStructType(fields), "part.ctx")
            for i, a in enumerate(args + [n, chunk]):
                b.store(a, b.gep(ctx, [ll.Constant(_I32, 0), ll.Constant(_I32, i)]))
            b.call(parallel_for(k.cg.module), [task, ctx, ntasks, ll.Constant(_I64, threads)])
        with alone:
            serial()


def _task(module: ll.Module, fn: ll.Function, fields: list[ll.Type]) -> ll.Function:
    """``void task(ptr ctx, i64 t)``: ``fn`` over part t, its arguments read from ``ctx`` (a
    struct of ``fields``: fn's leading arguments, then the extent n and the part size)."""
    task = ll.Function(module, ll.FunctionType(ll.VoidType(), [_PTR, _I64]),
                       module.get_unique_name(f"{fn.name}.task"))
    task.linkage = "internal"
    ctx, t = task.args
    b = ll.IRBuilder(task.append_basic_block("entry"))
    st = ll.LiteralStructType(fields)
    vals = [b.load(b.gep(ctx, [ll.Constant(_I32, 0), ll.Constant(_I32, i)], source_etype=st),
                   typ=ty) for i, ty in enumerate(fields)]
    n, chunk = vals[-2:]
    lo = b.mul(t, chunk)
    b.call(fn, vals[:-2] + [lo, _min(b, b.add(lo, chunk), n)])
    b.ret_void()
    return task


def _ceil_div(b: ll.IRBuilder, x: ll.Value, d: ll.Value) -> ll.Value:
    return b.sdiv(b.add(x, b.sub(d, ll.Constant(_I64, 1))), d)


def _min(b: ll.IRBuilder, x: ll.Value, y: ll.Value) -> ll.Value:
    return b.select(b.icmp_signed("<", x, y), x, y)


def _max(b: ll.IRBuilder, x: ll.Value, y: ll.Value) -> ll.Value:
    return b.select(b.icmp_signed(">", x, y), x, y)
