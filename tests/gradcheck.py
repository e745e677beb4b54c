"""Finite-difference helpers shared by the autodiff and op tests: the numeric truth that every
symbolic gradient is compared against."""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from graphc.ir import interp
from graphc.ir.core import Func, Value


def numeric_grad(f: Callable[[np.ndarray], float], x: np.ndarray, eps: float = 1e-6
                 ) -> np.ndarray:
    """Central differences of scalar ``f`` at ``x`` (float64), one element at a time."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        hi = f(x)
        flat[i] = old - eps
        lo = f(x)
        flat[i] = old
        gflat[i] = (hi - lo) / (2 * eps)
    return g


def numeric_grads(func: Func, y: Value, args: Mapping[str, np.ndarray], wrt: list[str],
                  env: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
    """Finite-difference gradient of value ``y`` of ``func`` w.r.t. the named arguments."""
    target = Func(func.name, func.params, (y,))
    out = {}
    for name in wrt:
        def f(x: np.ndarray, name: str = name) -> float:
            return float(interp.run(target, {**args, name: x}, env)[0])
        out[name] = numeric_grad(f, args[name])
    return out
