"""The invariants every pass keeps, checked after each one (xDSL's rule). A broken invariant is a
compiler bug, so it raises ``VerifyError``: a GraphError (with a loc) and an AssertionError."""
from __future__ import annotations

import math
from typing import Any

from graphc.ir.core import Attrs, Func, Value, normalize_scalar
from graphc.ir.errors import GraphError, Loc
from graphc.ir.ops import registry
from graphc.ir.types import Dim, DType, TensorType, dim_add


class VerifyError(GraphError, AssertionError):
    """The IR breaks an invariant that ``make`` and the passes promise: an internal error."""


def verify(func: Func, allow_grad: bool = True) -> None:
    """Raise VerifyError if ``func`` (or a nested body) is not well-formed, canonical IR."""
    _Checker(func, allow_grad).run()


class _Checker:
    def __init__(self, func: Func, allow_grad: bool):
        self.func = func
        self.allow_grad = allow_grad
        self.number: dict[int, str] = {}
        self.params = {id(p) for p in func.params}

    def fail(self, why: str, v: Value | None = None) -> VerifyError:
        where = f"@{self.func.name}"
        if v is not None:
            where += f", {self.number.get(id(v), '?')} = {v.op}"
        loc = v.loc if v is not None and isinstance(v.loc, Loc) else None
        return VerifyError(f"invalid IR in {where}: {why}", loc)

    def run(self) -> None:
        func = self.func
        if func.result_names:
            if len(func.result_names) != len(func.results):
                raise self.fail(f"{len(func.result_names)} result names for "
                                f"{len(func.results)} results")
            if len(set(func.result_names)) != len(func.result_names):
                raise self.fail(f"result names repeat: {func.result_names}")
        names: set[str] = set()
        for i, p in enumerate(func.params):
            self.number[id(p)] = f"param {i}"
            if not isinstance(p, Value) or p.op != "arg":
                raise self.fail(f"param {i} is {p!r}, not an 'arg' value")
            name = p.attrs.get("name")
            if name in names:
                raise self.fail(f"argument name '{name}' repeats", p)
            names.add(name)
        defined = set(self.params)
        for v in func.values():
            if id(v) not in self.number:
                self.number[id(v)] = f"%{len(self.number) - len(func.params)}"
            self.value(v, defined)
            defined.add(id(v))
        for r in func.results:
            if not isinstance(r, Value):
                raise self.fail(f"result {r!r} is not a Value")

    def value(self, v: Value, defined: set[int]) -> None:
        for x in v.inputs:
            if not isinstance(x, Value) or id(x) not in defined:
                raise self.fail(f"input {x!r} is not defined before its use", v)
        if v.op == "arg" and id(v) not in self.params:
            raise self.fail(f"argument '{v.attrs.get('name')}' is not a param of the function", v)
        if v.op == "grad" and not self.allow_grad:
            raise self.fail("a 'grad' op remains after autodiff", v)
        if v.loc is not None and not isinstance(v.loc, Loc):
            raise self.fail(f"loc {v.loc!r} is not a Loc", v)
        if not isinstance(v.type, TensorType) or not isinstance(v.type.dtype, DType) \
                or not all(_is_dim(d) for d in v.type.shape):
            raise self.fail(f"type {v.type!r} is not a canonical TensorType", v)
        if not isinstance(v.attrs, Attrs):
            raise self.fail(f"attrs {v.attrs!r} are not an Attrs", v)
        keys = [k for k, _ in v.attrs.items]
        if keys != sorted(set(keys)) or not all(isinstance(k, str) for k in keys):
            raise self.fail(f"attribute keys {keys} are not sorted and unique", v)
        for k, a in v.attrs.items:
            self.attr(v, k, a)
        self.reinfer(v)

    def attr(self, v: Value, key: str, a: Any) -> None:
        if isinstance(a, tuple):
            for x in a:
                self.attr(v, key, x)
        elif isinstance(a, Func):
            _Checker(a, self.allow_grad).run()
        elif not (a is None or type(a) in (bool, int, float, str) or isinstance(a, DType)
                  or (isinstance(a, Dim) and _is_dim(a))):
            raise self.fail(f"attribute {key}={a!r} ({type(a).__name__}) is not canonical", v)

    def reinfer(self, v: Value) -> None:
        """What ``make`` would build today from the same inputs and attrs must be ``v``."""
        opdef = registry.lookup(v.op)
        if opdef is None:
            raise self.fail(f"unknown op '{v.op}'", v)
        if opdef.infer is None:
            raise self.fail(f"'{v.op}' has no shape rule (a composite op left in the IR?)", v)
        given = v.attrs.as_dict()
        types = tuple(x.type for x in v.inputs)
        try:
            full = opdef.check_attrs(len(v.inputs), dict(given))
            if opdef.canon is not None:
                full = opdef.canon(types, full)
            ty = opdef.infer(*types, **full)
        except GraphError as e:
            raise self.fail(f"make would reject it: {e.message}", v) from None
        if not _same(full, given):
            raise self.fail(f"attributes {given} are not canonical; make gives {full}", v)
        if ty != v.type:
            raise self.fail(f"recorded type {v.type} but make infers {ty}", v)
        if v.op == "const" and not _same(normalize_scalar(given["value"], v.dtype),
                                         given["value"]):
            raise self.fail(f"constant {given['value']!r} is not rounded to {v.dtype}", v)


def _is_dim(d: Any) -> bool:
    if type(d) is int:
        return d >= 0
    return isinstance(d, Dim) and dim_add(d, 0) == d       # normalised, not a constant


def _same(a: Any, b: Any) -> bool:
    """Equality in which NaN equals NaN and the Python types must match (1 is not 1.0 or True)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)
