"""``graphc check``: every entry point of a graph on the float64 reference interpreter at random
arguments: forward's outputs finite, each ``grad(y, x)`` inside the graph and each gradient of
the ``grad`` line against central differences, and sgd_step against ``p - lr * grad``."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from graphc.init import init_params
from graphc.ir import interp
from graphc.ir.core import Func, Value, make, rebuild, transform
from graphc.ir.errors import Loc
from graphc.ir.types import DType, TensorType
from graphc.model import build_funcs
from graphc.passes import autodiff
from graphc.program import GraphDef

TOLERANCE = 1e-4
DEFAULT_DIM = 3            # what an unbound symbolic dim is (small: the checks run in NumPy)
SGD_LR = 0.5


def to_f64(func: Func) -> Func:
    """The same function with every f32 value made f64, so differences are exact enough."""
    def widen(v: Value, ins: tuple[Value, ...]) -> Value:
        attrs = {k: (DType.f64 if a is DType.f32 else a) for k, a in v.attrs.items}
        return make(v.op, *ins, loc=v.loc, **attrs)
    return transform(func, widen)


def reference(func: Func) -> Func:
    """``func`` in float64 with every ``grad(...)`` expanded: what the interpreter can run."""
    return autodiff.run(to_f64(func))


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


def typical_params(g: GraphDef, seed: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The params as training starts them (their initializers), jittered so that a zero bias
    sits on no kink: N(0, 1) weights saturated a sigmoid until f64 could not resolve 1 - p,
    and central differences saw a flat loss where the gradient was right."""
    try:
        drawn = init_params(g.params, seed)
    except (ValueError, TypeError):          # a param with a symbolic dim: N(0, 1) then
        return {}
    return {n: (a + 0.05 * rng.normal(size=a.shape)).astype(a.dtype) if a.dtype.kind == "f"
            else a for n, a in drawn.items()}


def symbols(g: GraphDef) -> list[str]:
    """The graph's symbolic dims (those its inputs' and params' types name)."""
    return sorted({s for p in g.forward.params for s in p.type.symbols})


def binding(g: GraphDef, bind: dict[str, int] | None = None) -> dict[str, int]:
    return {s: (bind or {}).get(s, DEFAULT_DIM) for s in symbols(g)}


@dataclass(frozen=True)
class Row:
    name: str
    type: str
    max_abs: float
    max_rel: float

    @property
    def ok(self) -> bool:
        return self.max_rel <= TOLERANCE


@dataclass
class Report:
    """What ``check_all`` found: the binding, forward's outputs, and one list of rows per
    gradient check (``grad(...)`` inside the graph, the grad line, sgd_step)."""
    env: dict[str, int]
    outputs: list[tuple[str, str, bool]] = field(default_factory=list)   # name, type, finite
    inner: list[Row] = field(default_factory=list)
    grads: list[Row] = field(default_factory=list)
    sgd: list[Row] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [n for n, _, fin in self.outputs if not fin] + \
            [r.name for r in self.inner + self.grads + self.sgd if not r.ok]


def _directional(fwd: Func, args: dict[str, np.ndarray], env: dict[str, int], name: str,
                 analytic: np.ndarray, rng: np.random.Generator, directions: int, eps: float
                 ) -> tuple[float, float]:
    """Max abs and rel error of ``analytic`` (d fwd / d args[name]) against central differences
    along random directions."""
    x = args[name]
    max_abs = max_rel = 0.0
    for _ in range(directions):
        d = rng.normal(size=x.shape)
        plus = interp.run(fwd, {**args, name: x + eps * d}, env)[0]
        minus = interp.run(fwd, {**args, name: x - eps * d}, env)[0]
        numeric = float((plus - minus) / (2 * eps))
        exact = float(np.sum(analytic * d))
        err = abs(numeric - exact)
        max_abs = max(max_abs, err)
        max_rel = max(max_rel, err / max(abs(numeric), abs(exact), 1e-6))
        if not np.isfinite(err):
            max_abs = max_rel = float("inf")
    return max_abs, max_rel


def _where(loc: Loc | None) -> str:
    return "" if loc is None else f" at {loc.line}:{loc.col}"


def _cut(func: Func, x: Value, name: str) -> Func:
    """``func`` with value ``x`` replaced by a new last argument ``name``."""
    arg = make("arg", name=name, dtype=x.dtype, shape=x.shape)
    out = transform(func, lambda w, ins: arg if w is x else rebuild(w, ins))
    return Func(func.name, func.params + (arg,), out.results)


def check_inner_grads(g: GraphDef, args: dict[str, np.ndarray], env: dict[str, int],
                      rng: np.random.Generator, directions: int = 3, eps: float = 1e-6
                      ) -> list[Row]:
    """Each ``grad(y, x)`` of the forward function against central differences of ``y`` with
    ``x`` made an argument (for an intermediate ``x``: the other paths to ``y`` held fixed, which
    is what ``grad`` computes)."""
    fwd = g.forward
    # the grad line's target need not be an output: its grad(...)s count too
    every = Func(fwd.name, fwd.params, fwd.results + ((g.grad.target,) if g.grad else ()))
    rows = []
    for k, v in enumerate(w for w in every.values() if w.op == "grad"):
        y, x = v.inputs
        name = x.attrs["name"] if x.op == "arg" else f"__x{k}"
        at = {**args}
        if x.op != "arg":
            at[name] = interp.run(reference(Func("x", fwd.params, (x,))), args, env)[0]
            target = _cut(Func("y", fwd.params, (y,)), x, name)
        else:
            target = Func("y", fwd.params, (y,))
        analytic = interp.run(reference(Func("g", fwd.params, (v,))), args, env)[0]
        ref, at = freeze_stop_gradients(reference(target), at, env)
        max_abs, max_rel = _directional(ref, at, env, name, analytic, rng, directions, eps)
        what = x.attrs["name"] if x.op == "arg" else f"{x.op}{_where(x.loc)}"
        rows.append(Row(f"grad(..., {what}){_where(v.loc)}", str(x.type), max_abs, max_rel))
    return rows


def check_all(g: GraphDef, bind: dict[str, int] | None = None, seed: int = 0,
              directions: int = 3, eps: float = 1e-6) -> Report:
    """Every entry point of ``g`` at one random binding (unbound dims are DEFAULT_DIM)."""
    env = binding(g, bind)
    report = Report(env)
    rng = np.random.default_rng(seed)
    funcs = build_funcs(g)
    fwd = g.forward
    args = random_args({p.attrs["name"]: p.type for p in fwd.params}, env, rng)
    args.update(typical_params(g, seed, rng))
    outs = interp.run(reference(fwd), args, env)
    report.outputs = [(n, str(r.type), bool(np.all(np.isfinite(o))))
                      for n, r, o in zip(fwd.result_names, fwd.results, outs)]
    report.inner = check_inner_grads(g, args, env, rng, directions, eps)
    if g.grad is None:
        return report
    report.grads = _check_grad_line(g, funcs, args, env, rng, directions, eps)
    report.sgd = _check_sgd_step(g, funcs, args, env)
    return report


def _check_grad_line(g: GraphDef, funcs: dict[str, Func], args: dict[str, np.ndarray],
                     env: dict[str, int], rng: np.random.Generator, directions: int,
                     eps: float) -> list[Row]:
    assert g.grad is not None
    n_out = len(g.forward.results)
    grads = interp.run(reference(funcs["backward"]), args, env)[n_out:]
    target = reference(Func(g.name + ".target", g.forward.params, (g.grad.target,),
                            ("target",)))
    target, at = freeze_stop_gradients(target, args, env)
    types = {p.attrs["name"]: str(p.type) for p in g.forward.params}
    rows = []
    for name, gx in zip(g.grad.wrt, grads):
        rows.append(Row(name, types[name],
                        *_directional(target, at, env, name, gx, rng, directions, eps)))
    return rows


def _check_sgd_step(g: GraphDef, funcs: dict[str, Func], args: dict[str, np.ndarray],
                    env: dict[str, int]) -> list[Row]:
    """sgd_step's updated params against ``p - lr * grad`` from backward (its own function)."""
    assert g.grad is not None
    step = reference(funcs["sgd_step"])
    lr_name = step.params[-1].attrs["name"]
    n_out = len(g.forward.results)
    grads = dict(zip(g.grad.wrt, interp.run(reference(funcs["backward"]), args, env)[n_out:]))
    outs = interp.run(step, {**args, lr_name: np.float64(SGD_LR)}, env)
    types = {p.attrs["name"]: str(p.type) for p in g.forward.params}
    rows = []
    for name, new in zip(step.result_names[1:], outs[1:]):
        want = args[name] - SGD_LR * grads[name]
        err = float(np.max(np.abs(new - want), initial=0.0))
        scale = float(np.max(np.abs(want), initial=0.0))
        rows.append(Row(name, types[name], err, err / max(scale, 1e-6)))
    return rows


def check_gradients(g: GraphDef, bind: dict[str, int] | None = None, seed: int = 0,
                    directions: int = 3, eps: float = 1e-6) -> list[Row]:
    """Compare each gradient of the grad line with central differences along random
    directions."""
    if g.grad is None:
        raise ValueError(f"graph '{g.name}' has no grad line to check")
    return check_all(g, bind, seed, directions, eps).grads


def format_table(rows: list[Row], what: str = "argument") -> str:
    width = max([16, len(what)] + [len(r.name) for r in rows])
    head = f"{what:<{width}} {'type':<20} {'max abs err':>12} {'max rel err':>12}  result"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.name:<{width}} {r.type:<20} {r.max_abs:>12.3e} {r.max_rel:>12.3e}  "
                     f"{'ok' if r.ok else 'FAIL'}")
    return "\n".join(lines)


def format_report(g: GraphDef, report: Report) -> str:
    """What ``graphc check`` prints: a section per entry point."""
    out = [f"forward: {len(report.outputs)} output(s) at random arguments (float64)"]
    out += [f"  {n:<14} {t:<20} {'finite  ok' if fin else 'NaN/Inf  FAIL'}"
            for n, t, fin in report.outputs]
    if report.inner:
        out += ["", "grad(...) inside the graph, against central differences",
                format_table(report.inner, "grad")]
    if g.grad is None:
        if not report.inner:
            out += ["", (f"graph '{g.name}' has no grad line and no grad(...): no gradient "
                         f"to check (backward and sgd_step need a grad line)")]
        return "\n".join(out)
    out += ["", "backward: the grad line's gradients against central differences",
            format_table(report.grads),
            "", f"sgd_step: updated params against p - lr * grad (lr = {SGD_LR})",
            format_table(report.sgd, "param")]
    return "\n".join(out)
