"""Running an op's samples: parse their types, bind symbolic dims, draw inputs from the op's
domain, build one-op functions, and differentiate numerically. Shared by the tests/ops files."""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from graphc.ir import interp
from graphc.ir.core import Func, Value, make
from graphc.ir.ops import registry
from graphc.ir.ops.registry import OpDef
from graphc.ir.ops.rules import Sample
from graphc.ir.text import parse_type
from graphc.ir.types import DType, TensorType

FLOAT_RANGE = (-2.0, 2.0)
INT_RANGE = (-4, 5)


@dataclass(frozen=True)
class Case:
    """One op, one of its samples, one binding of the sample's symbolic dims."""
    op: OpDef
    sample: Sample
    env: tuple[tuple[str, int], ...]

    @property
    def id(self) -> str:
        attrs = ",".join(f"{k}={v}" for k, v in self.sample.attrs)
        env = ",".join(f"{k}{v}" for k, v in self.env)
        return f"{self.op.name}({';'.join(self.sample.types)}{'|' + attrs if attrs else ''})" \
               f"{'@' + env if env else ''}"

    def types(self, f64: bool = False) -> list[TensorType]:
        out = [parse_type(t) for t in self.sample.types]
        return [t.with_dtype(DType.f64) if f64 and t.dtype.is_float else t for t in out]

    def attrs(self, f64: bool = False) -> dict[str, Any]:
        return {k: (DType.f64 if f64 and v is DType.f32 else v) for k, v in self.sample.attrs}

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(zlib.crc32(self.id.encode()))


def cases(ops: list[OpDef] | None = None) -> Iterator[Case]:
    for op in ops if ops is not None else registry.all():
        for s in op.samples:
            names = sorted({n for t in s.types for n in parse_type(t).symbols}
                           | attr_symbols(s.attrs))
            for size in s.sizes if names else s.sizes[:1]:
                yield Case(op, s, tuple((n, size) for n in names))


def attr_symbols(attrs: Any) -> set[str]:
    from graphc.ir.types import Dim
    if isinstance(attrs, Dim):
        return set(attrs.symbols)
    if isinstance(attrs, tuple):
        return set().union(*(attr_symbols(a) for a in attrs)) if attrs else set()
    return set()


def args_of(types: list[TensorType]) -> list[Value]:
    return [make("arg", name=f"x{i}", dtype=t.dtype, shape=t.shape) for i, t in enumerate(types)]


def apply(case: Case, args: list[Value], f64: bool = False) -> Value:
    return make(case.op.name, *args, **case.attrs(f64))


def one_op(case: Case, f64: bool = False) -> Func:
    args = args_of(case.types(f64))
    return Func(case.op.name, tuple(args), (apply(case, args, f64),), ("out",))


def draw(case: Case, types: list[TensorType]) -> list[np.ndarray]:
    """Inputs from the sample's domain (else the op's, else a default range per dtype). A domain
    of more than two numbers lists the values themselves, repeated in row-major order: exact
    zeros, which a range never draws."""
    env, rng = dict(case.env), case.rng()
    out = []
    for i, t in enumerate(types):
        dom = (case.sample.domain[i:i + 1] or case.op.domain[i:i + 1] or (None,))[0]
        shape = t.concrete(env)
        if dom is not None and len(dom) > 2:
            a = np.resize(np.asarray(dom), shape)
        elif t.dtype is DType.bool:
            a = rng.random(shape) < 0.5
        elif t.dtype.is_int:
            lo, hi = (env.get(b, b) if isinstance(b, str) else b for b in dom or INT_RANGE)
            a = rng.integers(lo, max(hi, lo + 1), size=shape)
        else:
            lo, hi = dom or FLOAT_RANGE
            a = rng.uniform(lo, hi, size=shape)
        out.append(np.asarray(a, dtype=t.dtype.np))
    return out


def run(func: Func, arrays: list[np.ndarray], env: dict[str, int]) -> list[np.ndarray]:
    return interp.run(func, {p.attrs["name"]: a for p, a in zip(func.params, arrays)}, env)


def numeric_grads(func: Func, arrays: list[np.ndarray], wrt: list[int], env: dict[str, int],
                  h: float = 1e-6) -> list[np.ndarray]:
    """Central differences of ``func``'s scalar result w.r.t. each input index in ``wrt``."""
    grads = []
    for i in wrt:
        g = np.zeros_like(arrays[i])
        for j in np.ndindex(arrays[i].shape):
            vals = []
            for step in (h, -h):
                moved = [a.copy() for a in arrays]
                moved[i][j] += step
                vals.append(run(func, moved, env)[0])
            g[j] = (vals[0] - vals[1]) / (2 * h)
        grads.append(g)
    return grads


def evaluate(build: Any, *arrays: Any, env: dict[str, int] | None = None) -> np.ndarray:
    """``build(*args)`` on concrete arrays (their dtypes and shapes become the args' types)."""
    arrays = tuple(np.asarray(a) for a in arrays)
    args = args_of([TensorType(DType.from_np(a.dtype), a.shape) for a in arrays])
    return interp.run(Func("f", tuple(args), (build(*args),)), arrays, env)[0]


def gradient(build: Any, *arrays: Any) -> list[np.ndarray]:
    """d sum(build(*args)) / d arg, through the autodiff pass, for every float argument."""
    from graphc.passes.autodiff import grad_of
    arrays = tuple(np.asarray(a) for a in arrays)
    args = args_of([TensorType(DType.from_np(a.dtype), a.shape) for a in arrays])
    floats = [a for a in args if a.dtype.is_float]
    grads = grad_of(make("sum", build(*args)), floats)
    assert all(g is not None for g in grads)
    return interp.run(Func("g", tuple(args), tuple(grads)), arrays)
