"""A small CNN training step on 8x8 images (conv 3x3x32, relu, conv 3x3x64, relu, max-pool 2,
dense 10; softmax cross-entropy; SGD), graphc's ``sgd_step`` against jax.jit and PyTorch
eager when installed, in one run, pinned to one core.

    python examples/benchmarks/bench_cnn.py [--batch 128] [--threads 1] [--rounds 3]

Ratios are peer time / graphc time: above 1, graphc is faster. The steps take turns, a round
each, and each reports its best round's median: a machine shared with other work slows a round,
not one step's every measurement."""
from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

SOURCE = """
graph cnn {
    input  x: f32[N, 8, 8, 1]
    input  y: f32[N, 10]
    param  w1: f32[3, 3, 1, 32] = he_normal
    param  c1: f32[32]
    param  w2: f32[3, 3, 32, 64] = he_normal
    param  c2: f32[64]
    param  W:  f32[1024, 10] = glorot_uniform
    param  b:  f32[10]
    h1 = relu(conv2d(x, w1, padding="same") + c1)
    h2 = max_pool2d(relu(conv2d(h1, w2, padding="same") + c2), 2)
    logits = reshape(h2, [N, 1024]) @ W + b
    loss = mean(softmax_cross_entropy(logits, y))
    output loss
    grad loss
}
"""


def median_time(fn: Callable[[], object], budget: float = 1.0) -> float:
    fn()
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < budget:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def jax_step(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> Callable[[], None]:
    import jax
    import jax.numpy as jnp

    def loss_fn(p: dict[str, Any], x: Any, y: Any) -> Any:
        dn = ("NHWC", "HWIO", "NHWC")
        h = jax.lax.conv_general_dilated(x, p["w1"], (1, 1), "SAME", dimension_numbers=dn)
        h = jax.nn.relu(h + p["c1"])
        h = jax.lax.conv_general_dilated(h, p["w2"], (1, 1), "SAME", dimension_numbers=dn)
        h = jax.nn.relu(h + p["c2"])
        h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        z = h.reshape(h.shape[0], -1) @ p["W"] + p["b"]
        return jnp.mean(-jnp.sum(y * jax.nn.log_softmax(z), axis=1))

    @jax.jit
    def step(p: dict[str, Any], x: Any, y: Any) -> tuple[Any, Any]:
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        return loss, jax.tree_util.tree_map(lambda a, b: a - 1e-3 * b, p, g)

    state = {"p": {k: jnp.asarray(v) for k, v in params.items()}}
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def call() -> None:
        loss, state["p"] = step(state["p"], xj, yj)
        loss.block_until_ready()
    return call


def torch_step(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray,
               threads: int) -> Callable[[], None]:
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    p = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    xt = torch.tensor(x).permute(0, 3, 1, 2).contiguous()         # PyTorch is NCHW
    yt = torch.tensor(y)
    w1 = lambda: p["w1"].permute(3, 2, 0, 1)                       # HWIO -> OIHW
    w2 = lambda: p["w2"].permute(3, 2, 0, 1)

    def call() -> None:
        h = F.relu(F.conv2d(xt, w1(), p["c1"], padding=1))
        h = F.max_pool2d(F.relu(F.conv2d(h, w2(), p["c2"], padding=1)), 2)
        z = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1) @ p["W"] + p["b"]
        loss = -(yt * torch.log_softmax(z, 1)).sum(1).mean()
        for v in p.values():
            v.grad = None
        loss.backward()
        with torch.no_grad():
            for v in p.values():
                v -= 1e-3 * v.grad
    return call


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if args.threads == 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import graphc
    t = time.perf_counter()
    model = graphc.compile_source(SOURCE, num_threads=args.threads)
    compile_s = time.perf_counter() - t
    params = model.init_params(seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 8, 8, 1)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, args.batch)]
    steps: dict[str, Callable[[], object]] = {
        "graphc sgd_step": lambda: model.sgd_step(params, 1e-3, x=x, y=y)}
    init = model.init_params(seed=0)
    try:
        steps["jax.jit"] = jax_step(init, x, y)
    except ImportError:
        pass
    try:
        steps["PyTorch eager"] = torch_step(init, x, y, args.threads)
    except ImportError:
        pass
    rows = {name: median_time(fn) for name, fn in steps.items()}
    for _ in range(args.rounds - 1):
        rows = {name: min(rows[name], median_time(fn)) for name, fn in steps.items()}
    ours = rows["graphc sgd_step"]
    print(f"CNN train step, batch {args.batch}, {args.threads} thread(s), best of "
          f"{args.rounds} rounds; graphc compile {compile_s:.2f} s\n")
    print("| step | median ms | peer / graphc |")
    print("|---|---|---|")
    for name, sec in rows.items():
        print(f"| {name} | {sec * 1e3:.3f} | {sec / ours:.2f} |")


if __name__ == "__main__":
    main()
