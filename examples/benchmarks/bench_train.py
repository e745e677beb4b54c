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
    ap.add_argument("--peers", action="store_true",
                    help="also time Adam steps in NumPy, JAX and PyTorch (where installed)")
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

    if args.peers:
        steps.update(peer_steps(p0, x, y, lr=1e-4))
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


def peer_steps(p0: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, lr: float
               ) -> dict[str, Callable[[], object]]:
    """One Adam step (PyTorch's rule, as graphc.optim.Adam) of each peer that is installed."""
    from bench_suite import numpy_grads
    out: dict[str, Callable[[], object]] = {}
    b1, b2, eps = 0.9, 0.999, 1e-8
    pn = {k: v.copy() for k, v in p0.items()}
    mn = {k: np.zeros_like(v) for k, v in p0.items()}
    vn = {k: np.zeros_like(v) for k, v in p0.items()}
    tn = [0]

    def numpy_adam() -> None:
        _, grads = numpy_grads(x, y, pn)
        tn[0] += 1
        step, bc2 = lr / (1 - b1 ** tn[0]), np.sqrt(1 - b2 ** tn[0])
        for k, g in grads.items():
            mn[k] *= b1
            mn[k] += (1 - b1) * g
            vn[k] *= b2
            vn[k] += (1 - b2) * g * g
            pn[k] -= step * mn[k] / (np.sqrt(vn[k]) / bc2 + eps)
    out["NumPy Adam (by hand)"] = numpy_adam
    try:
        out["jax.jit Adam"] = _jax_adam(p0, x, y, lr, b1, b2, eps)
    except ImportError:
        pass
    try:
        out["PyTorch Adam"] = _torch_adam(p0, x, y, lr)
    except ImportError:
        pass
    return out


def _jax_adam(p0: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, lr: float, b1: float,
              b2: float, eps: float) -> Callable[[], object]:
    import jax
    import jax.numpy as jnp

    def loss_fn(p: dict, x: jax.Array, y: jax.Array) -> jax.Array:
        h = jax.nn.relu(x @ p["W1"] + p["b1"])
        h = jax.nn.relu(h @ p["W2"] + p["b2"])
        z = h @ p["W3"] + p["b3"]
        return jnp.mean(-jnp.sum(y * jax.nn.log_softmax(z), axis=1))

    def step(p: dict, m: dict, v: dict, t: jax.Array, x: jax.Array, y: jax.Array
             ) -> tuple:
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        t = t + 1
        m = jax.tree_util.tree_map(lambda a, b: b1 * a + (1 - b1) * b, m, g)
        v = jax.tree_util.tree_map(lambda a, b: b2 * a + (1 - b2) * b * b, v, g)
        size, bc2 = lr / (1 - b1 ** t), jnp.sqrt(1 - b2 ** t)
        p = jax.tree_util.tree_map(lambda w, a, b: w - size * a / (jnp.sqrt(b) / bc2 + eps),
                                   p, m, v)
        return loss, p, m, v, t

    jstep = jax.jit(step, donate_argnums=(0, 1, 2))
    st = {"p": {k: jnp.asarray(v) for k, v in p0.items()},
          "m": {k: jnp.zeros(v.shape, v.dtype) for k, v in p0.items()},
          "v": {k: jnp.zeros(v.shape, v.dtype) for k, v in p0.items()},
          "t": jnp.asarray(0.0, jnp.float32)}
    xj, yj = jnp.asarray(x), jnp.asarray(y)

    def call() -> None:
        loss, st["p"], st["m"], st["v"], st["t"] = jstep(st["p"], st["m"], st["v"], st["t"],
                                                         xj, yj)
        loss.block_until_ready()
    return call


def _torch_adam(p0: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, lr: float
                ) -> Callable[[], object]:
    import torch
    p = {k: torch.tensor(v, requires_grad=True) for k, v in p0.items()}
    opt = torch.optim.Adam(p.values(), lr=lr)
    xt, yt = torch.tensor(x), torch.tensor(y)

    def call() -> None:
        h = torch.relu(xt @ p["W1"] + p["b1"])
        h = torch.relu(h @ p["W2"] + p["b2"])
        z = h @ p["W3"] + p["b3"]
        loss = -(yt * torch.log_softmax(z, 1)).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return call


if __name__ == "__main__":
    main()
