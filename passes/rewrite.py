"""The one rewrite engine every pass uses: a children-first sweep that rebuilds only what changed,
keeps types and locations, and counts each rewrite so that opt-bisect can stop after the N-th.
Also ``PassContext``, what the pass manager hands every pass: passes read their settings from it
and from their options, never from globals."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

from graphc.ir.core import Func, Value, enter_loc, exit_loc

Rule = Callable[[Value], Value]

# A rule may return a freshly built value that another rule would simplify again; the engine
# re-applies ``fn`` to it, at most this many times per original value (no rule set loops forever).
MAX_REAPPLY = 8


@dataclass(slots=True)
class Counter:
    """Counts rewrites across a whole pipeline; with ``limit`` set, allows only the first ``limit``
    (opt-bisect). Passes marked ``exempt`` (those correctness needs) are counted but never cut."""
    limit: int | None = None
    count: int = 0
    pass_name: str = ""
    exempt: bool = False
    log: TextIO | None = None
    applied: int = 0                   # every rewrite made, exempt ones included (for stats)

    def allow(self, old: Value, new: Value) -> bool:
        if self.exempt:
            self.applied += 1
            return True
        self.count += 1
        ok = self.limit is None or self.count <= self.limit
        self.applied += ok
        if self.log is not None:
            where = f" at {old.loc}" if old.loc is not None else ""
            print(f"BISECT: {'running' if ok else 'NOT running'} rewrite ({self.count}) "
                  f"{self.pass_name}: {old.op} -> {new.op}{where}", file=self.log)
        return ok


@dataclass(frozen=True)
class NoOptions:
    """The ``Options`` of a pass that takes none."""


@dataclass(frozen=True)
class PassContext:
    """What one pipeline run shares with its passes: the rewrite ``counter`` (opt-bisect limit and
    log; the manager names the running pass in it), whether the IR is verified after each pass,
    and ``options``, per pass name the ``Options`` the caller supplies (the ``-O`` level or spec
    may override fields of them). Frozen; only the counter inside counts."""
    counter: Counter = field(default_factory=Counter)
    verify_each: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)


def rewrite(func: Func, fn: Rule, counter: Counter | None = None) -> Func:
    """Return ``func`` with every value ``v`` replaced by ``fn(v)``.

    Each value is visited once, in topological order, after its inputs have been rewritten (so
    ``fn`` sees rewritten inputs). ``fn`` returns a replacement of the same type, or ``v`` itself.
    A value whose inputs changed is rebuilt with the same op, attrs, type and loc; values built
    inside ``fn`` get ``v``'s loc by default. Params are never passed to ``fn``. Returns ``func``
    itself when nothing changed. Each rewrite asks ``counter`` (the pass context's) first.
    """
    memo: dict[int, Value] = {id(p): p for p in func.params}
    done: set[int] = set(memo)          # ids of values already final in this sweep
    for v in func.values():
        if id(v) in memo:
            continue
        ins = tuple([memo[id(i)] for i in v.inputs])
        cur = v if ins == v.inputs else rebuild(v, ins)    # Values compare by identity
        for _ in range(MAX_REAPPLY):
            token = enter_loc(cur.loc)
            try:
                new = fn(cur)
            finally:
                exit_loc(token)
            if new is cur:
                break
            if new.type != v.type:
                raise AssertionError(f"rewrite of {v.op} changed its type from {v.type} to "
                                     f"{new.type}")
            if counter is not None and not counter.allow(cur, new):
                break
            cur = new
            if id(new) in done:         # an existing value: already rewritten
                break
        memo[id(v)] = cur
        done.add(id(cur))
    results = tuple(memo[id(r)] for r in func.results)
    if all(a is b for a, b in zip(results, func.results)):
        return func
    return Func(func.name, func.params, results, func.result_names)


def has_grad(func: Func) -> bool:
    """Whether ``grad`` ops are still unexpanded. Optimisations leave such a function alone:
    merging, folding or replacing a value that a grad differentiates changes the gradient
    (grad(c1 * c2, c1) with equal constants c1, c2 is c2, but 2 * c once CSE merges them)."""
    return any(v.op == "grad" for v in func.values())


def rebuild(v: Value, inputs: tuple[Value, ...]) -> Value:
    """``v`` with new inputs of the same types (so its own type stands), or ``v`` if unchanged."""
    if all(a is b for a, b in zip(inputs, v.inputs)):
        return v
    for a, b in zip(inputs, v.inputs):
        if a.type is not b.type and a.type != b.type:
            raise AssertionError(f"rewrite replaced a {b.type} input of {v.op} by a {a.type}")
    return Value(v.op, inputs, v.type, v.attrs, v.loc)


def count_ops(func: Func) -> int:
    """Number of values other than the function's arguments (what --time-passes reports)."""
    return sum(1 for v in func.values() if v.op != "arg")
