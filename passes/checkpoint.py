"""Recompute chosen forward values in the backward instead of keeping them alive in between, as
``compile(..., checkpoint=...)`` asks. Keeps: results; without a policy it changes nothing.

The values the backward reads from the forward are the outputs of the forward's kernels (as
``fusion`` would cut them). A policy picks some of them: ``"elementwise"`` those of elementwise
kernels, ``"all"`` every one but matmul outputs, and a byte budget (``{"budget": 8_000_000,
"N": 2048}``) adds values, largest first, while that lowers the planned peak at that binding,
until the peak fits. Each picked value is computed again for its backward users from the values
that stay kept (a copy of its kernel's ops), so the forward's copy dies early; fusion then folds
the copy into the backward kernels that use it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from graphc.ir.core import Func, Value, rebuild, transform
from graphc.ir.errors import GraphCallError, GraphWarning, warn
from graphc.ir.types import dim_eval
from graphc.passes import fusion, memplan
from graphc.passes.rewrite import PassContext, has_grad

POLICIES = ("elementwise", "all")
COST = ("loop", "row", "reduce", "matmul")      # kernel kinds, cheapest to recompute first


@dataclass(frozen=True)
class Policy:
    kind: str                                   # "elementwise" | "all" | "budget"
    budget: int = 0                             # bytes of arena peak, for "budget"
    dims: tuple[tuple[str, int], ...] = ()      # the binding the budget is for


def policy(spec: Any) -> Policy | None:
    """The ``checkpoint=`` option: None, a policy name, a byte budget, or a dict with "budget"
    and the dims it is for. Anything else is a GraphCallError."""
    if spec is None or isinstance(spec, Policy):
        return spec
    if isinstance(spec, str) and spec in POLICIES:
        return Policy(spec)
    if isinstance(spec, (int, float)) and not isinstance(spec, bool) and spec > 0:
        return Policy("budget", int(spec))
    if isinstance(spec, dict) and isinstance(spec.get("budget"), (int, float)) \
            and all(isinstance(n, int) and n >= 0 for k, n in spec.items() if k != "budget"):
        return Policy("budget", int(spec["budget"]),
                      tuple(sorted((k, n) for k, n in spec.items() if k != "budget")))
    raise GraphCallError(f"checkpoint must be one of {', '.join(map(repr, POLICIES))}, a byte "
                         f"budget, or {{'budget': bytes, 'N': 2048, ...}}; got {spec!r}")


@dataclass(frozen=True)
class Options:
    """``policy``: what to recompute (anything ``policy()`` takes: "elementwise", "all", a byte
    budget); ``forward``: how many leading results of the function the forward computes (the
    rest, gradients or updated params, belong to the backward), which a policy needs."""
    policy: Policy | None = None
    forward: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy", policy(self.policy))
        if self.forward is not None and (not isinstance(self.forward, int)
                                         or isinstance(self.forward, bool) or self.forward < 0):
            raise GraphCallError(f"checkpoint: forward must be an int >= 0, got "
                                 f"{self.forward!r}")


def run(func: Func, ctx: PassContext | None = None, options: Options | None = None) -> Func:
    options = options or Options()
    if options.policy is None or has_grad(func):
        return func
    if options.forward is None:
        raise GraphCallError(f"checkpoint{{policy=...}} on {func.name} needs forward=K: how many "
                             f"of its results the forward computes")
    return apply(func, options.policy, options.forward)


def apply(func: Func, p: Policy, forward: int) -> Func:
    part = fusion.partition(func, notes=False)
    src = part.source
    fwd = memplan.ancestors(src.results[:forward])
    saved = memplan.saved_values(src, fwd, part.roots)
    if p.kind != "budget":
        keep_out = ("matmul", "single") if p.kind == "all" else ("matmul", "single", "row",
                                                                  "reduce")
        return recompute(src, fwd, part.roots, {id(v) for v in saved
                                                if part.roots[id(v)] not in keep_out})
    return _within_budget(src, fwd, part.roots, saved, p)


def recompute(src: Func, fwd: set[int], roots: dict[int, str], chosen: set[int]) -> Func:
    """``src`` with the backward reading fresh copies of the ``chosen`` values, each computed
    from the kept forward values (kernel outputs not chosen), args and constants."""
    if not chosen:
        return src
    copies: dict[int, Value] = {}

    def copy(v: Value) -> Value:
        if id(v) not in fwd or (id(v) in roots and id(v) not in chosen):
            return v
        if id(v) not in copies:
            copies[id(v)] = Value(v.op, tuple(copy(i) for i in v.inputs), v.type, v.attrs,
                                  v.loc)
        return copies[id(v)]

    def swap(v: Value, ins: tuple[Value, ...]) -> Value:
        if id(v) in fwd:
            return rebuild(v, ins)
        return rebuild(v, tuple(copy(i) if id(i) in fwd and id(memplan.storage(i)) in chosen
                                else n for i, n in zip(v.inputs, ins)))
    return transform(src, swap)


def _within_budget(src: Func, fwd: set[int], roots: dict[int, str], saved: list[Value],
                   p: Policy) -> Func:
    if not saved:
        return src
    env = dict(p.dims)
    missing = sorted({s for v in src.params for s in v.type.symbols} - set(env))
    if missing:
        raise GraphCallError(f"a checkpoint budget needs the dims it is for: add "
                             f"{', '.join(f'{s!r}: ...' for s in missing)} to "
                             f"{{'budget': {p.budget}, ...}}")

    def peak(chosen: set[int]) -> int:
        plan = memplan.plan(fusion.run(recompute(src, fwd, roots, chosen)))
        return dim_eval(plan.peak, env) if plan is not None else 0

    def cost(v: Value) -> tuple[int, int]:      # cheap to recompute first, then large first
        return (COST.index(roots[id(v)]), -dim_eval(memplan.nbytes(v), env))
    chosen: set[int] = set()
    best = peak(chosen)
    for v in sorted((v for v in saved if roots[id(v)] in COST), key=cost):
        if best <= p.budget:
            break
        trial = chosen | {id(v)}
        got = peak(trial)
        if got < best:
            chosen, best = trial, got
    if best > p.budget:
        warn(GraphWarning(f"{src.name}: checkpoint budget {p.budget} bytes is out of reach: "
                          f"the smallest plan found needs {best} bytes at "
                          f"{', '.join(f'{k}={n}' for k, n in sorted(env.items()))}"))
    return recompute(src, fwd, roots, chosen)
