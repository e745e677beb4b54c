"""The example MLP (784 -> 256 -> 10, examples/mlp.graph): forward and value_and_grad time of
graphc's native code vs the same computation written in NumPy, as ratios from one run.

    python examples/benchmarks/bench_mlp.py [--batch 32 256] [--repeat 200]

NumPy's matmul speed depends on OpenBLAS's kernel choice (this environment may set
OPENBLAS_CORETYPE); the header line prints it so figures can be compared."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

import graphc

GRAPH = Path(__file__).resolve().parents[1] / "mlp.graph"


def numpy_forward(x: np.ndarray, y: np.ndarray, W1: np.ndarray, b1: np.ndarray,
                  W2: np.ndarray, b2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = np.maximum(x @ W1 + b1, 0)
    logits = h @ W2 + b2
    top = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(axis=1, keepdims=True)) + top
    loss = np.mean(np.sum(y * (lse - logits), axis=1))
    return loss, logits


def numpy_value_and_grad(x: np.ndarray, y: np.ndarray, W1: np.ndarray, b1: np.ndarray,
                         W2: np.ndarray, b2: np.ndarray) -> tuple:
    pre = x @ W1 + b1
    h = np.maximum(pre, 0)
    logits = h @ W2 + b2
    top = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - top)
    s = e.sum(axis=1, keepdims=True)
    lse = np.log(s) + top
    loss = np.mean(np.sum(y * (lse - logits), axis=1))
    n = x.shape[0]
    g_logits = (e / s * y.sum(axis=1, keepdims=True) - y) / n
    g_h = g_logits @ W2.T
    g_pre = g_h * (pre > 0)
    return (loss, logits), (x.T @ g_pre, g_pre.sum(0), h.T @ g_logits, g_logits.sum(0))


def best(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[32, 256])
    ap.add_argument("--repeat", type=int, default=200)
    args = ap.parse_args()
    t = time.perf_counter()
    model = graphc.compile(str(GRAPH))
    compile_s = time.perf_counter() - t
    params = model.init_params(seed=0)
    print(f"compile: {compile_s:.3f} s  (OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', 'unset')}, numpy {np.__version__})")
    print(f"{'batch':>5} {'what':<15} {'graphc ms':>10} {'numpy ms':>10} {'numpy/graphc':>13}")
    rng = np.random.default_rng(0)
    for n in args.batch:
        x = rng.standard_normal((n, 784)).astype(np.float32)
        y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]
        ours = model(x=x, y=y, **params)
        theirs = numpy_forward(x, y, **params)
        np.testing.assert_allclose(ours["loss"], theirs[0], rtol=1e-4)
        _, grads = model.value_and_grad(x=x, y=y, **params)
        np.testing.assert_allclose(grads["W1"], numpy_value_and_grad(x, y, **params)[1][0],
                                   rtol=1e-3, atol=1e-6)
        rows = [("forward", lambda: model(x=x, y=y, **params),
                 lambda: numpy_forward(x, y, **params)),
                ("value_and_grad", lambda: model.value_and_grad(x=x, y=y, **params),
                 lambda: numpy_value_and_grad(x, y, **params))]
        for what, g, ref in rows:
            tg, tn = best(g, args.repeat), best(ref, args.repeat)
            print(f"{n:>5} {what:<15} {tg * 1e3:>10.3f} {tn * 1e3:>10.3f} {tn / tg:>13.2f}")


if __name__ == "__main__":
    main()
