"""Partition the function into kernels, each a ``fused`` op whose body holds what it computes.
Keeps: results, types and locs (every body value keeps its own source line).

Kernels are elementwise chains with their broadcasts, reductions with the elementwise work before
and after them (softmax and cross-entropy become row kernels), and matmuls with their epilogues
(bias, activation, the activation's derivative). Values are visited users first: a value joins
the kernels of its users when each can hold it (``ir.ops.kernelshape.analyze``) and it is cheap to
recompute or has one user kernel; otherwise it is materialized, as the root of its own kernel.
Each kernel is one value computed from values materialized before it, so kernels never form a
cycle; a value that would need one kernel to be both before and after another is kept out, and
``explain`` says so, one line per rejected candidate, as it does for every other rejection. A
function that already holds kernels is left as it is.

An unrolled loop should cost its distinct kernels, not its steps. A kernel reads at most
``MAX_INPUTS`` values, so a sum over every step (a weight's gradient) is a chain of pieces that
are alike (the backend compiles them once, runtime/dedup.py); and kernels alike in structure
(the same kernel of each step) share one body object, so whatever a later pass, the planner or
the cache key asks of a body is worked out once per distinct kernel.

Then kernels are fused horizontally (siblings.py). ``Options.policy="single"`` puts every op
in a kernel of its own (-O0), and a kernel opt-bisect cuts becomes one kernel per op: the
backend runs exactly these kernels and plans none of its own.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import partial

from graphc.ir.core import Func, Value, make, rebuild
from graphc.ir.errors import GraphCallError, Loc
from graphc.ir.ops import registry
from graphc.ir.ops.fused import exact_attrs
from graphc.ir.ops.kernelshape import Pattern, analyze, joined, refused, region, role
from graphc.ir.types import TensorType
from graphc.passes.kernelrules import (  # noqa: F401  (MAX_*: the limits, named here too)
    MAX_INPUTS,
    MAX_MEMBERS,
    MAX_REDUCTIONS,
    allowed,
    is_view,
    param_name,
    reduces,
)
from graphc.passes.rewrite import Counter, PassContext, has_grad, rewrite
from graphc.passes.siblings import siblings

RECOMPUTE = ("cheap", "elementwise", "none")
# "fuse": grow kernels as the module docstring says; "single": one op per kernel (what -O0 and
# check_numerics run, so that a run-time error names the one op of its kernel)
POLICIES = ("fuse", "single")
# at most this many kernels recompute one value: in a chain where each step reads the one
# before (``h = tanh(h) * 0.5 + h`` with every tanh kept for backward), unbounded recomputation
# put every earlier step into each later kernel, n^2 work in all
MAX_COPIES = 8


def _reads_after(reads: frozenset[int], v: Value) -> frozenset[int]:
    """A kernel's inputs once ``v``, one of them (or its root), joins: ``v``'s inputs replace
    it (none of them is a member yet: members join users first; constants are inside)."""
    return (reads - {id(v)}) | {id(i) for i in v.inputs if i.op != "const"}


@dataclass
class _Kernel:
    root: Value
    members: dict[int, Value] = field(default_factory=dict)
    kind: str = "single"            # what ``analyze`` says of the members, kept as they grow
    anchor: Value | None = None     # and its anchor (the matmul, the leading fold)
    reads: frozenset[int] = frozenset()     # ids of the values it reads from outside
    # a piece of a kernel that MAX_INPUTS cut (its root was refused for it): the pieces of a
    # long sum stay loops, alike from piece to piece and small; a matmul (or reductions) would
    # make each a GEMM with the sum as its epilogue (or a row kernel of many folds), large code
    piece: bool = False

    @staticmethod
    def of(v: Value, piece: bool = False) -> _Kernel:
        return _Kernel(v, {id(v): v}, reads=_reads_after(frozenset(), v), piece=piece)

    def inside(self, v: Value) -> bool:
        return id(v) in self.members or v.op == "const"


@dataclass(frozen=True)
class Partition:
    func: Func                      # the partitioned function
    notes: tuple[str, ...]          # why each rejected candidate was not fused
    source: Func                    # the function the kernels were cut from
    roots: dict[int, str]           # its values that kernels materialize -> the kernel's kind


@dataclass(frozen=True)
class Options:
    """``recompute``: which values a kernel recomputes rather than reads from another kernel
    (one of RECOMPUTE; "cheap": the ops the registry marks cheap); ``policy``: one of POLICIES
    ("single": every op its own kernel); ``horizontal``: fuse sibling kernels into kernels of
    several results."""
    recompute: str = "cheap"
    policy: str = "fuse"
    horizontal: bool = True         # then merge sibling kernels (``siblings``); "fuse" only

    def __post_init__(self) -> None:
        if self.recompute not in RECOMPUTE:
            raise GraphCallError(f"fusion: recompute must be one of "
                                 f"{', '.join(RECOMPUTE)}, got {self.recompute!r}")
        if self.policy not in POLICIES:
            raise GraphCallError(f"fusion: policy must be one of {', '.join(POLICIES)}, got "
                                 f"{self.policy!r}")


def run(func: Func, ctx: PassContext | None = None, options: Options | None = None) -> Func:
    o = options or Options()
    return partition(func, o.recompute, notes=False,
                     counter=ctx.counter if ctx is not None else None, policy=o.policy,
                     horizontal=o.horizontal).func


def explain(func: Func, recompute: str = "cheap", policy: str = "fuse") -> list[str]:
    """One line per value that was kept out of a kernel that uses it, and why."""
    return list(partition(func, recompute, policy=policy).notes)


def partition(func: Func, recompute: str = "cheap", notes: bool = True,
              counter: Counter | None = None, policy: str = "fuse", horizontal: bool = True
              ) -> Partition:
    """The kernels of ``func``; ``notes=False`` leaves out the reasons for rejections (finding
    the cycle a rejected value would form costs more than the partition itself). Each kernel
    formed is a rewrite that ``counter`` (opt-bisect) may refuse."""
    if has_grad(func) or any(v.op == "fused" for v in func.values()):
        return Partition(func, (), func, {})        # not yet differentiated, or already cut
    if policy == "fuse":
        func = rewrite(func, _mask_reader(func), counter)
    values = func.values()
    p = _Partitioner(func, values, recompute, notes, counter, policy == "single")
    for v in reversed(values):
        p.decide(v)
    roots = {id(k.root): k.kind for k in p.kernels}
    out = p.build()
    if policy == "fuse" and horizontal:
        out = siblings(out, counter)
    return Partition(out, tuple(p.notes), func, roots)


def _mask_reader(func: Func) -> Callable[[Value], Value]:
    """``gt(x, 0)`` -> ``gt(relu(x), 0)`` where ``relu(x)`` exists (equal for every x, NaN too):
    relu's derivative then reads the activation backward keeps anyway, and the pre-activation
    has one user left, so it fuses into the matmul epilogue that makes it."""
    relu = {id(v.inputs[0]): v for v in func.values() if v.op == "relu"}

    def fold(v: Value) -> Value:
        if v.op == "gt" and id(v.inputs[0]) in relu and _is_zero(v.inputs[1]):
            return make("gt", relu[id(v.inputs[0])], v.inputs[1])
        return v
    return fold


def _is_zero(v: Value) -> bool:
    return v.op == "const" and not isinstance(v.attrs["value"], tuple) and \
        v.attrs["value"] == 0 and v.type.rank == 0


class _Partitioner:
    def __init__(self, func: Func, values: list[Value], recompute: str, notes: bool = True,
                 counter: Counter | None = None, single: bool = False):
        if recompute not in RECOMPUTE:
            raise ValueError(f"recompute must be one of {RECOMPUTE}, got {recompute!r}")
        self.func, self.values, self.recompute, self.explain = func, values, recompute, notes
        self.counter, self.single = counter, single
        self.solo: dict[int, Value] = {}         # value -> its own kernel, once bisect cut one
        self.users: dict[int, list[Value]] = defaultdict(list)
        for v in values:
            for i in dict.fromkeys(v.inputs):
                self.users[id(i)].append(v)
        self.results = {id(r) for r in func.results}
        self.kernels: list[_Kernel] = []
        self.home: dict[int, list[int]] = {}     # value -> kernels that compute it
        self.notes: list[str] = []
        # why_not's verdicts (kind, anchor, inputs) to commit
        self.grown: dict[int, tuple[str, Value | None, frozenset[int]]] = {}
        self.piece = False                       # why_not refused ``decide``'s value for MAX_INPUTS
        self.bodies: dict[Hashable, Value] = {}  # kernels by their body's structure
        self.bit: dict[int, int] = {}
        self.above: dict[int, int] = {}          # value -> bitset of the values it depends on

    def ancestry(self) -> None:
        """``bit`` and ``above``, for notes on cycles: n^2 bits, so made only when asked."""
        if self.bit:
            return
        self.bit = {id(v): 1 << k for k, v in enumerate(self.values)}
        for v in self.values:
            acc = 0
            for i in v.inputs:
                acc |= self.above[id(i)] | self.bit[id(i)]
            self.above[id(v)] = acc

    def decide(self, v: Value) -> None:
        if v.op in ("arg", "const"):
            return
        self.piece = False
        kernels: list[int] = []
        boundary = id(v) in self.results
        for u in self.users[id(v)]:
            if id(u) in self.home:
                kernels.extend(k for k in self.home[id(u)] if k not in kernels)
            else:
                boundary = True
        if kernels and registry.has(v.op, registry.ACCUMULATES) and not self.single:
            if self.explain:
                self.notes.append(f"fusion: {_what(v)} is materialized: a running sum is the "
                                  f"root of its own kernel, updated in place")
        elif kernels and not boundary and not self.single:
            why = self.why_not(v, kernels)
            if why is None:
                for k in kernels:
                    kern = self.kernels[k]
                    kern.members[id(v)] = v
                    kern.kind, kern.anchor, kern.reads = self.grown[k]
                self.home[id(v)] = kernels
                return
            if role(v) != "single" and why:
                self.notes.append(why)
        if is_view(v):
            return                                   # stays a view of its input
        kern = _Kernel.of(v, self.piece)
        pattern = analyze(v, kern.inside)
        if isinstance(pattern, Pattern):
            kern.kind, kern.anchor = pattern.kind, pattern.anchor
        self.kernels.append(kern)
        self.home[id(v)] = [len(self.kernels) - 1]

    def why_not(self, v: Value, kernels: list[int]) -> str | None:
        """None if ``v`` can join every kernel in ``kernels``, else why not ("" = say nothing:
        without ``notes`` nothing is said, as the sentences cost more than the decisions)."""
        if len(kernels) > MAX_COPIES and self.duplicable(v):
            return self.kept(v, None, f"{len(kernels)} kernels use it, more than the "
                                      f"{MAX_COPIES} that may each recompute it")
        if len(kernels) > 1 and not self.duplicable(v):
            if not self.explain:
                return ""
            self.ancestry()
            for k in kernels:
                x = self.reader_of(v, self.kernels[k])
                if x is not None:
                    return self.kept(v, self.kernels[k], f"that kernel also reads {_what(x)}, "
                                                         f"which needs it, so fusing would form "
                                                         f"a cycle")
            return self.kept(v, None, f"{len(kernels)} kernels use it and recomputing "
                                      f"'{v.op}' in each would duplicate expensive work")
        self.grown = {}
        for k in kernels:
            kern = self.kernels[k]
            if role(kern.root) == "single":
                return ""
            if len(kern.members) >= MAX_MEMBERS:
                return self.kept(v, kern, f"that kernel already holds {MAX_MEMBERS} ops, the "
                                          f"most one kernel may")
            if reduces(v) and sum(map(reduces, kern.members.values())) >= MAX_REDUCTIONS:
                return self.kept(v, kern, f"that kernel already holds {MAX_REDUCTIONS} "
                                          f"reductions, the most one kernel may")
            reads = _reads_after(kern.reads, v)
            if len(reads) > max(MAX_INPUTS, len(kern.reads)):
                self.piece = True
                return self.kept(v, kern, f"that kernel would read {len(reads)} inputs, more "
                                          f"than the {MAX_INPUTS} one kernel may")
            if kern.piece and role(v) != "loop":
                return self.kept(v, kern, f"that kernel is a piece of a kernel of more than "
                                          f"{MAX_INPUTS} inputs: a loop, it takes no matmul "
                                          f"or reduction")
            got = self.grow(kern, v)
            if isinstance(got, str):
                return self.kept(v, kern, got)
            self.grown[k] = got + (reads,)
        return None

    def kept(self, v: Value, kern: _Kernel | None, why: str) -> str:
        """The note on ``v`` kept out of ``kern`` (None: materialized) because ``why``; "" when
        notes are off."""
        if not self.explain:
            return ""
        if kern is None:
            return f"fusion: {_what(v)} is materialized: {why}"
        return f"fusion: {_what(v)} stays out of the kernel of {_what(kern.root)}: {why}"

    def grow(self, kern: _Kernel, v: Value) -> tuple[str, Value | None] | str:
        """The kind and anchor of ``kern`` with ``v`` in it, or why ``v`` cannot join; the
        region is analyzed afresh only when its kind and anchor do not tell."""
        why = refused(kern.kind, kern.anchor, v)
        if why is not None:
            return why
        kind = joined(kern.kind, kern.anchor, v)
        if kind is not None:
            return kind, kern.anchor
        got = analyze(kern.root, partial(_inside_with, kern, v))
        return got if isinstance(got, str) else (got.kind, got.anchor)

    def duplicable(self, v: Value) -> bool:
        if role(v) != "loop" or self.recompute == "none":
            return False
        # cheap ops are recomputed in every kernel that uses them instead of being stored;
        # under checkpointing's "elementwise" policy every elementwise op is
        return self.recompute == "elementwise" or registry.has(v.op, registry.CHEAP)

    def reader_of(self, v: Value, kern: _Kernel) -> Value | None:
        """An input of ``kern`` from outside it that depends on ``v``, if any."""
        for m in kern.members.values():
            for i in m.inputs:
                if not kern.inside(i) and i is not v and self.above[id(i)] & self.bit[id(v)]:
                    return i
        return None

    def build(self) -> Func:
        root_of = {id(k.root): k for k in self.kernels}
        new: dict[int, Value] = {}
        for v in self.values:
            if v.op == "arg":
                new[id(v)] = v
            elif id(v) in root_of:
                new[id(v)] = self.kernel(root_of[id(v)], new)
            elif id(v) not in self.home:
                new[id(v)] = rebuild(v, tuple(new[id(i)] for i in v.inputs))
        return Func(self.func.name, self.func.params, tuple(new[id(r)] for r in self.func.results),
                    self.func.result_names)

    def kernel(self, kern: _Kernel, new: dict[int, Value]) -> Value:
        fused = _make_kernel(kern.root, kern.inside, new, kern.kind, self.bodies)
        if self.single or allowed(self.counter, kern.root, fused):
            return fused
        # opt-bisect cut this kernel: each of its ops becomes a kernel of its own (as at -O0;
        # the backend runs only kernels), its layout ops views and its constants constants
        for m in region(kern.root, kern.inside):
            if id(m) in self.solo:           # recomputed in another cut kernel too
                new[id(m)] = self.solo[id(m)]
            elif m.op == "const" or is_view(m):
                new[id(m)] = rebuild(m, tuple(new[id(i)] for i in m.inputs))
            else:
                new[id(m)] = _make_kernel(m, partial(_alone, m), new)
            self.solo[id(m)] = new[id(m)]
        return new[id(kern.root)]


def _make_kernel(root: Value, inside: Callable[[Value], bool], new: dict[int, Value],
                 kind: str | None = None, bodies: dict[Hashable, Value] | None = None) -> Value:
    """The ``fused`` op computing ``root`` from the region ``inside`` marks, reading the values
    outside it from ``new``; ``kind``: its kernel shape, if known (else analyzed here).
    ``bodies``: the kernels made so far, by their bodies' structure; a kernel alike to an
    earlier one (an unrolled loop's, one per step) gets that one's body object, so every later
    question about a body (its kernel shape, symbols, in-place inputs, text, code) is answered
    once per distinct kernel, not once per step."""
    ms = region(root, inside)
    if kind is None:
        pattern = analyze(root, inside)
        assert isinstance(pattern, Pattern), pattern
        kind = pattern.kind
    names: set[str] = set()
    inputs = list(dict.fromkeys(i for m in ms for i in m.inputs if not inside(i)))
    if registry.has(root.op, registry.ACCUMULATES) and not inside(root.inputs[0]):
        # the running sum leads, so program order (inputs first, in order) finishes the
        # earlier terms before it starts this one: one micro-batch at a time
        inputs.remove(root.inputs[0])
        inputs.insert(0, root.inputs[0])
    params = [(param_name(i, k, names), i.type) for k, i in enumerate(inputs)]
    key = None
    if bodies is not None:
        key = _structure(kind, params, inputs, ms)
        like = bodies.get(key)
        if like is not None:        # what make would build again: the same attrs and type
            return Value("fused", tuple(new[id(i)] for i in inputs), like.type, like.attrs,
                         root.loc)
    env: dict[int, Value] = {}
    for (name, ty), i in zip(params, inputs):
        env[id(i)] = make("arg", name=name, dtype=ty.dtype, shape=ty.shape)
    for m in ms:
        env[id(m)] = rebuild(m, tuple(env[id(i)] for i in m.inputs))
    body = Func(f"{kind}.{root.op}", tuple(env[id(i)] for i in inputs), (env[id(root)],))
    fused = make("fused", *(new[id(i)] for i in inputs), body=body, loc=root.loc)
    if bodies is not None:
        bodies[key] = fused
    return fused


def _structure(kind: str, params: list[tuple[str, TensorType]], inputs: list[Value],
               ms: list[Value]) -> Hashable:
    """What a kernel's body prints as (so two kernels with equal keys have equal bodies): its
    params' names and types, then each value's op, inputs (a member by position, an input by
    its number), attrs (exactly: -0.0 is not 0.0), type and loc (with autodiff's mark)."""
    at = {id(i): -1 - k for k, i in enumerate(inputs)}
    rows = []
    for n, m in enumerate(ms):
        rows.append((m.op, tuple(at[id(i)] for i in m.inputs), exact_attrs(m.attrs.items), m.type,
                     m.loc, _marks(m.loc)))
        at[id(m)] = n
    return kind, tuple(params), tuple(rows)


def _marks(loc: Loc | None) -> tuple[str | None, ...]:
    """The autodiff marks along a loc's chain (a Loc compares without them)."""
    out = []
    while loc is not None:
        out.append(loc.grad_of)
        loc = loc.via
    return tuple(out)


def _alone(v: Value, x: Value) -> bool:
    return x is v or x.op == "const"


def _inside_with(kern: _Kernel, v: Value, x: Value) -> bool:
    return kern.inside(x) or x is v


def _what(v: Value) -> str:
    return f"'{v.op}' {v.type}" + (f" at {v.loc}" if v.loc is not None else "")
