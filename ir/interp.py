"""The NumPy reference interpreter: the oracle every pass and the native backend are tested
against. It runs each op's ``ref`` in topological order and checks every result's shape."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from graphc.ir import shapecheck
from graphc.ir.core import Func, Value
from graphc.ir.errors import GraphCallError, GraphError, NumericsError
from graphc.ir.ops import registry
from graphc.ir.types import Dim, DimLike, TensorType, dim_eval


def bind_dims(named: Sequence[tuple[str, TensorType, tuple[int, ...]]]) -> dict[str, int]:
    """Bind symbolic dims from (argument name, declared type, actual shape) triples.

    Plain symbols bind directly; a dim like ``2*N`` or ``N+4`` is solved when it has one unknown
    symbol of degree one; every dim is then checked. Raises GraphCallError naming both bindings.
    """
    env: dict[str, int] = {}
    where: dict[str, str] = {}
    for name, ty, shape in named:
        if len(shape) != ty.rank:
            raise GraphCallError(f"argument '{name}' must have rank {ty.rank} ({ty}), "
                                 f"got shape {tuple(shape)}")
    pending: list[tuple[str, DimLike, int]] = []
    for name, ty, shape in named:
        for d, n in zip(ty.shape, shape):
            if isinstance(d, Dim) and len(d.terms) == 1 and d.terms[0] == ((d.symbols[0],), 1):
                s = d.symbols[0]
                if s in env and env[s] != n:
                    raise GraphCallError(
                        f"dim {s} bound two ways: {s} = {env[s]} ({where[s]}) vs {n} ({name})")
                env.setdefault(s, n)
                where.setdefault(s, name)
            else:
                pending.append((name, d, n))
    for name, d, n in pending:
        if isinstance(d, Dim):
            unknown = [s for s in d.symbols if s not in env]
            if len(unknown) == 1:
                s = unknown[0]
                lin = [c for m, c in d.terms if s in m]
                if len(lin) == 1 and all(m.count(s) <= 1 for m, _ in d.terms):
                    coef = dim_eval(Dim(tuple((tuple(x for x in m if x != s), c)
                                              for m, c in d.terms if s in m)), env)
                    rest = dim_eval(Dim(tuple((m, c) for m, c in d.terms if s not in m))
                                    if any(s not in m for m, _ in d.terms) else 0, env)
                    if coef and (n - rest) % coef == 0 and (n - rest) // coef >= 0:
                        env[s] = (n - rest) // coef
                        where[s] = name
    for name, ty, shape in named:
        for d, n in zip(ty.shape, shape):
            try:
                want = dim_eval(d, env)
            except KeyError:
                raise GraphCallError(f"cannot bind the dims of '{name}' ({ty}) "
                                     f"from shape {tuple(shape)}") from None
            if want != n:
                raise GraphCallError(f"argument '{name}' must have shape {ty} = "
                                     f"{ty.concrete(env)}, got {tuple(shape)}")
    return env


def concrete_attr(v: Any, env: Mapping[str, int]) -> Any:
    """Replace symbolic dims inside an attribute with their bound values."""
    if isinstance(v, Dim):
        return dim_eval(v, env)
    if isinstance(v, tuple):
        return tuple(concrete_attr(x, env) for x in v)
    return v


def eval_value(v: Value, ins: list[np.ndarray], env: Mapping[str, int]) -> np.ndarray:
    """Run one op's reference semantics; the result is checked against the op's type."""
    opdef = registry.get(v.op)
    if opdef.ref is None:
        raise GraphError(f"op '{v.op}' cannot be interpreted"
                         + (" (run the autodiff pass first)" if v.op == "grad" else ""), v.loc)
    attrs = {k: concrete_attr(a, env) for k, a in v.attrs.items}
    shape = v.type.concrete(env)
    if opdef.wants_out:
        attrs.update(out_shape=shape, out_dtype=v.dtype.np)
    try:
        with np.errstate(all="ignore"):
            out = np.asarray(opdef.ref(*ins, **attrs))
    except GraphError as e:
        raise e.with_loc(v.loc)
    if out.shape != shape:
        raise AssertionError(f"{v.op} produced shape {out.shape}, its type says {v.type} = {shape}")
    if out.dtype != v.dtype.np:
        out = out.astype(v.dtype.np)
    return out


def _has_nonfinite(a: np.ndarray) -> bool:
    return a.dtype.kind == "f" and not np.isfinite(a).all()


def run(func: Func, args: Mapping[str, Any] | Sequence[Any],
        env: Mapping[str, int] | None = None, *, check_numerics: bool = False
        ) -> list[np.ndarray]:
    """Evaluate ``func`` on arrays given by argument name (or position); returns its results.
    Dims are bound from the arguments (or taken from ``env``) and checked (``ir.shapecheck``);
    ``check_numerics`` raises NumericsError at the first argument or op that holds NaN/Inf."""
    if not isinstance(args, Mapping):
        args = {p.attrs["name"]: a for p, a in zip(func.params, args)}
    arrays: dict[int, np.ndarray] = {}
    named = []
    for p in func.params:
        name = p.attrs["name"]
        if name not in args:
            raise GraphCallError(f"missing argument '{name}' ({p.type})")
        a = np.asarray(args[name])
        arrays[id(p)] = a.astype(p.dtype.np, copy=False)
        named.append((name, p.type, a.shape))
    env = dict(env) if env is not None else bind_dims(named)
    shapecheck.check(shapecheck.requirements(func), env)
    if check_numerics:
        for p in func.params:
            if _has_nonfinite(arrays[id(p)]):
                raise NumericsError(f"argument '{p.attrs['name']}' contains NaN or Inf", p.loc)
    for v in func.values():
        if id(v) not in arrays:
            out = eval_value(v, [arrays[id(i)] for i in v.inputs], env)
            if check_numerics and _has_nonfinite(out):
                raise NumericsError(f"{v.op} produced NaN or Inf (result {v.type})", v.loc)
            arrays[id(v)] = out
    return [arrays[id(r)] for r in func.results]
