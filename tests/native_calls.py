"""What the tests of the native call path share: a two-layer MLP, a way to count the calls
that take the Python path, and its data."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import numpy as np

import graphc
from graphc import model as model_module

MLP = """graph m {
  input x: f32[N, 3]
  input y: f32[N, 2]
  param W1: f32[3, 4] = glorot_uniform
  param b1: f32[4] = zeros
  param W2: f32[4, 2] = glorot_uniform
  loss = mean(softmax_cross_entropy(relu(x @ W1 + b1) @ W2, y))
  output loss
  grad loss
}
"""


class Counting:
    """Counts the calls that take the Python path (it alone calls ``Model._run``)."""

    def __init__(self, m: graphc.Model) -> None:
        self.m, self.n = m, 0
        real = model_module.Model._run

        def run(*a: Any, **kw: Any) -> Any:
            self.n += 1
            return real(m, *a, **kw)
        m._run = run                                    # type: ignore[method-assign]

    def __enter__(self) -> Counting:  # noqa: PYI034 - not subclassed
        return self

    def __exit__(self, *exc: object) -> None:
        del self.m._run


def data(n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    params = {"W1": rng.standard_normal((3, 4)).astype(np.float32),
              "b1": rng.standard_normal(4).astype(np.float32),
              "W2": rng.standard_normal((4, 2)).astype(np.float32)}
    inputs = {"x": rng.standard_normal((n, 3)).astype(np.float32),
              "y": np.eye(2, dtype=np.float32)[rng.integers(0, 2, n)]}
    return params, inputs


def copied(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in params.items()}


def same_steps_without_native(net: graphc.Model, steps: str, run: str) -> None:
    """``steps`` (source defining ``steps(m)``, which returns the type name of the method it
    calls, then what the calls gave) run here on ``net`` natively and, by ``run``, in a
    process with GRAPHC_NATIVE_CALL=0 on the MLP: the Python path gives the same."""
    env = {**os.environ, "GRAPHC_NATIVE_CALL": "0"}
    done = subprocess.run([sys.executable, "-c", steps + run], input=MLP, env=env,
                          capture_output=True, text=True, check=True)
    python = done.stdout.split()
    scope: dict[str, Any] = {}
    exec(steps, scope)  # noqa: S102 - the same steps in this process, natively
    native = scope["steps"](net)
    assert native[0] == "method_descriptor" and python[0] == "function"
    assert native[1:] == python[1:]
