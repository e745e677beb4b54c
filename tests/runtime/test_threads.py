"""The worker pool (runtime/pool.py) and threaded native code: every task runs exactly once at
any task count, from several Python threads at once and in a forked child (where the workers
are gone and the caller runs everything), and a model gives bitwise the same numbers at every
thread count, whichever thread ran which part."""
from __future__ import annotations

import ctypes
import os
import threading

import numpy as np
import pytest

import graphc
from graphc.runtime import jit, pool

# a task that records which tasks ran: ctx[t] += t + 1 (so a task run twice shows)
TASKS_IR = """
define internal void @task(ptr %ctx, i64 %t) {
  %p = getelementptr i64, ptr %ctx, i64 %t
  %old = load i64, ptr %p
  %v = add i64 %t, 1
  %new = add i64 %old, %v
  store i64 %new, ptr %p
  ret void
}
declare void @graphc_parallel_for(ptr, ptr, i64, i64)
define void @go(ptr %ctx, i64 %n, i64 %limit) {
  call void @graphc_parallel_for(ptr @task, ptr %ctx, i64 %n, i64 %limit)
  ret void
}
"""


@pytest.fixture(scope="module")
def go() -> ctypes._CFuncPtr:
    loaded = jit.link(jit.compile_object(TASKS_IR, 2), ["go"], imports=pool.POOL.symbols(3))
    fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)(
        loaded.addresses["go"])
    fn.loaded = loaded           # keeps the code alive with the function
    return fn


def _runs(go: ctypes._CFuncPtr, n: int, limit: int) -> np.ndarray:
    out = np.zeros(max(n, 1), np.int64)
    go(out.ctypes.data, n, limit)
    return out


@pytest.mark.parametrize("limit", [1, 2, 3, 8])
def test_every_task_runs_exactly_once(go: ctypes._CFuncPtr, limit: int) -> None:
    for n in (0, 1, 2, 3, 17, 1000):
        got = _runs(go, n, limit)
        np.testing.assert_array_equal(got[:n], np.arange(1, n + 1), err_msg=f"n={n}")
        assert not got[n:].any()


def test_loops_from_many_python_threads_at_once(go: ctypes._CFuncPtr) -> None:
    """Loops that find the pool busy run on their own thread; none is lost or run twice."""
    bad: list[str] = []

    def hammer(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(300):
            n = int(rng.integers(0, 64))
            got = _runs(go, n, 3)
            if not np.array_equal(got[:n], np.arange(1, n + 1)):
                bad.append(f"thread {seed}: n={n}")
    threads = [threading.Thread(target=hammer, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_runs_loops_without_the_workers(go: ctypes._CFuncPtr) -> None:
    _runs(go, 100, 3)                       # the workers are up in the parent
    pid = os.fork()
    if pid == 0:                            # the child: no workers; must not hang
        ok = np.array_equal(_runs(go, 100, 3)[:100], np.arange(1, 101))
        pool.POOL.symbols(2)                # restarts workers for this process
        ok = ok and np.array_equal(_runs(go, 50, 2)[:50], np.arange(1, 51))
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0


MLP = """graph g {
    input x: f32[N, 300]
    input y: f32[N, 10]
    param W1: f32[300, 200]
    param b1: f32[200]
    param W2: f32[200, 10]
    h = tanh(x @ W1 + b1)
    loss = mean(softmax_cross_entropy(h @ W2, y))
    output loss
    grad loss
}"""


def test_bitwise_the_same_at_every_thread_count() -> None:
    models = {t: graphc.compile_source(MLP, num_threads=t) for t in (1, 2, 3)}
    rng = np.random.default_rng(0)
    params = models[1].init_params(seed=0)
    for n in (1, 7, 300):
        x = rng.standard_normal((n, 300)).astype(np.float32)
        y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]
        runs = {t: m.value_and_grad(x=x, y=y, **params) for t, m in models.items()}
        for t in (2, 3):
            for name, g in runs[1][1].items():
                np.testing.assert_array_equal(runs[t][1][name], g, err_msg=f"{t} threads {name}")
            np.testing.assert_array_equal(runs[t][0]["loss"], runs[1][0]["loss"])


def test_thread_count_option_is_checked() -> None:
    with pytest.raises(graphc.GraphError, match="num_threads"):
        graphc.compile_source(MLP, num_threads=0)
