"""The op table: one ``OpDef`` per op holds its signature, shape rule, NumPy reference, VJP rule and
how it lowers, so adding an op is one ``defop`` call in one file."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from graphc.ir.errors import GraphTypeError

# kinds: how an op lowers and fuses
ELEMENTWISE = "elementwise"
REDUCE = "reduce"
MATMUL = "matmul"
MOVEMENT = "movement"
CREATE = "create"
COMPOSITE = "composite"     # never in the IR: elaborates to primitives via ``decompose``
SPECIAL = "special"         # arg, grad: handled by the passes/runtime themselves

# traits: what passes and the backend may assume of an op (they ask ``has``, never a name)
COMMUTATIVE = "commutative"
ASSOCIATIVE = "associative"
IDEMPOTENT = "idempotent"
CHEAP = "cheap"                        # about one instruction: recomputed where used, not stored
PRESERVES_FINITE = "preserves_finite"  # finite inputs give a finite result
VIEW = "view"                          # a layout change: the same elements seen anew
# a running sum: always the root of its own kernel (never fused into its users), so that the
# term it adds fuses into it as a matmul's or reduction's epilogue and the sum overwrites its
# first operand in place (gradient accumulation keeps one buffer per param, not one per slice)
ACCUMULATES = "accumulates"
TRAITS = (COMMUTATIVE, ASSOCIATIVE, IDEMPOTENT, CHEAP, PRESERVES_FINITE, VIEW, ACCUMULATES)

# how a reduction folds its elements: the interpreter and every backend handle each of these,
# and declaring a reduction with any other is an error at declaration, not a wrong number
COMBINES = ("add", "mul", "max", "min", "argmax", "argmin")

REQUIRED = object()          # attribute default meaning "must be given"


@dataclass(frozen=True, slots=True)
class OpDef:
    name: str
    kind: str
    inputs: tuple[str, ...]                 # operand names; "*xs" is a list operand (concat)
    infer: Callable[..., Any] | None = None  # (*types, **attrs) -> TensorType
    attrs: tuple[tuple[str, Any], ...] = ()  # (name, default | REQUIRED), DSL positional order
    canon: Callable[..., dict[str, Any]] | None = None  # (types, attrs) -> normalised attrs
    ref: Callable[..., Any] | None = None    # NumPy semantics: (*arrays, **attrs) -> ndarray
    vjp: Callable[..., Any] | None = None    # (g, out, *inputs, **attrs) -> [Value | None]
    # an op that stands for other ops (a kernel): its value computed by them, which is what
    # autodiff differentiates in place of a vjp
    expand: Callable[..., Any] | None = None  # (value) -> Value
    decompose: Callable[..., Any] | None = None  # COMPOSITE: (*values, **attrs) -> Value(s)
    # lowering, by kind (runtime passes its emitter ``em``; ir/ never imports llvmlite)
    lower: Callable[..., Any] | None = None  # ELEMENTWISE: (em, *scalars, **attrs) -> scalar
    combine: str | None = None               # REDUCE: one of COMBINES
    identity: Any = None                     # REDUCE: the fold's start value
    traits: tuple[str, ...] = ()
    domain: tuple[Any, ...] = ()             # per input: (lo, hi) sample range for tests, or None
    samples: tuple[Any, ...] = ()            # test cases: see tests/ops/test_every_op.py
    doc: str = ""
    differentiable: bool = True              # False: gradient is an exact zero (comparisons, ...)
    wants_out: bool = False                  # ref also receives out_shape=, out_dtype=
    dsl: bool = True                         # callable by name from .graph (False: internal)
    spelling: str = ""                       # the name .graph calls it by, if not its own
    # the op that a call with as many tensor arguments as that op takes means (batch_norm
    # with the statistics given is batch_norm_stats)
    more_inputs: str = ""

    @property
    def callable_from_dsl(self) -> bool:
        return self.dsl and (self.kind != SPECIAL or self.name == "grad")

    @property
    def dsl_name(self) -> str:
        """What ``.graph`` code calls this op (pad_constant is ``pad``: the IR's own ``pad`` is
        the internal general pad, with interior padding)."""
        return self.spelling or self.name

    @property
    def variadic(self) -> bool:
        return bool(self.inputs) and self.inputs[0].startswith("*")

    def check_attrs(self, n_inputs: int, given: dict[str, Any]) -> dict[str, Any]:
        """Check arity and keywords; fill defaults. Raises GraphTypeError with a suggestion."""
        if not self.variadic and n_inputs != len(self.inputs):
            raise GraphTypeError(
                f"'{self.name}' takes {len(self.inputs)} tensor argument"
                f"{'s' if len(self.inputs) != 1 else ''} ({', '.join(self.inputs)}), "
                f"got {n_inputs}")
        known = dict(self.attrs)
        out: dict[str, Any] = {}
        for k, v in given.items():
            if k not in known:
                raise GraphTypeError(f"'{self.name}' has no keyword '{k}'"
                                     + suggest(k, [a for a, _ in self.attrs]))
            out[k] = v
        for k, default in self.attrs:
            if k not in out:
                if default is REQUIRED:
                    raise GraphTypeError(f"'{self.name}' needs the argument '{k}'")
                out[k] = default
        return out


_TABLE: dict[str, OpDef] = {}


def defop(name: str, kind: str, inputs: tuple[str, ...] = ("x",), **fields: Any) -> OpDef:
    if name in _TABLE:
        raise ValueError(f"op {name!r} declared twice")
    opdef = OpDef(name, kind, inputs, **fields)
    unknown = [t for t in opdef.traits if t not in TRAITS]
    if unknown:
        raise ValueError(f"op {name!r} declares unknown traits {unknown}")
    if kind == REDUCE and opdef.combine not in COMBINES:
        raise ValueError(f"reduction {name!r} combines by {opdef.combine!r}, which the "
                         f"backend cannot lower; one of {COMBINES}")
    _TABLE[name] = opdef
    return opdef


def has(op: str, trait: str) -> bool:
    """Whether op ``op`` declares ``trait`` (an unknown op declares none)."""
    opdef = _TABLE.get(op)
    return opdef is not None and trait in opdef.traits


def get(name: str) -> OpDef:
    try:
        return _TABLE[name]
    except KeyError:
        raise GraphTypeError(f"unknown op '{name}'" + suggest(name, list(_TABLE))) from None


def lookup(name: str) -> OpDef | None:
    return _TABLE.get(name)


def dsl_lookup(name: str, positional: int) -> OpDef | None:
    """The op that a ``.graph`` call ``name(...)`` with ``positional`` arguments means."""
    for op in _TABLE.values():
        if op.callable_from_dsl and op.dsl_name == name:
            more = _TABLE.get(op.more_inputs) if op.more_inputs else None
            return more if more is not None and positional >= len(more.inputs) else op
    return None


def all() -> list[OpDef]:  # noqa: A001 - the registry's natural verb
    return list(_TABLE.values())


def suggest(name: str, candidates: list[str]) -> str:
    """"; did you mean 'x'?" for the closest candidate by edit distance (typos of one or two
    letters), preferring one of the same length: ``exq`` suggests ``exp``, not ``eq``."""
    limit = 0 if len(name) < 2 else 1 if len(name) <= 3 else max(2, len(name) // 3)
    best = min(((_edits(name, c), abs(len(c) - len(name)), c) for c in candidates
                if c != name), default=None)
    return f"; did you mean '{best[2]}'?" if best is not None and best[0] <= limit else ""


def _edits(a: str, b: str) -> int:
    """Edit distance counting a swap of neighbours as one edit (``grda`` -> ``grad``), ignoring
    case (``Relu`` suggests ``relu``)."""
    a, b = a.lower(), b.lower()
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1,
                          d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]
