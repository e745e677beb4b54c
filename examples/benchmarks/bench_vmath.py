"""Vector math and memory-bound kernels: exp, tanh, log, sigmoid, a row-wise softmax and a sum
along the contiguous axis, over a 1M-element f32 vector and a 256x1024 f32 matrix, graphc's
native code vs NumPy, medians and ratios from one run (ratio = NumPy time / graphc time, so
> 1 means graphc is faster).

    python examples/benchmarks/bench_vmath.py [--repeat 30] [--json PATH]

A graphc time is a whole call (argument checks, a fresh result, the kernel), as NumPy's is a
whole ufunc call with a fresh result. Each graphc result is checked against NumPy first."""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

import graphc

SHAPES = {"1M": ("f32[N]", (1 << 20,)), "256x1024": ("f32[B, 1024]", (256, 1024))}


def np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# name -> (graph expression, NumPy version, input range)
OPS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray], tuple[float, float]]] = {
    "exp": ("exp(x)", np.exp, (-10.0, 10.0)),
    "tanh": ("tanh(x)", np.tanh, (-5.0, 5.0)),
    "log": ("log(x)", np.log, (1e-3, 1e3)),
    "sigmoid": ("sigmoid(x)", lambda x: 1 / (1 + np.exp(-x)), (-10.0, 10.0)),
    "softmax": ("softmax(x, axis=-1)", np_softmax, (-10.0, 10.0)),
    "sum": ("sum(x, axis=-1)", lambda x: x.sum(axis=-1), (-1.0, 1.0)),
}


def median_time(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_one(op: str, shape_name: str, repeat: int, rng: np.random.Generator) -> dict:
    expr, ref, (lo, hi) = OPS[op]
    decl, shape = SHAPES[shape_name]
    model = graphc.compile_source(f"graph g {{\n  input x: {decl}\n  output y = {expr}\n}}\n")
    x = rng.uniform(lo, hi, shape).astype(np.float32)
    got = model(x=x)["y"]
    want = ref(x)
    # a long sum's rounding depends on the order of adds (NumPy's is pairwise)
    rtol = 1e-4 if op in ("sum", "softmax") else 1e-5
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-6 * np.abs(want).max(),
                               err_msg=f"{op} {shape_name}")
    tg = median_time(lambda: model(x=x), repeat)
    tn = median_time(lambda: ref(x), repeat)
    return {"op": op, "shape": shape_name, "graphc_us": tg * 1e6, "numpy_us": tn * 1e6,
            "ratio": tn / tg, "graphc_ns_per_elem": tg * 1e9 / x.size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--ops", nargs="*", default=list(OPS), choices=list(OPS))
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = [bench_one(op, s, args.repeat, rng) for op in args.ops for s in SHAPES]
    print(f"graphc {graphc.__version__}, NumPy {np.__version__}, {platform.machine()}, "
          f"median of {args.repeat}; ratio = NumPy / graphc (> 1: graphc faster)\n")
    print("| op | shape | graphc (µs) | NumPy (µs) | ratio | graphc ns/elem |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['op']} | {r['shape']} | {r['graphc_us']:.1f} | {r['numpy_us']:.1f} | "
              f"{r['ratio']:.2f} | {r['graphc_ns_per_elem']:.3f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"numpy": np.__version__, "repeat": args.repeat, "results": rows}, fh,
                      indent=1)


if __name__ == "__main__":
    main()
