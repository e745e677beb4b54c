"""``fused``: one kernel of the fusion pass. Its ``body`` attribute is a Func over the kernel's
inputs; the interpreter runs the body, the backend lowers it as one loop nest (or one GEMM with its
epilogue applied to each output tile), and the memory plan records where its result lives.

A body may have several results (horizontal fusion: sibling kernels over one iteration space
that read the same inputs). The IR has one result per value, so each result is a ``fused``
value of its own, ``result=k`` naming which: siblings with the same inputs and body are one
kernel, which the memory plan schedules as one step and the backend runs as one loop nest
writing every sibling's buffer. The interpreter runs each sibling on its own (the oracle).

What a body's results lower as (its kernel shapes, kernelshape.py), and which inputs each may
overwrite, is worked out once per body and remembered on it (``body_patterns``,
``in_place_params``)."""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from graphc.ir.core import Func, Value, make, rebuild
from graphc.ir.errors import GraphTypeError
from graphc.ir.ops.kernelshape import Pattern, analyze, same_index_inputs
from graphc.ir.ops.registry import REQUIRED, defop
from graphc.ir.ops.rules import sample
from graphc.ir.types import Dim, TensorType

FUSED = "fused"                                   # the op kind: one kernel
# what the memory plan adds (memplan.py): the schedule step; the arena slot and byte offset, or
# the result written (and the param whose array that result may overwrite)
PLAN_ATTRS = ("inplace", "out", "offset", "slot", "step")


def body_symbols(body: Func) -> set[str]:
    """Every symbol in the types and attrs of ``body``'s values (a kernel body's: once)."""
    if isinstance(body, Body):
        return set(_memo(body, "_m_symbols", lambda: frozenset(_symbols(body))))
    return _symbols(body)


def _symbols(body: Func) -> set[str]:
    syms: set[str] = set()

    def walk(a: Any) -> None:
        if isinstance(a, Dim):
            syms.update(a.symbols)
        elif isinstance(a, tuple):
            for x in a:
                walk(x)
    for v in body.values():
        syms.update(_type_symbols(v.type))
        for _, a in v.attrs.items:
            if isinstance(a, (Dim, tuple)):
                walk(a)
    return syms


@functools.lru_cache(maxsize=4096)
def _type_symbols(ty: TensorType) -> tuple[str, ...]:
    """``ty.symbols``, remembered: an unrolled loop's bodies hold the same few types."""
    return ty.symbols


def free_symbols(body: Func, types: tuple[TensorType, ...] = ()) -> tuple[str, ...]:
    """Symbols the body uses that no input or result shape binds as a whole dim: the op records
    them (``syms``) so the body can run on its own."""
    bound = {_plain(d) for t in types + tuple(p.type for p in body.params) + tuple(
        r.type for r in body.results) for d in t.shape}
    return tuple(sorted(body_symbols(body) - bound))


def _plain(d: Any) -> str | None:
    """The symbol a dim is, if it is exactly one symbol (``N``; not ``2*N`` or ``N+1``)."""
    return d.terms[0][0][0] if isinstance(d, Dim) and len(d.terms) == 1 and \
        d.terms[0][1] == 1 and len(d.terms[0][0]) == 1 else None


class Body(Func):
    """A kernel body: a Func compared by its printed text (a body read back from IR text equals
    the one that was printed, and CSE merges kernels with equal bodies)."""

    def _key(self) -> str:
        key = self.__dict__.get("key")
        if key is None:
            from graphc.ir.text import print_func
            key = print_func(self)
            object.__setattr__(self, "key", key)       # a cache, not state: Func is frozen
        return key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Func) and _key_of(other) == self._key()

    def __hash__(self) -> int:
        return hash(self._key())


def _memo(body: Body, name: str, make: Callable[[], Any]) -> Any:
    """A fact about ``body`` worked out once: each pass and the planner ask of every kernel
    (its kernel shape, its in-place inputs, its symbols), and a body never changes."""
    got = body.__dict__.get(name)
    if got is None:
        got = make()
        object.__setattr__(body, name, got)       # a cache, not state: Func is frozen
    return got


def _key_of(f: Func) -> str:
    from graphc.ir.text import print_func
    return f._key() if isinstance(f, Body) else print_func(f)


def _fused_type(*types: TensorType, body: Any, result: int = 0, **_: Any) -> TensorType:
    if not isinstance(body, Func) or not body.results:
        raise GraphTypeError("fused: body must be a function with a result")
    if not isinstance(result, int) or not 0 <= result < len(body.results):
        raise GraphTypeError(f"fused: result={result!r}, but the body has "
                             f"{len(body.results)} results")
    if len(types) != len(body.params):
        raise GraphTypeError(f"fused: the body takes {len(body.params)} inputs, got {len(types)}")
    for i, (t, p) in enumerate(zip(types, body.params)):
        if t != p.type:
            raise GraphTypeError(f"fused: input {i} is {t} but the body's "
                                 f"%{p.attrs['name']} is {p.type}")
    return body.results[result].type


def _canon(types: tuple[TensorType, ...], attrs: dict[str, Any]) -> dict[str, Any]:
    """Unset plan attributes (and ``result=0``) are left out; ``syms`` is derived from the
    body."""
    out = {k: v for k, v in attrs.items() if v is not None and not (k == "result" and v == 0)}
    body = out.get("body")
    if isinstance(body, Func) and not isinstance(body, Body):
        out["body"] = Body(body.name, body.params, body.results, body.result_names)
    body = out.get("body")
    if isinstance(body, Body) and body.results:
        # the inputs' types are the params' (``_fused_type`` insists), which bind no more
        syms = _memo(body, "_m_syms", lambda: tuple(Dim.sym(s) for s in free_symbols(body)))
        out.pop("syms", None)
        if syms:
            out["syms"] = syms
    return out


def _fused_ref(*arrays: np.ndarray, body: Func, out_shape: tuple[int, ...],
               out_dtype: np.dtype[Any], syms: tuple[int, ...] = (), result: int = 0,
               **_: Any) -> np.ndarray:
    from graphc.ir import interp
    env = dict(zip(free_symbols(body), syms))
    for ty, shape in [(p.type, a.shape) for p, a in zip(body.params, arrays)] + [
            (body.results[result].type, out_shape)]:
        for d, n in zip(ty.shape, shape):
            name = _plain(d)
            if name is not None:
                env[name] = n
    # only what the chosen result needs: a sibling computes its own result, not the others'
    one = Func(body.name, body.params, (body.results[result],))
    return interp.run(one, list(arrays), env)[0]


def inline(body: Func, xs: tuple[Value, ...] | list[Value], result: int = 0) -> Value:
    """The body's result computed from ``xs`` instead of its params (kernel -> plain ops)."""
    new: dict[int, Value] = {id(p): x for p, x in zip(body.params, xs)}
    for v in body.values():
        if id(v) not in new:
            new[id(v)] = rebuild(v, tuple(new[id(i)] for i in v.inputs))
    return new[id(body.results[result])]


def _expand(v: Value) -> Value:
    return inline(v.attrs["body"], v.inputs, v.attrs.get("result", 0))


def _sample_body(name: str, types: tuple[str, ...], build: Callable[..., Value]) -> Func:
    from graphc.ir.text import parse_type
    args = tuple(make("arg", name=f"in{i}", dtype=t.dtype, shape=t.shape)
                 for i, t in enumerate(parse_type(s) for s in types))
    return Func(name, args, (build(*args),))


def _softmax(x: Value) -> Value:
    e = make("exp", x - make("max", x, axis=1, keepdims=True))
    return e / make("sum", e, axis=1, keepdims=True)


def _samples() -> tuple[Any, ...]:
    cases: list[tuple[tuple[str, ...], Callable[..., Value], str]] = [
             (("f64[N,4]", "f64[4]"), lambda x, b: make("relu", x + b), "loop.relu"),
             (("f64[N,3]",), _softmax, "row.div"),
             (("f64[N,4]", "f64[4,3]", "f64[3]"), lambda x, w, b: make("tanh", x @ w + b),
              "matmul.tanh"),
             (("f64[N,3]",), lambda x: make("sum", make("sin", x), axis=0) * 2.0, "reduce.mul"),
             (("f64[N,3]",), lambda x: make("transpose", x, perm=(1, 0)), "single.transpose")]
    return tuple(sample(*types, body=_sample_body(name, types, build), sizes=(0, 1, 3))
                 for types, build, name in cases)


defop(FUSED, FUSED, ("*xs",),
      attrs=(("body", REQUIRED), ("result", None), ("syms", None))
      + tuple((a, None) for a in PLAN_ATTRS),
      canon=_canon, infer=_fused_type, ref=_fused_ref, expand=_expand, wants_out=True,
      samples=_samples(),
      doc="one kernel: `body` computed from the inputs (its result number `result`); `syms` "
          "lists dims only the body binds")

# ---------------------------------------------------------------------------- siblings


def body_patterns(body: Func) -> tuple[Pattern, ...] | str:
    """The kernel shape of each result of a body, or why it has none. Several results
    (horizontal fusion) must agree on ``sibling_key``: one loop nest runs them all."""
    if isinstance(body, Body):
        return _memo(body, "_m_patterns", lambda: _body_patterns(body))  # type: ignore[no-any-return]
    return _body_patterns(body)


def _body_patterns(body: Func) -> tuple[Pattern, ...] | str:
    pats = []
    for k in range(len(body.results)):
        p = result_pattern(body, k)
        if isinstance(p, str):
            return p
        pats.append(p)
    if len(pats) > 1 and (sibling_key(pats[0]) is None
                          or any(sibling_key(p) != sibling_key(pats[0]) for p in pats)):
        return "the results of one kernel must be loops over one shape or rows of one space"
    return tuple(pats)


def result_pattern(body: Func, k: int = 0) -> Pattern | str:
    """The kernel shape of result ``k`` of a body on its own (a kernel body's: once)."""
    if isinstance(body, Body):
        got = _memo(body, "_m_results", lambda: [None] * len(body.results))
        if got[k] is None:
            got[k] = analyze(body.results[k], _not_arg)
        return got[k]  # type: ignore[no-any-return]
    return analyze(body.results[k], _not_arg)


def in_place_params(body: Func, k: int = 0) -> tuple[int, ...]:
    """``same_index_inputs`` of result ``k`` of a body (none if it has no kernel shape): the
    params its buffer may take over."""
    def find() -> tuple[int, ...]:
        p = result_pattern(body, k)
        return () if isinstance(p, str) else same_index_inputs(body, p)
    if isinstance(body, Body):
        got = _memo(body, "_m_in_place", lambda: [None] * len(body.results))
        if got[k] is None:
            got[k] = find()
        return got[k]  # type: ignore[no-any-return]
    return find()


def _not_arg(v: Value) -> bool:
    return v.op != "arg"


def sibling_key(p: Pattern) -> tuple[Any, ...] | None:
    """What kernels fused horizontally share: loop kernels their shape, row kernels their space
    and folded axes; None for kernel kinds that never share a loop nest (a GEMM's tiles, a
    reduction over leading axes accumulating in its output)."""
    if p.kind == "loop":
        return ("loop", p.root.shape)
    if p.kind == "row":
        return ("row", p.space, p.inner)
    return None


def is_sibling(v: Value) -> bool:
    """A kernel that writes one result of a multi-result body (its siblings write the others)."""
    return v.op == FUSED and len(v.attrs["body"].results) > 1


def kernel_of(v: Value) -> tuple[Any, ...]:
    """Equal for the siblings of one kernel: the same body (by text) over the same inputs."""
    return (v.attrs["body"], tuple(map(id, v.inputs)))


def merge_bodies(name: str, bodies: list[Func], inputs: list[tuple[Value, ...]],
                 make_param: Callable[[Value, int], Value]) -> tuple[Func, tuple[Value, ...]]:
    """One body with the results of ``bodies`` (each over its ``inputs``), over the union of
    the inputs; a value two bodies compute alike (same op, inputs, attrs, type) is computed
    once. Returns it and its inputs, in order."""
    union = list(dict.fromkeys(x for xs in inputs for x in xs))
    args = {id(x): make_param(x, k) for k, x in enumerate(union)}
    seen: dict[tuple[Any, ...], Value] = {}
    results = []
    for body, xs in zip(bodies, inputs):
        env: dict[int, Value] = {id(p): args[id(x)] for p, x in zip(body.params, xs)}
        for v in body.values():
            if id(v) in env:
                continue
            ins = tuple(env[id(i)] for i in v.inputs)
            key = (v.op, tuple(map(id, ins)), exact_attrs(v.attrs.items), v.type)
            if key not in seen:
                seen[key] = rebuild(v, ins)
            env[id(v)] = seen[key]
        results.append(env[id(body.results[0])])
    merged = Func(name, tuple(args[id(x)] for x in union), tuple(results))
    return Body(merged.name, merged.params, merged.results), tuple(union)


def exact_attrs(items: tuple[tuple[str, Any], ...]) -> Any:
    """Attrs as a key that tells apart what prints apart: floats compare 0.0 == -0.0 (and
    hash alike), so attrs holding a float are keyed by their text."""
    for _, a in items:
        if type(a) is float or (type(a) is tuple and any(type(x) is float for x in a)):
            return repr(items)
    return items
