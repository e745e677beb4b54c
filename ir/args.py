"""The one argument binder: the caller's arrays checked by name, converted to the declared types
without changing any value, and the symbolic dims bound from their shapes and checked against
everything the compiled code assumes. A conversion that would wrap an integer (int64 label 2**32
into i32, uint64 2**64-1 into i64), turn a finite float into Inf (f64 1e300 into f32) or drop a
mask is an error, never a silently different number. Both backends bind through here, once per
call."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from graphc.ir.core import Func
from graphc.ir.errors import GraphCallError
from graphc.ir.ops.registry import suggest
from graphc.ir.types import Dim, DimLike, TensorType, dim_eval


def convert_arg(name: str, given: Any, ty: TensorType) -> np.ndarray:
    """``given`` as a C-contiguous array of ``ty``'s dtype (the same object when it already
    is one), or a GraphCallError naming the argument."""
    want = ty.dtype.np
    if type(given) is np.ndarray and given.dtype == want and given.flags.c_contiguous:
        return given                            # the common case, first
    if isinstance(given, np.ma.MaskedArray):
        raise GraphCallError(f"argument '{name}' is a masked array; graphc would ignore its "
                             f"mask: pass np.ma.filled(a, value) or a.data explicitly")
    try:
        a = np.asarray(given)
    except (ValueError, TypeError) as e:       # ragged lists, odd objects
        raise GraphCallError(f"argument '{name}' is not an array: {e}") from None
    if a.dtype != want:
        if not np.can_cast(a.dtype, want, "same_kind"):
            raise GraphCallError(f"argument '{name}' must be {ty}, got a {a.dtype} array "
                                 f"(convert it explicitly)")
        a = _narrow(name, a, want, ty)
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _narrow(name: str, a: np.ndarray, want: np.dtype, ty: TensorType) -> np.ndarray:
    """``a.astype(want)``, checked to keep every value (only narrowing casts can fail)."""
    if a.size and a.dtype.kind in "iu" and want.kind in "iu":
        info = np.iinfo(want)
        lo, hi = a.min(), a.max()
        if lo < info.min or hi > info.max:
            bad = lo if lo < info.min else hi
            pos = np.unravel_index(int(np.argmax(a == bad)), a.shape)
            raise GraphCallError(f"argument '{name}' ({a.dtype}) holds {bad} at index "
                                 f"{tuple(int(i) for i in pos)}, which does not fit {ty.dtype} "
                                 f"[{info.min}, {info.max}]")
    with np.errstate(over="ignore", invalid="ignore"):
        out = a.astype(want)
    if a.size and a.dtype.kind in "fc" and want.kind in "fc" and want.itemsize < a.dtype.itemsize:
        overflow = np.isinf(out) & np.isfinite(a)
        if overflow.any():
            pos = np.unravel_index(int(np.argmax(overflow)), a.shape)
            raise GraphCallError(f"argument '{name}' ({a.dtype}) holds {a[pos].item()!r} at index "
                                 f"{tuple(int(i) for i in pos)}, which overflows {ty.dtype} "
                                 f"(max {np.finfo(want).max:g})")
    return out


class Binder:
    """Binds calls of one function. A binding is a function of the arguments' shapes alone, so
    it is worked out once per tuple of shapes (and per extra ``dims``) and then reused."""

    def __init__(self, func: Func, checks: Sequence[Any] = (), symbols: Sequence[str] = ()):
        self.func = func
        self.signature: dict[str, TensorType] = {p.attrs["name"]: p.type for p in func.params}
        self.checks = tuple(checks)              # each has ``check(env)`` (ir/shapecheck.py)
        self.symbols = tuple(symbols)            # dims the code needs bound (else an error)
        self.cache: dict[tuple, dict[str, int]] = {}

    def bind(self, given: Mapping[str, Any], dims: Mapping[str, int] | None = None
             ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """The arguments in param order, converted, and the dims they bind."""
        want = self.signature
        if len(given) != len(want) or any(n not in want for n in given):
            for name in given:
                if name not in want:
                    raise GraphCallError(f"unexpected argument '{name}'"
                                         + suggest(name, list(want)))
            missing = next(n for n in want if n not in given)
            raise GraphCallError(f"missing argument '{missing}' ({want[missing]})")
        args = {name: convert_arg(name, given[name], ty) for name, ty in want.items()}
        key = tuple(a.shape for a in args.values())
        if dims:
            key += tuple(sorted(dims.items()))
        env = self.cache.get(key)
        if env is None:
            env = self._bind(args, dims or {})
            if len(self.cache) >= 256:
                self.cache.clear()
            self.cache[key] = env
        return args, env

    def _bind(self, args: Mapping[str, np.ndarray], dims: Mapping[str, int]) -> dict[str, int]:
        env = bind_dims([(n, self.signature[n], a.shape) for n, a in args.items()])
        for s, n in dims.items():
            if env.setdefault(s, int(n)) != n:
                raise GraphCallError(f"dim {s} bound two ways: {s} = {env[s]} (arguments) "
                                     f"vs {n}")
        for s in self.symbols:
            if s not in env:
                raise GraphCallError(f"dim {s} of {self.func.name} is not bound by any "
                                     f"argument")
            if env[s] < 0:
                raise GraphCallError(f"dim {s} = {env[s]} is negative")
        for c in self.checks:
            c.check(env)
        return env


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
