"""The NumPy reference interpreter: the oracle every pass and the native backend are tested
against. It runs each op's ``ref`` in topological order and checks every result's shape."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from graphc.ir import shapecheck
from graphc.ir.args import bind_dims
from graphc.ir.core import Func, Value, toposort
from graphc.ir.errors import GraphCallError, GraphError, NumericsError
from graphc.ir.ops import registry
from graphc.ir.types import Dim, dim_eval


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
    ``check_numerics`` raises NumericsError at the first argument or op that holds NaN/Inf
    (inside a kernel, the op of its body that made it)."""
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
                bad = culprit(v, arrays, env)
                raise NumericsError.produced_by(bad.op, bad.type, bad.loc)
            arrays[id(v)] = out
    return [arrays[id(r)] for r in func.results]


def culprit(v: Value, arrays: Mapping[int, np.ndarray], env: Mapping[str, int]) -> Value:
    """The op that first made a NaN/Inf in ``v``'s result: inside a kernel, the op of its body
    (the native runtime names the same one), else ``v``."""
    opdef = registry.get(v.op)
    if opdef.expand is None:
        return v
    known = dict(arrays)
    for w in toposort([opdef.expand(v)]):
        if id(w) not in known:
            known[id(w)] = eval_value(w, [known[id(i)] for i in w.inputs], env)
            if _has_nonfinite(known[id(w)]):
                return culprit(w, known, env)
    return v
