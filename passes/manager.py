"""Runs a pipeline: pipeline specs, verify-each (verifier plus print/parse round trip),
``--dump-after``, per-pass statistics for ``--time-passes``, and opt-bisect.

A pipeline spec is text: passes by name, comma-separated, each with options in braces, e.g.
``"autodiff,simplify,checkpoint{policy=elementwise,forward=1},fusion,memplan"``; ``O0``..``O3``
(or ``-O0``..) stand for the levels' specs (``LEVELS``, below). This module also holds
the pass table (``PASSES``). Grammar::

    spec   := level | step ("," step)*
    step   := NAME ["{" option ("," option)* "}"]
    option := NAME "=" VALUE        (digits: an int; true/false: a bool; else the text)

Options a spec sets override those the caller puts in the ``PassContext`` (``compile``'s
``checkpoint=``). An unknown pass or option is a ``GraphCallError`` with a suggestion.

Opt-bisect finds the rewrite that breaks a program, as LLVM's ``-opt-bisect-limit`` does: with
``GRAPHC_OPT_BISECT=N`` in the environment (or ``run_pipeline(..., bisect=N)``) only the first N
individual rewrites of each function's pipeline are applied and the rest are skipped; each one is
logged to stderr as ``BISECT: running rewrite (k) simplify: mul -> neg at f.graph:3:5`` or
``BISECT: NOT running ...``. Bisect on N until the result flips from right to wrong; rewrite N is
the culprit. Passes that correctness needs (``autodiff``) are never cut, and N=0 gives ``-O0``.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from graphc.ir.core import Func, gc_paused
from graphc.ir.errors import GraphCallError, GraphError
from graphc.ir.ops.registry import suggest
from graphc.ir.text import parse_funcs, print_func
from graphc.ir.verify import verify
from graphc.passes.rewrite import Counter, NoOptions, PassContext, count_ops


@dataclass(frozen=True)
class Pass:
    """A pass: ``run(func, ctx, options)`` with ``options`` an instance of ``Options`` (a frozen
    dataclass whose defaults are the pass's behaviour when nobody sets them)."""
    name: str
    run: Callable[[Func, PassContext, Any], Func]
    doc: str                                    # one line: what it does
    Options: type = NoOptions


def _load(name: str) -> Pass:
    """The pass in ``passes/<name>.py`` (its ``run`` and ``Options``, if it takes any); its doc is
    the first sentence of the module docstring."""
    mod = importlib.import_module(f"graphc.passes.{name}")
    text = " ".join((mod.__doc__ or name).replace("``", "").split())
    return Pass(name, mod.run, text.split(". ")[0].rstrip(".") + ".",
                getattr(mod, "Options", NoOptions))


# Ordered as in the -O3 pipeline; the file name is the pass name (``--dump-after``, ``graphc
# passes``, pipeline specs).
PASSES: dict[str, Pass] = {name: _load(name) for name in
                           ("autodiff", "constant_fold", "simplify", "cse", "dce", "checkpoint",
                            "fusion", "memplan")}

# Passes correctness needs: in every pipeline a model compiles (a spec without them gets them
# added), never skipped by opt-bisect. dce is one of them: code whose result is unused never
# runs, at any level (so a dead out-of-range slice is never an error).
REQUIRED: tuple[str, ...] = ("autodiff", "dce")

_ROUND = "constant_fold,simplify,cse"
# Every level ends by cutting kernels and planning their memory: the backend runs exactly the
# kernels these passes give, so what runs is what ``--emit ir`` shows. -O0 puts each op in a
# kernel of its own.
_KERNELS = "checkpoint,fusion,memplan"
LEVELS: tuple[str, ...] = (                     # -O0 .. -O3 as pipeline specs
    "autodiff,dce,fusion{policy=single},memplan",
    "autodiff,simplify,cse,dce,fusion,memplan",
    f"autodiff,{_ROUND},dce,{_KERNELS}",        # the default
    f"autodiff,{_ROUND},{_ROUND},dce,{_KERNELS}",  # a 2nd round finds more
)

BISECT_ENV = "GRAPHC_OPT_BISECT"
# Verify each pass's output in every model compiled without an explicit verify_each (the test
# suite sets it; tests/conftest.py). Read here only (verify_from_env).
VERIFY_ENV = "GRAPHC_VERIFY_EACH"


@dataclass(frozen=True, slots=True)
class PassStat:
    """One pass's run, as ``--time-passes`` reports it."""
    name: str
    ops_before: int
    ops_after: int
    seconds: float
    rewrites: int


@dataclass(frozen=True)
class Step:
    """One pass of a pipeline and the options its spec sets (the rest come from the context)."""
    name: str
    given: tuple[tuple[str, Any], ...] = ()

    def __str__(self) -> str:
        if not self.given:
            return self.name
        return self.name + "{" + ",".join(f"{k}={_show(v)}" for k, v in self.given) + "}"


class PassError(AssertionError):
    """A pass left invalid IR (a compiler bug, not a user error): names the pass."""


_LEVEL = re.compile(r"-?O(\d+)")
_STEP = re.compile(r"\s*([A-Za-z_]\w*)\s*(?:\{([^{}]*)\})?\s*(,|$)")
_OPTION = re.compile(r"\s*([A-Za-z_]\w*)\s*=\s*([^,=\s]+)\s*$")


def parse_pipeline(spec: str) -> tuple[Step, ...]:
    """The steps of pipeline spec ``spec`` (module docstring), as written: nothing is added."""
    if not isinstance(spec, str):
        raise GraphCallError(f"a pipeline spec is a str such as 'autodiff,dce', got {spec!r}")
    level = _LEVEL.fullmatch(spec.strip())
    if level:
        return parse_pipeline(_level_spec(int(level[1])))
    steps, pos = [], 0
    while pos < len(spec):
        m = _STEP.match(spec, pos)
        if m is None or (not m[3] and m.end() < len(spec)):
            raise GraphCallError(f"bad pipeline spec {spec!r} at column {pos + 1}: expected a "
                                 f"pass name, then options as {{name=value,...}}, then ',' or "
                                 f"the end")
        steps.append(_step(spec, m[1], m[2]))
        pos = m.end()
        if m[3] and pos == len(spec):
            raise GraphCallError(f"bad pipeline spec {spec!r}: it ends with ','")
    if not steps:
        raise GraphCallError("empty pipeline spec: name the passes, e.g. 'autodiff,dce'")
    return tuple(steps)


def _step(spec: str, name: str, options: str | None) -> Step:
    if name not in PASSES:
        raise GraphCallError(f"unknown pass '{name}' in pipeline {spec!r}"
                             + suggest(name, list(PASSES)))
    given: dict[str, Any] = {}
    fields = [f.name for f in dataclasses.fields(PASSES[name].Options)]
    for item in (options.split(",") if options is not None and options.strip() else ()):
        m = _OPTION.match(item)
        if m is None:
            raise GraphCallError(f"bad option {item.strip()!r} for pass '{name}' in pipeline "
                                 f"{spec!r}: write name=value")
        if m[1] not in fields:
            known = f" (it takes {', '.join(fields)})" if fields else " (it takes none)"
            raise GraphCallError(f"pass '{name}' has no option '{m[1]}'{known}"
                                 + suggest(m[1], fields))
        given[m[1]] = _value(m[2])
    try:
        PASSES[name].Options(**given)               # the pass's own checks, now
    except GraphError as e:
        raise GraphCallError(f"in pipeline {spec!r}: {e}") from None
    return Step(name, tuple(given.items()))


def _value(text: str) -> Any:
    if text.isdigit():
        return int(text)
    return {"true": True, "false": False}.get(text.lower(), text)


def _show(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _level_spec(opt_level: int) -> str:
    if not isinstance(opt_level, int) or opt_level not in range(len(LEVELS)):
        raise GraphCallError(f"opt_level must be 0..{len(LEVELS) - 1}, got {opt_level!r}")
    return LEVELS[opt_level]


def format_pipeline(steps: Sequence[Step]) -> str:
    """The spec text of ``steps`` (``parse_pipeline`` reads it back)."""
    return ",".join(map(str, steps))


def with_required(steps: Sequence[Step]) -> tuple[Step, ...]:
    """``steps`` with the passes correctness needs added where missing: autodiff first, dce just
    before the first pass that cuts kernels (checkpoint, fusion, memplan) or else last."""
    out = list(steps)
    names = [s.name for s in out]
    if "autodiff" not in names:
        out.insert(0, Step("autodiff"))
    if "dce" not in names:
        kernels = [i for i, s in enumerate(out) if s.name in ("checkpoint", "fusion", "memplan")]
        out.insert(kernels[0] if kernels else len(out), Step("dce"))
    return tuple(out)


def pipeline(passes: int | str | Sequence[Step] = 2, *, required: bool = True
             ) -> tuple[Step, ...]:
    """The steps a run of ``passes`` takes: an opt level, a spec, or steps; with ``required``
    (what compiling a model uses) the required passes are added where missing."""
    if isinstance(passes, int) and not isinstance(passes, bool):
        steps = parse_pipeline(_level_spec(passes))
    elif isinstance(passes, str):
        steps = parse_pipeline(passes)
    elif isinstance(passes, Sequence) and all(isinstance(s, Step) for s in passes):
        steps = tuple(passes)
    else:
        raise GraphCallError(f"opt_level must be 0..{len(LEVELS) - 1} (or the passes a pipeline "
                             f"spec), got {passes!r}")
    return with_required(steps) if required else steps


def describe_pipeline(passes: int | str | Sequence[Step] = 2) -> list[tuple[str, str]]:
    """(name, one-line description) for each pass of the pipeline: what ``graphc passes`` prints."""
    return [(s.name, PASSES[s.name].doc) for s in pipeline(passes)]


def run_pipeline(func: Func, passes: int | str | Sequence[Step] = 2, *, verify_each: bool = True,
                 after: str | None = None, stats: list[PassStat] | None = None,
                 bisect: int | None = None,
                 dump: Callable[[str, Func], None] | None = None,
                 options: Mapping[str, Any] | None = None, required: bool = True) -> Func:
    """Run the pipeline ``passes`` (an opt level, a spec, or steps; see ``pipeline``) on
    ``func``.

    ``after`` stops after the first run of the named pass (``dump_ir(after=...)``); ``stats``
    receives one ``PassStat`` per pass run; ``bisect`` (else ``$GRAPHC_OPT_BISECT``) limits the
    number of rewrites (see the module docstring); ``dump(name, func)`` is called after every pass
    (``--dump-after all``); ``options`` maps pass names to their ``Options`` (the spec's own
    settings win). With ``verify_each`` the input and every pass's output are verified and must
    print and read back to the same text; a failure raises ``PassError``.
    """
    steps = pipeline(passes, required=required)
    names = [s.name for s in steps]
    if after is not None and after not in names:
        label = f"-O{passes}" if isinstance(passes, int) else repr(format_pipeline(steps))
        raise GraphCallError(f"no pass '{after}' in the {label} pipeline "
                             f"({', '.join(names)})" + suggest(after, names))
    limit = bisect if bisect is not None else bisect_from_env()
    ctx = PassContext(Counter(limit=limit, log=sys.stderr if limit is not None else None),
                      verify_each, dict(options or {}))
    return run_steps(func, steps, ctx, after=after, stats=stats, dump=dump)


def run_steps(func: Func, steps: Sequence[Step], ctx: PassContext, *, after: str | None = None,
              stats: list[PassStat] | None = None,
              dump: Callable[[str, Func], None] | None = None) -> Func:
    """Run ``steps`` exactly as given, in context ``ctx`` (``run_pipeline`` without the
    defaults)."""
    with gc_paused():
        return _run_steps(func, steps, ctx, after, stats, dump)


def _run_steps(func: Func, steps: Sequence[Step], ctx: PassContext, after: str | None,
               stats: list[PassStat] | None, dump: Callable[[str, Func], None] | None) -> Func:
    counter = ctx.counter
    if ctx.verify_each:
        check(func, "the input")
    for step in steps:
        p = PASSES[step.name]
        options = ctx.options.get(step.name) or p.Options()
        if not isinstance(options, p.Options):
            raise GraphCallError(f"the options of pass '{step.name}' must be a "
                                 f"{p.Options.__module__}.Options, got {options!r}")
        options = dataclasses.replace(options, **dict(step.given))
        ops_before = count_ops(func) if stats is not None else 0
        applied = counter.applied
        counter.pass_name, counter.exempt = step.name, step.name in REQUIRED
        start = time.perf_counter()
        func = p.run(func, ctx, options)
        seconds = time.perf_counter() - start
        if ctx.verify_each:
            check(func, f"pass '{step.name}'")
        if stats is not None:
            stats.append(PassStat(step.name, ops_before, count_ops(func), seconds,
                                  counter.applied - applied))
        if dump is not None:
            dump(step.name, func)
        if step.name == after:
            break
    return func


def bisect_from_env() -> int | None:
    text = os.environ.get(BISECT_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise GraphError(f"{BISECT_ENV} must be a non-negative integer, got {text!r}")
    return int(text)


def verify_from_env() -> bool | None:
    """``$GRAPHC_VERIFY_EACH``: 1/0 (or true/false, yes/no, on/off); None when unset or empty."""
    text = os.environ.get(VERIFY_ENV, "").strip().lower()
    if not text:
        return None
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise GraphError(f"{VERIFY_ENV} must be 1 or 0, got {text!r}")


def check(func: Func, what: str) -> None:
    """The verifier, then print -> parse -> print must give the same text."""
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


# The pass names of each level, in order.
PIPELINES: tuple[tuple[str, ...], ...] = tuple(tuple(s.name for s in parse_pipeline(spec))
                                               for spec in LEVELS)
