"""Runs a pipeline: verify-each (verifier plus print/parse round trip), ``--dump-after``, per-pass
statistics for ``--time-passes``, and opt-bisect.

Opt-bisect finds the rewrite that breaks a program, as LLVM's ``-opt-bisect-limit`` does: with
``GRAPHC_OPT_BISECT=N`` in the environment (or ``run_pipeline(..., bisect=N)``) only the first N
individual rewrites of each function's pipeline are applied and the rest are skipped; each one is
logged to stderr as ``BISECT: running rewrite (k) simplify: mul -> neg at f.graph:3:5`` or
``BISECT: NOT running ...``. Bisect on N until the result flips from right to wrong; rewrite N is
the culprit. Passes that correctness needs (``autodiff``) are never cut, and N=0 gives ``-O0``.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from graphc.ir.core import Func
from graphc.ir.errors import GraphCallError, GraphError
from graphc.ir.ops.registry import suggest
from graphc.passes import PASSES, PIPELINES, REQUIRED
from graphc.passes.rewrite import Counter, count_ops, counting

BISECT_ENV = "GRAPHC_OPT_BISECT"


@dataclass(frozen=True, slots=True)
class PassStat:
    """One pass's run, as ``--time-passes`` reports it."""
    name: str
    ops_before: int
    ops_after: int
    seconds: float
    rewrites: int


class PassError(AssertionError):
    """A pass left invalid IR (a compiler bug, not a user error): names the pass."""


def pipeline(opt_level: int = 2) -> tuple[str, ...]:
    if opt_level not in range(len(PIPELINES)):
        raise GraphCallError(f"opt_level must be 0..{len(PIPELINES) - 1}, got {opt_level!r}")
    return PIPELINES[opt_level]


def describe_pipeline(opt_level: int = 2) -> list[tuple[str, str]]:
    """(name, one-line description) for each pass of the pipeline: what ``graphc passes`` prints."""
    return [(name, PASSES[name].doc) for name in pipeline(opt_level)]


def run_pipeline(func: Func, opt_level: int = 2, *, verify_each: bool = True,
                 after: str | None = None, stats: list[PassStat] | None = None,
                 bisect: int | None = None,
                 dump: Callable[[str, Func], None] | None = None) -> Func:
    """Run the ``-O{opt_level}`` pipeline on ``func``.

    ``after`` stops after the first run of the named pass (``dump_ir(after=...)``); ``stats``
    receives one ``PassStat`` per pass run; ``bisect`` (else ``$GRAPHC_OPT_BISECT``) limits the
    number of rewrites (see the module docstring); ``dump(name, func)`` is called after every pass
    (``--dump-after all``). With ``verify_each`` the input and every pass's output are verified
    and must print and read back to the same text; a failure raises ``PassError``.
    """
    names = pipeline(opt_level)
    if after is not None and after not in names:
        raise GraphCallError(f"no pass '{after}' in the -O{opt_level} pipeline "
                             f"({', '.join(names)})" + suggest(after, list(names)))
    limit = bisect if bisect is not None else bisect_from_env()
    counter = Counter(limit=limit, log=sys.stderr if limit is not None else None)
    if verify_each:
        check(func, "the input")
    for name in names:
        ops_before = count_ops(func) if stats is not None else 0
        applied = counter.applied
        start = time.perf_counter()
        with counting(counter, name, exempt=name in REQUIRED):
            func = PASSES[name].run(func)
        seconds = time.perf_counter() - start
        if verify_each:
            check(func, f"pass '{name}'")
        if stats is not None:
            stats.append(PassStat(name, ops_before, count_ops(func), seconds,
                                  counter.applied - applied))
        if dump is not None:
            dump(name, func)
        if name == after:
            break
    return func


def bisect_from_env() -> int | None:
    text = os.environ.get(BISECT_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise GraphError(f"{BISECT_ENV} must be a non-negative integer, got {text!r}")
    return int(text)


def check(func: Func, what: str) -> None:
    """The verifier, then print -> parse -> print must give the same text."""
    from graphc.ir.text import parse_funcs, print_func
    from graphc.ir.verify import verify
    try:
        verify(func)
    except GraphError as e:
        raise PassError(f"invalid IR after {what}: {e}\n{func}") from e
    text = print_func(func)
    again = "\n\n".join(print_func(f) for f in parse_funcs(text))
    if again != text:
        raise PassError(f"IR after {what} does not read back the same:\n{text}\n---\n{again}")


def format_stats(stats: list[PassStat]) -> str:
    """A ``--time-passes`` table: one line per pass, then the totals."""
    rows = [(s.name, s.ops_before, s.ops_after, s.rewrites, s.seconds * 1e3) for s in stats]
    if stats:
        rows.append(("total", stats[0].ops_before, stats[-1].ops_after,
                     sum(s.rewrites for s in stats), sum(s.seconds for s in stats) * 1e3))
    lines = [f"{'pass':<16}{'ops before':>11}{'ops after':>11}{'rewrites':>10}{'ms':>10}"]
    lines += [f"{n:<16}{a:>11}{b:>11}{r:>10}{ms:>10.2f}" for n, a, b, r, ms in rows]
    return "\n".join(lines)
