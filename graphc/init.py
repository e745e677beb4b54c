"""Param initializers (docs/language.md): Keras's definitions, drawn from one ``default_rng(seed)``
in declaration order so that a seed reproduces every param."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from graphc.program import Decl, Init

Draw = Callable[[np.random.Generator, tuple[int, ...], tuple[float, ...]], np.ndarray]


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """Keras's fans: with r = prod(shape[:-2]) (a conv kernel's window), fan_in =
    shape[-2] * r and fan_out = shape[-1] * r (rank 1: both shape[0]; a scalar: both 1)."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    window = math.prod(shape[:-2])
    return shape[-2] * window, shape[-1] * window


def _glorot_limit(shape: tuple[int, ...], k: float) -> float:
    fan_in, fan_out = fans(shape)
    return math.sqrt(k / max(fan_in + fan_out, 1))


def _he_limit(shape: tuple[int, ...], k: float) -> float:
    return math.sqrt(k / max(fans(shape)[0], 1))


@dataclass(frozen=True)
class Initializer:
    params: tuple[str, ...]                      # argument names, in order
    draw: Draw
    check: Callable[[tuple[float, ...]], str | None] = lambda args: None   # why args are bad


def _check_std(a: tuple[float, ...]) -> str | None:
    return None if math.isfinite(a[0]) and a[0] >= 0 else f"std must be finite and >= 0, " \
        f"got {a[0]:g}"


def _check_range(a: tuple[float, ...]) -> str | None:
    lo, hi = a
    if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(hi - lo)):
        return f"lo and hi must be finite numbers, got {lo:g} and {hi:g}"
    return None if lo <= hi else f"lo must be <= hi, got {lo:g} > {hi:g}"


INITIALIZERS: dict[str, Initializer] = {
    "zeros": Initializer((), lambda rng, s, a: np.zeros(s)),
    "ones": Initializer((), lambda rng, s, a: np.ones(s)),
    "normal": Initializer(("std",), lambda rng, s, a: rng.normal(0.0, a[0], s), _check_std),
    "uniform": Initializer(("lo", "hi"), lambda rng, s, a: rng.uniform(a[0], a[1], s),
                           _check_range),
    "glorot_uniform": Initializer((), lambda rng, s, a: rng.uniform(
        -_glorot_limit(s, 6), _glorot_limit(s, 6), s)),
    "glorot_normal": Initializer((), lambda rng, s, a: rng.normal(0.0, _glorot_limit(s, 2), s)),
    "he_uniform": Initializer((), lambda rng, s, a: rng.uniform(
        -_he_limit(s, 6), _he_limit(s, 6), s)),
    "he_normal": Initializer((), lambda rng, s, a: rng.normal(0.0, _he_limit(s, 2), s)),
}


def default_init(decl: Decl) -> Init:
    """Keras Dense defaults: glorot_uniform for rank >= 2, zeros otherwise."""
    return Init("glorot_uniform") if decl.type.rank >= 2 else Init("zeros")


def init_params(params: tuple[Decl, ...], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for decl in params:
        init = decl.init or default_init(decl)
        shape = tuple(int(d) for d in decl.type.shape)
        drawn = INITIALIZERS[init.name].draw(rng, shape, init.args)
        out[decl.name] = np.array(drawn, dtype=decl.type.dtype.np)
    return out
