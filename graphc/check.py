"""``graphc check``: the backward graph against float64 central differences, per argument."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graphc.ir import interp
from graphc.ir.core import Func, Value, make, rebuild, transform
from graphc.ir.types import DType, TensorType
from graphc.model import build_funcs
from graphc.passes import autodiff
from graphc.program import GraphDef

TOLERANCE = 1e-4


def to_f64(func: Func) -> Func:
    """The same function with every f32 value made f64, so differences are exact enough."""
    def widen(v: Value, ins: tuple[Value, ...]) -> Value:
        attrs = {k: (DType.f64 if a is DType.f32 else a) for k, a in v.attrs.items}
        return make(v.op, *ins, loc=v.loc, **attrs)
    return transform(func, widen)


def freeze_stop_gradients(func: Func, args: dict[str, np.ndarray], env: dict[str, int]
                          ) -> tuple[Func, dict[str, np.ndarray]]:
    """``func`` with each ``stop_gradient`` value turned into an extra argument held at its value
    at ``args``: the function whose derivative autodiff computes (truncated BPTT included)."""
    stops = [v for v in func.values() if v.op == "stop_gradient"]
    if not stops:
        return func, args
    held = interp.run(Func(func.name, func.params, tuple(stops)), args, env)
    frozen = {id(v): make("arg", name=f"__stop{i}", dtype=v.dtype, shape=v.shape)
              for i, v in enumerate(stops)}
    out = transform(func, lambda v, ins: frozen.get(id(v)) or rebuild(v, ins))
    new_params = tuple(frozen[id(v)] for v in stops)
    extra = {p.attrs["name"]: a for p, a in zip(new_params, held)}
    return Func(out.name, func.params + new_params, out.results), {**args, **extra}


def random_args(types: dict[str, TensorType], env: dict[str, int], rng: np.random.Generator
                ) -> dict[str, np.ndarray]:
    """Normal floats; integers in [0, 2) so that they index any dim of 2 or more (labels);
    random bools."""
    out = {}
    for name, ty in types.items():
        shape = ty.concrete(env)
        if ty.dtype.is_float:
            out[name] = rng.normal(size=shape).astype(ty.dtype.np)
        elif ty.dtype.is_int:
            out[name] = rng.integers(0, 2, size=shape).astype(ty.dtype.np)
        else:
            out[name] = rng.random(size=shape) < 0.5
    return out


@dataclass(frozen=True)
class Row:
    name: str
    type: str
    max_abs: float
    max_rel: float

    @property
    def ok(self) -> bool:
        return self.max_rel <= TOLERANCE


def check_gradients(g: GraphDef, bind: dict[str, int] | None = None, seed: int = 0,
                    directions: int = 3, eps: float = 1e-6) -> list[Row]:
    """Compare each requested gradient with central differences along random directions."""
    if g.grad is None:
        raise ValueError(f"graph '{g.name}' has no grad line to check")
    funcs = build_funcs(g)
    bwd = autodiff.run(to_f64(funcs["backward"]))
    fwd = to_f64(Func(g.name + ".target", g.forward.params, (g.grad.target,), ("target",)))
    symbols = sorted({s for p in fwd.params for s in p.type.symbols})
    env = {s: (bind or {}).get(s, 3) for s in symbols}
    rng = np.random.default_rng(seed)
    args = random_args({p.attrs["name"]: p.type for p in fwd.params}, env, rng)
    n_out = len(g.forward.results)
    grads = interp.run(bwd, args, env)[n_out:]
    fwd, args = freeze_stop_gradients(fwd, args, env)
    rows = []
    for name, gx in zip(g.grad.wrt, grads):
        x = args[name]
        max_abs = max_rel = 0.0
        for _ in range(directions):
            d = rng.normal(size=x.shape)
            plus = interp.run(fwd, {**args, name: x + eps * d}, env)[0]
            minus = interp.run(fwd, {**args, name: x - eps * d}, env)[0]
            numeric = float((plus - minus) / (2 * eps))
            analytic = float(np.sum(gx * d))
            err = abs(numeric - analytic)
            max_abs = max(max_abs, err)
            max_rel = max(max_rel, err / max(abs(numeric), abs(analytic), 1e-6))
        rows.append(Row(name, str(next(p.type for p in g.forward.params
                                       if p.attrs["name"] == name)), max_abs, max_rel))
    return rows


def format_table(rows: list[Row]) -> str:
    head = f"{'argument':<16} {'type':<20} {'max abs err':>12} {'max rel err':>12}  result"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.name:<16} {r.type:<20} {r.max_abs:>12.3e} {r.max_rel:>12.3e}  "
                     f"{'ok' if r.ok else 'FAIL'}")
    return "\n".join(lines)
