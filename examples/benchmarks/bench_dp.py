"""Data-parallel train_step (Adam) on the MLP (examples/mlp.graph, 784 -> 256 -> 10) at a global
batch of 2048: the step time at 1 rank and at 2 ranks (1024 examples each), and the share of
the step spent in the gradients' allreduce (the collective plus any wait for the slower rank).
The machine's cores are shared among the ranks (threads per rank = cores / ranks), so the
speedup is what data parallelism adds on one machine, not over several.

    python examples/benchmarks/bench_dp.py [--steps 20] [--compress bf16]

It launches ``mpiexec -n 1`` and ``mpiexec -n 2`` itself (pip install -e '.[distributed]').
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import graphc
import graphc.distributed

GRAPH = Path(__file__).resolve().parents[1] / "mlp.graph"
BATCH = 2048


def worker(steps: int, compress: str | None) -> None:
    """Under mpiexec: time ``steps`` steps; rank 0 prints one JSON line."""
    comm = graphc.distributed.init(compress=compress)
    threads = max(1, (os.cpu_count() or 1) // comm.local_size)
    opt = graphc.optim.Adam(lr=1e-4)
    model = graphc.compile(GRAPH, optimizer=opt, data_parallel=comm, num_threads=threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 784)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, BATCH)]
    mx, my = comm.shard(x, y)
    params = comm.broadcast_params(model.init_params(seed=0))
    state = model.init_state(params)

    spent = [0.0]
    allreduce = comm.allreduce

    def timed(flat: np.ndarray) -> np.ndarray:
        t = time.perf_counter()
        out = allreduce(flat)
        spent[0] += time.perf_counter() - t
        return out

    comm.allreduce = timed                    # type: ignore[method-assign]
    result: dict[str, object] = {"ranks": comm.size, "threads": threads,
                                 "buffer_mb": model._split.size * 4 / 2**20}
    runs = {"data_parallel": lambda: model.train_step(params, state, x=mx, y=my)}
    if comm.size == 1:                        # the plain fused step, for the split's cost
        plain = graphc.compile(GRAPH, optimizer=opt, num_threads=threads)
        p2 = plain.init_params(seed=0)
        s2 = plain.init_state(p2)
        runs["train_step"] = lambda: plain.train_step(p2, s2, x=x, y=y)
    for name, step in runs.items():
        times, shares = [], []
        for i in range(steps + 3):            # 3 warm-up steps
            comm.barrier()
            spent[0] = 0.0
            t = time.perf_counter()
            step()
            if i >= 3:
                times.append(time.perf_counter() - t)
                shares.append(spent[0])
        result[name] = {"step_ms": 1e3 * statistics.median(times),
                        "best_ms": 1e3 * min(times),
                        "allreduce_ms": 1e3 * statistics.median(shares)}
    alone = []                                # the collective without the wait for a peer
    flat = np.ones(model._split.size, np.float32)
    for _ in range(steps):
        comm.barrier()
        t = time.perf_counter()
        allreduce(flat.copy())
        alone.append(time.perf_counter() - t)
    result["alone_ms"] = 1e3 * statistics.median(alone)
    if comm.rank == 0:
        print(json.dumps(result), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--compress", choices=["bf16"], default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.steps, args.compress)
    here = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(here) if here.exists() else shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit("no mpiexec: pip install -e '.[distributed]'")
    rows = []
    for n in (1, 2):
        cmd = [mpiexec, "-n", str(n), sys.executable, __file__, "--worker",
               "--steps", str(args.steps)] + (["--compress", args.compress]
                                              if args.compress else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"global batch {BATCH}, Adam, {args.steps} steps (median; best in brackets); "
          f"gradient buffer {rows[0]['buffer_mb']:.2f} MB"
          + (f", sent as {args.compress}" if args.compress else ""))
    print(f"{'':<40}{'step ms':>16}{'allreduce ms':>14}{'share':>8}{'speedup':>9}")
    base = rows[0]["train_step"]["step_ms"]
    lines = [("1 rank, train_step (no data_parallel)", rows[0], "train_step")]
    for r in rows:
        s = "s" if r["ranks"] > 1 else ""
        t = "s" if r["threads"] > 1 else ""
        lines.append((f"{r['ranks']} rank{s} x {r['threads']} thread{t}, data_parallel", r,
                      "data_parallel"))
    for label, r, key in lines:
        m = r[key]
        print(f"{label:<40}{m['step_ms']:>9.1f} ({m['best_ms']:5.1f}){m['allreduce_ms']:>14.2f}"
              f"{m['allreduce_ms'] / m['step_ms']:>8.1%}{base / m['step_ms']:>8.2f}x")
    print(f"the allreduce alone (all ranks ready) at 2 ranks: {rows[1]['alone_ms']:.2f} ms; in "
          f"the step it also waits for the slower rank. On a machine others share, the "
          f"figures are rough.")


if __name__ == "__main__":
    main()
