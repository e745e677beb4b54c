"""Fusion and memory planning on the example MLPs (examples/mlp.graph, 784-256-10, and
examples/mlp3.graph, 784-256-256-10), value_and_grad, all from one run:

- kernels and peak arena bytes: one kernel per op (-O0, the unfused baseline) and the fusion +
  memplan passes (-O2);
- the peak with checkpointing ("elementwise", "all");
- at batch 2048, everything a training step holds (the caller's inputs, params, gradients and
  outputs, plus the arena) against what it needs (those, plus the activations backward truly
  needs: each hidden layer and the class probabilities);
- the fused vs unfused time of value_and_grad and of the SGD step at batch 256.

    python examples/benchmarks/bench_fusion_memory.py [--batch 256] [--big 2048] [--repeat 40]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

import graphc
from graphc.ir.types import dim_eval, dim_str
from graphc.passes import run_pipeline
from graphc.runtime import compile_module

EXAMPLES = Path(__file__).resolve().parents[1]
GRAPHS = ("mlp.graph", "mlp3.graph")


def kernels_and_peak(mod: Any, entry: str = "backward") -> tuple[int, Any]:
    plan = mod.entries[entry].plan
    return len(plan.steps), plan.peak


def memory(name: str, big: int) -> Any:
    model = graphc.compile(EXAMPLES / name, cache=False)
    flat = {k: run_pipeline(f, 0) for k, f in model.funcs.items()}
    rows = [("one kernel per op (-O0)", *kernels_and_peak(compile_module(flat))),
            ("fusion + memplan", *kernels_and_peak(model._native))]
    for policy in ("elementwise", "all"):
        ck = graphc.compile(EXAMPLES / name, cache=False, checkpoint=policy)
        rows.append((f"+ checkpoint={policy}", *kernels_and_peak(ck._native)))
    print(f"\n{name}: value_and_grad (backward)")
    print(f"  {'':<26}{'kernels':>8}  {'arena bytes':<14}{f'at N={big}':>14}")
    for label, count, peak in rows:
        print(f"  {label:<26}{count:>8}  {dim_str(peak):<14}{dim_eval(peak, {'N': big}):>14,}")
    return model


def footprint(model: graphc.Model, n: int) -> None:
    """Bytes a value_and_grad call holds at batch n vs what it needs."""
    f4 = 4
    params = sum(f4 * int(np.prod(t.shape)) for t in model.params.values())
    inputs = sum(f4 * int(np.prod(t.concrete({"N": n}))) for t in model.inputs.values())
    outputs = sum(f4 * int(np.prod(t.concrete({"N": n}))) for t in model.outputs.values())
    widths = [t.shape[1] for name, t in model.params.items() if name.startswith("W")]
    needed = f4 * n * sum(widths)           # each hidden layer and the class probabilities
    plan = model.memory_plan(N=n)
    held = params + inputs + params + outputs + plan.peak_bytes
    ideal = params + params + inputs + outputs + needed
    print(f"  at N={n}: params {params:,} + gradients {params:,} + inputs {inputs:,} + outputs "
          f"{outputs:,} + arena {plan.peak_bytes:,} = {held:,} bytes")
    print(f"  needed: the same with the activations backward needs ({needed:,}) instead of the "
          f"arena = {ideal:,}: ratio {held / ideal:.3f} (target <= 1.3); arena / activations "
          f"{plan.peak_bytes / needed:.3f}")
    print(f"  saved for backward: {', '.join(b.name for b in plan.saved)}")


def timing(model: graphc.Model, n: int, repeat: int) -> None:
    """Median ms of the fused and unfused modules, calls interleaved so both see the same
    machine state."""
    rng = np.random.default_rng(0)
    params = model.init_params(0)
    args = {"x": rng.standard_normal((n, 784)).astype(np.float32),
            "y": np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)], **params}
    flat = {k: run_pipeline(f, 0) for k, f in model.funcs.items()}
    mods = {"fused": model._native, "unfused": compile_module(flat)}
    for entry, extra in (("backward", {}), ("sgd_step", {"lr": 0.01})):
        times: dict[str, list[float]] = {k: [] for k in mods}
        for _ in range(3):
            for mod in mods.values():
                mod.call(entry, {**args, **extra})
        for _ in range(repeat):
            for k, mod in mods.items():
                t = time.perf_counter()
                mod.call(entry, {**args, **extra})
                times[k].append(time.perf_counter() - t)
        fused, unfused = (statistics.median(times[k]) * 1e3 for k in ("fused", "unfused"))
        what = "value_and_grad" if entry == "backward" else "sgd_step"
        print(f"  {what:<15} N={n}: fused {fused:.3f} ms, unfused {unfused:.3f} ms, "
              f"unfused / fused = {unfused / fused:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--big", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=40)
    args = ap.parse_args()
    for name in GRAPHS:
        model = memory(name, args.big)
        footprint(model, args.big)
        timing(model, args.batch, args.repeat)


if __name__ == "__main__":
    main()
