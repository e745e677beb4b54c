"""graphc against what users would write instead, in one run: the MLP training step
(784-256-256-10, examples/mlp3.graph) at several batch sizes on 1 and 2 threads, GEMM
GFLOP/s, the cost of a one-op call, peak memory, and one core's FMA peak (the step's time over
its FLOP limit).

    python examples/benchmarks/bench_suite.py [--quick] [--json results.json]

Each configuration runs in a fresh subprocess, so that thread counts take effect (OpenBLAS reads
OPENBLAS_NUM_THREADS at import) and peak RSS is per configuration; 1-thread runs are pinned to
one core with ``os.sched_setaffinity`` (XLA's own flags alone do not keep it on one core).
NumPy is measured twice: with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE as this environment sets
them, and with both unset (OpenBLAS then picks its own kernel for the CPU). JAX (jax.jit of the
same step) and PyTorch (eager) run when installed: ``pip install -e '.[bench]'``.

Ratios are peer time / graphc time: above 1, graphc is faster. Absolute times on a shared
machine are noise; ratios from the same run are what to quote."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve()
GRAPH = HERE.parents[1] / "mlp3.graph"
SIZES = (784, 256, 256, 10)


# -- measurement helpers (run inside the worker subprocess) ---------------------------------
def median_time(fn: Callable[[], object], budget: float = 1.0, least: int = 5) -> float:
    """Median seconds per call over about ``budget`` seconds (at least ``least`` calls)."""
    import numpy as np
    fn()
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < least or time.perf_counter() - start < budget:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) >= 20000:
            break
    return float(np.median(times))


def _data(batch: int, dtype: Any) -> dict[str, Any]:
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, SIZES[0])).astype(dtype)
    y = np.eye(SIZES[-1], dtype=dtype)[rng.integers(0, SIZES[-1], batch)]
    params = {}
    for k, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:]), start=1):
        params[f"W{k}"] = (rng.standard_normal((a, b)) * np.sqrt(2.0 / (a + b))).astype(dtype)
        params[f"b{k}"] = np.zeros(b, dtype)
    return {"x": x, "y": y, "params": params}


def numpy_step(x: Any, y: Any, p: dict[str, Any], lr: float) -> float:
    """Forward, backward and ``p -= lr * g``, written as a NumPy user would."""
    loss, grads = numpy_grads(x, y, p)
    for k, g in grads.items():
        p[k] -= lr * g
    return loss


def numpy_grads(x: Any, y: Any, p: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """The loss and its gradients by hand-written backprop."""
    import numpy as np
    h1p = x @ p["W1"] + p["b1"]
    h1 = np.maximum(h1p, 0)
    h2p = h1 @ p["W2"] + p["b2"]
    h2 = np.maximum(h2p, 0)
    z = h2 @ p["W3"] + p["b3"]
    top = z.max(axis=1, keepdims=True)
    e = np.exp(z - top)
    s = e.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.sum(y * (np.log(s) + top - z), axis=1)))
    n = x.shape[0]
    gz = (e / s * y.sum(axis=1, keepdims=True) - y) / n
    gh2 = (gz @ p["W3"].T) * (h2p > 0)
    gh1 = (gh2 @ p["W2"].T) * (h1p > 0)
    grads = {"W3": h2.T @ gz, "b3": gz.sum(0), "W2": h1.T @ gh2, "b2": gh2.sum(0),
             "W1": x.T @ gh1, "b1": gh1.sum(0)}
    return loss, grads


def run_mlp(batch: int, threads: int) -> dict[str, float]:
    import numpy as np

    import graphc
    out: dict[str, float] = {}
    d = _data(batch, np.float32)
    model = graphc.compile(str(GRAPH), num_threads=threads)
    params = {k: v.copy() for k, v in d["params"].items()}
    out["graphc sgd_step"] = median_time(
        lambda: model.sgd_step(params, 1e-4, x=d["x"], y=d["y"]))
    out["graphc value_and_grad"] = median_time(
        lambda: model.value_and_grad(x=d["x"], y=d["y"], **params))
    out["graphc forward"] = median_time(lambda: model(x=d["x"], y=d["y"], **params))
    import resource
    # the high-water mark so far: Python, NumPy, llvmlite and graphc, before any peer runs
    out["peak RSS MiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pn = {k: v.copy() for k, v in d["params"].items()}
    out["numpy step"] = median_time(lambda: numpy_step(d["x"], d["y"], pn, 1e-4))
    try:
        out["jax.jit step"] = _jax_step(d, batch)
    except ImportError:
        pass
    try:
        out["torch step"] = _torch_step(d, threads)
    except ImportError:
        pass
    return out


def _jax_step(d: dict[str, Any], batch: int) -> float:
    import jax
    import jax.numpy as jnp

    def loss_fn(p: dict[str, Any], x: Any, y: Any) -> Any:
        h = jax.nn.relu(x @ p["W1"] + p["b1"])
        h = jax.nn.relu(h @ p["W2"] + p["b2"])
        z = h @ p["W3"] + p["b3"]
        return jnp.mean(-jnp.sum(y * jax.nn.log_softmax(z), axis=1))

    @jax.jit
    def step(p: dict[str, Any], x: Any, y: Any) -> tuple[Any, Any]:
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        return loss, jax.tree_util.tree_map(lambda a, b: a - 1e-4 * b, p, g)

    p = {k: jnp.asarray(v) for k, v in d["params"].items()}
    x, y = jnp.asarray(d["x"]), jnp.asarray(d["y"])
    state = {"p": p}

    def call() -> None:
        loss, state["p"] = step(state["p"], x, y)
        loss.block_until_ready()
    return median_time(call)


def _torch_step(d: dict[str, Any], threads: int) -> float:
    import torch
    torch.set_num_threads(threads)
    p = {k: torch.tensor(v, requires_grad=True) for k, v in d["params"].items()}
    x, y = torch.tensor(d["x"]), torch.tensor(d["y"])

    def call() -> None:
        h = torch.relu(x @ p["W1"] + p["b1"])
        h = torch.relu(h @ p["W2"] + p["b2"])
        z = h @ p["W3"] + p["b3"]
        loss = -(y * torch.log_softmax(z, 1)).sum(1).mean()
        for v in p.values():
            v.grad = None
        loss.backward()
        with torch.no_grad():
            for v in p.values():
                v -= 1e-4 * v.grad
    return median_time(call)


# forward 2*(784*256 + 256*256 + 256*10), the weight gradients as much again, and the input
# gradients of layers 2 and 3 (not layer 1's: x needs none)
STEP_FLOP = 2 * (2 * (784 * 256 + 256 * 256 + 256 * 10) + 256 * 256 + 256 * 10)
GEMMS = [(64, 64, 64), (256, 256, 256), (1024, 1024, 1024), (333, 300, 64), (1, 784, 256)]


def run_gemm(threads: int) -> dict[str, float]:
    import numpy as np

    import graphc
    out: dict[str, float] = {}
    rng = np.random.default_rng(0)
    src = "graph g {\n input A: f32[M, K]\n input B: f32[K, N]\n C = A @ B\n output C\n}\n"
    model = graphc.compile_source(src, num_threads=threads)
    for m, k, n in GEMMS:
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        flops = 2.0 * m * k * n / 1e9
        out[f"graphc {m}x{k}x{n}"] = flops / median_time(lambda: model(A=a, B=b), 0.5)
        out[f"numpy {m}x{k}x{n}"] = flops / median_time(lambda: a @ b, 0.5)
    return out


def run_call() -> dict[str, float]:
    import numpy as np

    import graphc
    model = graphc.compile_source("graph g {\n input x: f32[8]\n y = x + x\n output y\n}\n",
                                  num_threads=1)
    x = np.ones(8, np.float32)
    return {"graphc one-op call": median_time(lambda: model(x=x), 0.5),
            "numpy np.add": median_time(lambda: np.add(x, x), 0.5)}


CHAINS = 12        # independent FMA chains: enough to cover the latency on two FMA ports


def run_peak() -> dict[str, float]:
    """This core's f32 FMA peak in GFLOP/s: CHAINS independent chains of full-width vector
    FMAs in a loop (what no f32 kernel can beat), compiled by graphc's own JIT."""
    import ctypes

    from graphc.runtime import gemm, jit
    lanes = gemm.vector_bytes() // 4
    vt = f"<{lanes} x float>"

    def splat(x: float) -> str:
        return "<" + ", ".join([f"float {x:e}"] * lanes) + ">"
    phis = "".join(f"  %a{c} = phi {vt} [{splat(1.0 + c / 64)}, %entry], [%b{c}, %loop]\n"
                   for c in range(CHAINS))
    fmas = "".join(f"  %b{c} = call {vt} @llvm.fma.v{lanes}f32({vt} %a{c}, {vt} {splat(0.5)}, "
                   f"{vt} {splat(0.5)})\n" for c in range(CHAINS))
    # every chain feeds the stored result, so none is dead code
    sums = "".join(f"  %s{c} = fadd {vt} %s{c - 1}, %b{c}\n" for c in range(1, CHAINS))
    text = (f"declare {vt} @llvm.fma.v{lanes}f32({vt}, {vt}, {vt})\n"
            f"define void @fma_peak(i64 %n, ptr %out) {{\nentry:\n  br label %loop\nloop:\n"
            f"  %i = phi i64 [0, %entry], [%j, %loop]\n{phis}{fmas}"
            f"  %j = add i64 %i, 1\n  %more = icmp slt i64 %j, %n\n"
            f"  br i1 %more, label %loop, label %done\ndone:\n"
            f"  %s0 = fadd {vt} %b0, zeroinitializer\n{sums}"
            f"  store {vt} %s{CHAINS - 1}, ptr %out, align 4\n  ret void\n}}\n")
    loaded = jit.link(jit.compile_object(text, 2), ["fma_peak"])
    fn = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p)(loaded.addresses["fma_peak"])
    out = (ctypes.c_float * lanes)()
    n = 2_000_000
    seconds = median_time(lambda: fn(n, ctypes.addressof(out)), 0.5)
    return {"fma peak GFLOP/s": 2.0 * lanes * CHAINS * n / seconds / 1e9}


def worker(args: argparse.Namespace) -> None:
    if args.threads == 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    if args.what == "mlp":
        result = run_mlp(args.batch, args.threads)
    elif args.what == "gemm":
        result = run_gemm(args.threads)
    elif args.what == "peak":
        result = run_peak()
    else:
        result = run_call()
    print(json.dumps(result))


def spawn(what: str, threads: int, batch: int = 0, blas_env: bool = True) -> dict[str, float]:
    env = dict(os.environ)
    env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), GRAPHC_NUM_THREADS=str(threads))
    if threads == 1:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                            " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    if not blas_env:
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    cmd = [sys.executable, str(HERE), "--worker", what, "--threads", str(threads),
           "--batch", str(batch)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{what} (threads={threads}, batch={batch}) failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="B=1, 32 and 256 only, fewer sizes")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.what = args.worker
        worker(args)
        return
    batches = (1, 32, 256) if args.quick else (1, 32, 256, 2048)
    env_note = (f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}, "
                f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', 'unset')}")
    results: dict[str, Any] = {"env": env_note, "mlp": {}, "gemm": {}, "call": {}}
    print(f"# graphc benchmark suite ({env_note})\n")
    print("## MLP 784-256-256-10 training step, f32 (median ms; ratio = peer / graphc sgd_step)\n")
    print("| threads | batch | graphc sgd_step | graphc v&g | v&g / forward | NumPy (env) | "
          "NumPy (unset) | JAX | PyTorch | best peer / graphc | graphc peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for threads in (1, 2):
        for batch in batches:
            r = spawn("mlp", threads, batch)
            r["numpy step (BLAS env unset)"] = spawn("mlp", threads, batch, False)["numpy step"]
            results["mlp"][f"{threads}t B={batch}"] = r
            peers = [r[k] for k in ("numpy step", "numpy step (BLAS env unset)", "jax.jit step",
                                    "torch step") if k in r]
            ms = lambda k: f"{r[k] * 1e3:.3f}" if k in r else "-"    # noqa: E731
            print(f"| {threads} | {batch} | {ms('graphc sgd_step')} | "
                  f"{ms('graphc value_and_grad')} | "
                  f"{r['graphc value_and_grad'] / r['graphc forward']:.2f} | {ms('numpy step')} | "
                  f"{ms('numpy step (BLAS env unset)')} | {ms('jax.jit step')} | "
                  f"{ms('torch step')} | {min(peers) / r['graphc sgd_step']:.2f}x | "
                  f"{r['peak RSS MiB']:.0f} |", flush=True)
    peak = spawn("peak", 1)["fma peak GFLOP/s"]
    results["fma peak GFLOP/s"] = peak
    print(f"\nOne core's measured f32 FMA peak: {peak:.0f} GFLOP/s.")
    for key, r in results["mlp"].items():
        if key.startswith("1t"):
            batch = int(key.split("=")[1])
            limit = STEP_FLOP * batch / (peak * 1e9)
            print(f"- 1 thread, B={batch}: sgd_step takes {r['graphc sgd_step'] / limit:.2f}x the "
                  f"FLOP limit ({limit * 1e3:.3f} ms at {STEP_FLOP / 1e6:.2f} MFLOP per example)")
    print("\n## GEMM f32, GFLOP/s (ratio = graphc / NumPy)\n")
    print("| threads | shape | graphc | NumPy (env) | ratio | NumPy (unset) | ratio |")
    print("|---|---|---|---|---|---|---|")
    for threads in (1, 2):
        r, u = spawn("gemm", threads), spawn("gemm", threads, blas_env=False)
        results["gemm"][f"{threads}t"] = {"env": r, "unset": u}
        for m, k, n in GEMMS:
            s = f"{m}x{k}x{n}"
            g, ne, nu = r[f"graphc {s}"], r[f"numpy {s}"], u[f"numpy {s}"]
            print(f"| {threads} | {s} | {g:.1f} | {ne:.1f} | {g / ne:.2f} | {nu:.1f} | "
                  f"{g / nu:.2f} |", flush=True)
    r = spawn("call", 1)
    results["call"] = r
    print(f"\n## One-op call on 8 floats: graphc {r['graphc one-op call'] * 1e6:.1f} us, "
          f"np.add {r['numpy np.add'] * 1e6:.2f} us "
          f"({r['graphc one-op call'] / r['numpy np.add']:.1f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
