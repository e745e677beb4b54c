"""What a function's types assume about its symbolic dims but cannot prove at compile time: that
two dims broadcast against each other are equal (docs/language.md: a symbolic dim meets any
other dim only when equal, checked at call time), that a reshape keeps the element count, and
that every dim expression (``M-5``) is non-negative. Checked once per call, before any kernel
runs."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from graphc.ir.core import Func, Value
from graphc.ir.errors import GraphCallError, GraphTypeError
from graphc.ir.ops import registry
from graphc.ir.types import Dim, DimLike, TensorType, dim_eval, dim_mul, dim_str


@dataclass(frozen=True, slots=True)
class Requirement:
    left: DimLike
    right: DimLike | None          # None: ``left >= 0``
    value: Value                   # the op that assumes it (for the message and location)

    def check(self, env: Mapping[str, int]) -> None:
        a = dim_eval(self.left, env)
        if self.right is None:
            if a < 0:
                raise GraphCallError(f"the dim {dim_str(self.left)} (in {self.value.type}) is "
                                     f"{a} with {_binding(env)}; it must be >= 0",
                                     self.value.loc)
            return
        b = dim_eval(self.right, env)
        if a != b:
            what = "element counts" if self.value.op == "reshape" else "dims"
            raise GraphCallError(f"{self.value.op}: {what} {_show(self.left, a)} and "
                                 f"{_show(self.right, b)} must be equal", self.value.loc)


INT64_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Fits:
    """A dim expression (an extent, an element count in bytes, a dim used as a value) that
    native code computes in 64-bit integers: every partial product must fit, or it would wrap
    silently. The bound is the sum of the terms' magnitudes, with 0 counted as 1, so it also
    covers the partial products of a term whose last factor is 0."""
    poly: DimLike
    value: Value
    what: str = "the dim expression"

    def check(self, env: Mapping[str, int]) -> None:
        if isinstance(self.poly, int):
            return
        bound = sum(abs(c) * math.prod(max(1, abs(env[s])) for s in m)
                    for m, c in self.poly.terms)
        if bound > INT64_MAX:
            raise GraphCallError(f"{self.what} {dim_str(self.poly)} (of {self.value.type}) is "
                                 f"too large for 64-bit sizes with {_binding(env)}",
                                 self.value.loc)


def _show(d: DimLike, n: int) -> str:
    return str(n) if isinstance(d, int) else f"{dim_str(d)} = {n}"


def _binding(env: Mapping[str, int]) -> str:
    return ", ".join(f"{k} = {n}" for k, n in sorted(env.items()))


def limits(func: Func) -> tuple[Fits, ...]:
    """Every dim expression of ``func`` (and of its fused kernels' bodies) that native code
    evaluates in 64 bits: each value's byte size and each dim in its attributes. One that is
    static and too large is a GraphTypeError now."""
    out: dict[DimLike, Fits] = {}

    def fits(d: Any, v: Value, what: str = "the dim expression") -> None:
        if isinstance(d, Dim):
            out.setdefault(d, Fits(d, v, what))
        elif isinstance(d, int) and not isinstance(d, bool) and abs(d) > INT64_MAX:
            raise GraphTypeError(f"{what} of {v.type} is {dim_str(d)}, too large for 64-bit "
                                 f"sizes", v.loc)
        elif isinstance(d, tuple):
            for x in d:
                fits(x, v)

    seen: set[int] = set()           # bodies shared by alike kernels are visited once
    sizes: dict[TensorType, DimLike] = {}

    def visit(f: Func) -> None:
        for v in f.values():
            size = sizes.get(v.type)
            if size is None:
                size = sizes[v.type] = dim_mul(v.type.size, v.dtype.itemsize)
            fits(size, v, "the byte size")
            for _, a in v.attrs.items:
                if isinstance(a, Func):
                    if id(a) not in seen:
                        seen.add(id(a))
                        visit(a)
                else:
                    fits(a, v)
    visit(func)
    return tuple(out.values())


def requirements(func: Func) -> tuple[Requirement, ...]:
    """Every unproven assumption of ``func`` (and of the bodies of its fused kernels)."""
    out: dict[tuple[Any, Any], Requirement] = {}

    def need(a: DimLike, b: DimLike | None, v: Value) -> None:
        if b is not None and (a == b or isinstance(a, int) and isinstance(b, int)):
            return
        key = (a, b) if b is None or str(a) <= str(b) else (b, a)
        out.setdefault(key, Requirement(key[0], key[1], v))

    def visit(f: Func) -> None:
        for v in f.values():
            for d in v.type.shape:
                if isinstance(d, Dim) and not _is_symbol(d):
                    need(d, None, v)
            kind = registry.get(v.op).kind
            if kind == registry.ELEMENTWISE:
                for x in v.inputs:
                    _aligned(x.type.shape, v.type.shape, v, need)
            elif v.op == "matmul" and min(x.type.rank for x in v.inputs) >= 2:
                batch = v.type.shape[:-2]
                for x in v.inputs:
                    _aligned(x.type.shape[:-2], batch, v, need)
            elif v.op == "broadcast_to":
                _aligned(v.inputs[0].type.shape, v.type.shape, v, need)
            elif v.op == "reshape":
                need(v.inputs[0].type.size, v.type.size, v)
            for _, a in v.attrs.items:
                if isinstance(a, Func) and id(a) not in seen:
                    seen.add(id(a))
                    visit(a)
    seen: set[int] = set()
    visit(func)
    return tuple(out.values())


def _is_symbol(d: Dim) -> bool:
    return len(d.terms) == 1 and d.terms[0][1] == 1 and len(d.terms[0][0]) == 1


def _aligned(shape: tuple, out: tuple, v: Value, need: Any) -> None:
    for d, o in zip(reversed(shape), reversed(out)):
        if d != 1:
            need(d, o, v)


def check(reqs: tuple[Requirement | Fits, ...], env: Mapping[str, int]) -> None:
    for r in reqs:
        r.check(env)
