"""Optimisers for ``compile(..., optimizer=opt)``. Each one names the state it keeps per param
(PyTorch's slot names) and builds its update rule as IR, so that the whole training step
(graphc/train.py) compiles into one native call. The rules and defaults are torch.optim's."""
from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass, fields
from typing import Any

import numpy as np

from graphc.ir.core import Value, const, make
from graphc.ir.errors import GraphArgumentTypeError, GraphCallError
from graphc.ir.types import DType

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "RMSprop"]


@dataclass(frozen=True)
class Scalars:
    """The per-call scalars every update may use (f64, shape ())."""
    lr: Value               # the call's learning rate
    t: Value                # the step count after this step (1 on the first), as f64
    first: Value            # bool: this is the first step taken (state never written yet)


def _number(owner: str, name: str, value: Any, lo: float = 0.0, *, below: float | None = None,
            optional: bool = False) -> float | None:
    """A hyperparameter checked as PyTorch does (finite, >= lo, < below): a GraphCallError."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise GraphArgumentTypeError(f"{owner}: {name} must be a number, got {value!r}")
    x = float(value)
    if not math.isfinite(x) or x < lo or (below is not None and x >= below):
        bounds = f">= {lo:g}" + (f" and < {below:g}" if below is not None else "")
        raise GraphCallError(f"{owner}: {name} must be finite and {bounds}, got {value!r}")
    return x


def _cast(x: Value, like: Value) -> Value:
    return x if x.dtype is like.dtype else make("cast", x, dtype=like.dtype)


@dataclass(frozen=True)
class Optimizer:
    """What every optimiser shares: gradient clipping and skipping non-finite steps.

    clip_norm: scale all gradients together so that their global L2 norm is at most this
    (``torch.nn.utils.clip_grad_norm_``: factor ``min(1, clip_norm / (norm + 1e-6))``);
    clip_value: clamp each gradient element to [-clip_value, clip_value] (after clip_norm);
    skip_nonfinite: a step whose gradients hold NaN/Inf changes neither params nor state."""
    _: KW_ONLY
    clip_norm: float | None = None
    clip_value: float | None = None
    skip_nonfinite: bool = True

    def __post_init__(self) -> None:
        name = type(self).__name__
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in ("clip_norm", "clip_value"):
                _number(name, f.name, v, optional=True)
                if v is not None and v <= 0:
                    raise GraphCallError(f"{name}: {f.name} must be > 0, got {v!r}")
            elif f.name in ("nesterov", "amsgrad", "centered", "skip_nonfinite"):
                if not isinstance(v, (bool, np.bool_)):
                    raise GraphArgumentTypeError(f"{name}: {f.name} must be True or False, "
                                                 f"got {v!r}")
            elif f.name == "betas":
                if not isinstance(v, (tuple, list)) or len(v) != 2:
                    raise GraphArgumentTypeError(f"{name}: betas must be a pair, got {v!r}")
                for i, b in enumerate(v):
                    _number(name, f"betas[{i}]", b, below=1.0)
            elif f.name == "alpha":
                _number(name, f.name, v, below=1.0)
            else:
                _number(name, f.name, v)
        self._check()

    def _check(self) -> None:
        """Rules between hyperparameters (PyTorch's)."""

    def slots(self) -> tuple[str, ...]:
        """The state kept per param: ``"W1.<slot>"`` for each slot, in this order."""
        raise NotImplementedError

    def update(self, p: Value, g: Value, s: dict[str, Value], k: Scalars
               ) -> tuple[Value, dict[str, Value]]:
        """The new param and the new value of each slot, from the (clipped) gradient ``g``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        own = [f for f in fields(self) if f.name not in ("clip_norm", "clip_value",
                                                          "skip_nonfinite")]
        shared = [f for f in fields(self) if f not in own]
        shown = [f"{f.name}={getattr(self, f.name)!r}" for f in own + shared
                 if getattr(self, f.name) != f.default]
        return f"{type(self).__name__}({', '.join(shown)})"


@dataclass(frozen=True, repr=False)
class SGD(Optimizer):
    """torch.optim.SGD: the momentum buffer starts as the first gradient (undampened);
    ``nesterov`` steps along ``g + momentum * buf``."""
    lr: float = 1e-3
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    def _check(self) -> None:
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise GraphCallError("SGD: nesterov momentum requires a momentum > 0 and zero "
                                 "dampening")

    def slots(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum else ()

    def update(self, p: Value, g: Value, s: dict[str, Value], k: Scalars
               ) -> tuple[Value, dict[str, Value]]:
        if self.weight_decay:
            g = g + p * self.weight_decay
        new: dict[str, Value] = {}
        if self.momentum:
            buf = s["momentum_buffer"]
            later = buf * self.momentum + g * (1 - self.dampening)
            new["momentum_buffer"] = buf = make("where", k.first, g, later)
            g = g + buf * self.momentum if self.nesterov else buf
        return p - g * _cast(k.lr, p), new


@dataclass(frozen=True, repr=False)
class Adam(Optimizer):
    """torch.optim.Adam: L2 weight decay added to the gradient; ``amsgrad`` keeps the running
    maximum of the second moment (``max_exp_avg_sq``)."""
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False
    decoupled = False               # AdamW: decay the param, not the gradient

    def slots(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self.amsgrad else ())

    def update(self, p: Value, g: Value, s: dict[str, Value], k: Scalars
               ) -> tuple[Value, dict[str, Value]]:
        b1, b2 = (float(b) for b in self.betas)
        lr = _cast(k.lr, p)
        if self.weight_decay and self.decoupled:
            p = p * (1 - lr * self.weight_decay)
        elif self.weight_decay:
            g = g + p * self.weight_decay
        m = s["exp_avg"] * b1 + g * (1 - b1)
        v = s["exp_avg_sq"] * b2 + g * g * (1 - b2)
        new = {"exp_avg": m, "exp_avg_sq": v}
        # bias corrections in f64 from the step count, as PyTorch computes them in Python
        step_size = _cast(k.lr / (1 - make("pow", const(b1, DType.f64), k.t)), p)
        bc2_sqrt = _cast(make("sqrt", 1 - make("pow", const(b2, DType.f64), k.t)), p)
        if self.amsgrad:
            v = new["max_exp_avg_sq"] = make("maximum", s["max_exp_avg_sq"], v)
        denom = make("sqrt", v) / bc2_sqrt + self.eps
        return p - step_size * (m / denom), new


@dataclass(frozen=True, repr=False)
class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay ``p *= 1 - lr * weight_decay``."""
    weight_decay: float = 1e-2
    decoupled = True


@dataclass(frozen=True, repr=False)
class RMSprop(Optimizer):
    """torch.optim.RMSprop: ``centered`` divides by the running variance estimate instead; with
    ``momentum`` the buffer (zeros at first) accumulates ``g / avg``."""
    lr: float = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    centered: bool = False

    def slots(self) -> tuple[str, ...]:
        return ("square_avg",) + (("momentum_buffer",) if self.momentum else ()) \
            + (("grad_avg",) if self.centered else ())

    def update(self, p: Value, g: Value, s: dict[str, Value], k: Scalars
               ) -> tuple[Value, dict[str, Value]]:
        a = float(self.alpha)
        if self.weight_decay:
            g = g + p * self.weight_decay
        sq = s["square_avg"] * a + g * g * (1 - a)
        new = {"square_avg": sq}
        if self.centered:
            ga = new["grad_avg"] = s["grad_avg"] * a + g * (1 - a)
            avg = make("sqrt", sq - ga * ga) + self.eps
        else:
            avg = make("sqrt", sq) + self.eps
        step = g / avg
        if self.momentum:
            step = new["momentum_buffer"] = s["momentum_buffer"] * self.momentum + step
        return p - step * _cast(k.lr, p), new


def check(opt: Any) -> Optimizer:
    """``opt`` if it is one of the optimisers (a GraphArgumentTypeError otherwise)."""
    if not isinstance(opt, Optimizer) or type(opt) is Optimizer:
        raise GraphArgumentTypeError(f"optimizer must be a graphc.optim optimiser such as "
                                     f"graphc.optim.Adam(lr=1e-3), got {opt!r}")
    return opt
