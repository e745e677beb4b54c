"""The training step on the three-layer MLP (784 -> 256 -> 256 -> 10, examples/mlp3.graph):
``train_step`` with SGD and with Adam (each with its stats and the non-finite check, and
Adam once more with clipping and monitoring) against the plain fused ``sgd_step``, as ratios from
one run. Each is one native call per step; the calls are interleaved round by round so that a
busy machine slows them alike. ``--compare`` adds the train steps compiled without horizontal
fusion (``fusion{horizontal=false}``: the update of a param and of its state, and a gradient's
norm and non-finite count, as separate kernels), to see what it saves in the same run.

    taskset -c 0 python examples/benchmarks/bench_train.py [--batch 256] [--rounds 30]
        [--repeat 10] [--compare]
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

import graphc
from graphc.optim import SGD, Adam

GRAPH = Path(__file__).resolve().parents[1] / "mlp3.graph"
# the default pipeline (-O2) with kernels fused vertically only
NO_HORIZONTAL = ("autodiff,constant_fold,simplify,cse,dce,checkpoint,"
                 "fusion{horizontal=false},memplan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=10, help="steps per timing")
    ap.add_argument("--compare", action="store_true",
                    help="also time the train steps without horizontal fusion")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 784)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, args.batch)]

    plain = graphc.compile(GRAPH)
    p0 = plain.init_params(seed=0)
    steps: dict[str, Callable[[], object]] = {"sgd_step": partial(plain.sgd_step, p0, 1e-3,
                                                                  x=x, y=y)}
    variants = [("", None)] + ([(" (no horiz.)", NO_HORIZONTAL)] if args.compare else [])
    for (name, opt, monitor), (tag, passes) in itertools.product(
            (("train_step SGD", SGD(lr=1e-3), False),
             ("train_step Adam", Adam(lr=1e-4), False),
             ("  + clip, monitor", Adam(lr=1e-4, clip_norm=1.0), True)), variants):
        name += tag
        model = graphc.compile(GRAPH, optimizer=opt, monitor=monitor,
                               **({"passes": passes} if passes else {}))
        params = model.init_params(seed=0)
        state = model.init_state(params)
        steps[name] = partial(model.train_step, params, state, x=x, y=y)

    times: dict[str, list[float]] = {k: [] for k in steps}
    for fn in steps.values():
        fn()                                                 # warm: arena, caches
    for _ in range(args.rounds):
        for name, fn in steps.items():
            t = time.perf_counter()
            for _ in range(args.repeat):
                fn()
            times[name].append((time.perf_counter() - t) / args.repeat)
    base = statistics.median(times["sgd_step"]), min(times["sgd_step"])
    print(f"batch {args.batch}, {args.rounds} rounds of {args.repeat} steps; per step, the "
          f"median round and the best (the best is steadier on a shared machine)")
    print(f"{'step':<32}{'median ms':>10}{'/ sgd_step':>12}{'best ms':>10}{'/ sgd_step':>12}")
    for name, ts in times.items():
        med, low = statistics.median(ts), min(ts)
        print(f"{name:<32}{med * 1e3:>10.3f}{med / base[0]:>12.2f}{low * 1e3:>10.3f}"
              f"{low / base[1]:>12.2f}")


if __name__ == "__main__":
    main()
