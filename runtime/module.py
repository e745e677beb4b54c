"""``compile_module``: plan each Func and look its object code up in the disk cache; build the
entry points it lacks as one LLVM module (kernels they share compile once), optimise and emit
it (counted in ``stats``, timed in ``compile_stats``), and link it into the JIT. Inspection
(``llvm_ir``, ``asm``, ``object_code``) rebuilds what it needs on demand."""
from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import llvmlite
import numpy as np

from graphc.ir.core import Func, Value, gc_paused
from graphc.ir.errors import GraphCallError, Loc
from graphc.ir.ops.registry import suggest
from graphc.runtime import call, fpmode, gemmlib, jit, pool
from graphc.runtime.arena import Arena
from graphc.runtime.cache import graphc_version
from graphc.runtime.codegen import Call, Codegen, build_model, build_module, entry_symbol
from graphc.runtime.kernelplan import make_plan
from graphc.runtime.plantypes import Plan, Step
from graphc.runtime.stats import CompileStats


def func_text(func: Func) -> str:
    """Canonical text of a Func for the cache key: a structural dump with exact attribute reprs
    and types, each value numbered, a fused kernel's body (an attribute) dumped the same way
    once per body. (Printing the IR as well cost 3x as much and added nothing.)"""
    lines: list[str] = []
    bodies: dict[int, int] = {}

    def dump(f: Func, tag: str) -> None:
        ids: dict[int, int] = {}
        out = [f"{tag} {f.name} {f.result_names!r}"]
        for k, v in enumerate(f.values()):
            ids[id(v)] = k
            attrs = v.attrs.items
            if any(isinstance(x, Func) for _, x in attrs):
                attrs = tuple((n, f"<body {body(x)}>" if isinstance(x, Func) else x)
                              for n, x in attrs)
            out.append(f"{v.op}({','.join(str(ids[id(i)]) for i in v.inputs)}) "
                       f"{attrs!r} {v.type}")
        out.append("ret " + ",".join(str(ids[id(r)]) for r in f.results))
        lines.extend(out)

    def body(f: Func) -> int:
        if id(f) not in bodies:
            bodies[id(f)] = len(bodies)
            dump(f, f"body {bodies[id(f)]}:")
        return bodies[id(f)]

    dump(func, "func")
    return "\n".join(lines)


@dataclass
class Entry:
    func: Func
    plan: Plan
    key: str
    address: int = 0
    native: Any = None          # the driver as a ctypes function (releases the GIL)
    loaded: Any = None
    obj: bytes = b""


@dataclass
class CompiledModule:
    entries: dict[str, Entry]
    opt_level: int
    check_numerics: bool
    debug: bool = False
    flush_denormals: bool = False    # the drivers run with FTZ/DAZ (runtime/fpmode.py)
    stats: dict[str, int] = field(default_factory=lambda: {"llvm_compiles": 0, "cache_hits": 0})
    arena: Arena = field(default_factory=Arena)         # one block of memory per thread
    compile_stats: CompileStats = field(default_factory=CompileStats)   # phase times
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def entry(self, name: str) -> Entry:
        if name not in self.entries:
            raise GraphCallError(f"no function '{name}'" + suggest(name, list(self.entries)))
        return self.entries[name]

    def call(self, name: str, args: Mapping[str, Any],
             inplace: Mapping[int, str] | None = None,
             dims: Mapping[str, int] | None = None) -> list[np.ndarray]:
        """Run entry ``name``: fresh result arrays, or result i written into the caller's array
        ``args[inplace[i]]``; ``dims`` binds symbolic dims that no argument binds."""
        e = self.entry(name)
        return call.invoke(e.plan, e.native, args, inplace, dims, self.arena)

    def run(self, name: str, args: Mapping[str, np.ndarray], env: Mapping[str, int],
            inplace: Mapping[int, str] | None = None) -> list[np.ndarray]:
        """Run entry ``name`` on arrays its caller already checked, converted (declared dtypes,
        contiguous, in param order) and bound to ``env``."""
        e = self.entry(name)
        targets = call.check_inplace(e.plan, inplace, args, call.result_shapes(e.plan, env)) \
            if inplace else {}
        # the address takes the native trampoline; a replaced entry (tests wrap it) is called
        native = e.address if isinstance(e.native, call.ENTRY_TYPE) else e.native
        return call.run(e.plan, native, list(args.values()), env, targets, self.arena)

    def release_memory(self) -> None:
        """Free every thread's workspace now (a busy one when its call ends)."""
        self.arena.release()

    def _ir_text(self, name: str) -> str:
        e = self.entry(name)
        return str(build_module(e.plan, self.check_numerics, debug=self.debug, details=True,
                                flush=self.flush_denormals))

    def _annotated(self, name: str) -> tuple[str, list[tuple[str, Step]]]:
        """Entry ``name``'s module alone (driver ``graphc_entry``) and, in the order the driver
        calls them, the kernel function each step runs."""
        e = self.entry(name)
        cg = _Recording(e.plan, self.check_numerics, debug=self.debug, details=True,
                        flush=self.flush_denormals)
        return str(cg.build()), cg.calls

    def llvm_ir(self, name: str, optimized: bool = True) -> str:
        """One valid module per entry point, its kernels and their calls commented with the
        ``.graph`` lines they compute."""
        text, calls = self._annotated(name)
        text = jit.optimized_ir(text, self.opt_level) if optimized else text
        return annotate(text, calls, asm=False)

    def asm(self, name: str) -> str:
        text, calls = self._annotated(name)
        return annotate(jit.assembly(text, self.opt_level), calls, asm=True)

    def object_code(self, name: str | None = None) -> bytes:
        """An object file of one entry point alone (default: the first), its driver
        ``graphc_entry``: compiled now, as what was linked holds every entry point."""
        return jit.compile_object(self._ir_text(name or next(iter(self.entries))),
                                  self.opt_level)


def compile_module(funcs: Mapping[str, Func], *, opt_level: int = 2, cache: bool = True,
                   check_numerics: bool = False,
                   debug: bool | None = None,
                   compile_stats: CompileStats | None = None,
                   threads: int | None = None,
                   keys: Mapping[str, str] | None = None,
                   flush_denormals: bool = False) -> CompiledModule:
    """Plan, look up or compile, and link each of ``funcs`` (the kernels they hold run as the
    IR shows them; check_numerics adds a NaN/Inf check after each). Phase times go
    to ``compile_stats`` (a fresh one if None), kept as ``CompiledModule.compile_stats``.
    ``threads``: big loops run on that many threads (default: GRAPHC_NUM_THREADS, else every
    core this process may use); the code differs, so it is part of the cache key.
    ``keys``: each entry's cache key as an earlier compile of the same funcs made it (a
    whole-model cache hit, graphc/modelcache.py), so it is not made again.
    ``flush_denormals``: every call runs with subnormals flushed to zero, on the caller's
    thread and the pool's (runtime/fpmode.py; no effect where the machine has no such mode)."""
    with gc_paused():
        return _compile_module(funcs, opt_level, cache, check_numerics, debug, compile_stats,
                               threads, keys, flush_denormals)


def _compile_module(funcs: Mapping[str, Func], opt_level: int, cache: bool,
                    check_numerics: bool, debug: bool | None,
                    compile_stats: CompileStats | None, threads: int | None,
                    keys: Mapping[str, str] | None, flush: bool) -> CompiledModule:
    threads = pool.default_threads() if threads is None else threads
    if debug is None:           # GRAPHC_DEBUG=1 makes every build a debug build (CI runs so)
        debug = os.environ.get("GRAPHC_DEBUG", "") not in ("", "0")
    st = compile_stats if compile_stats is not None else CompileStats()
    flush = bool(flush) and fpmode.supported()
    mod = CompiledModule({}, opt_level, check_numerics, debug, flush, compile_stats=st)
    with st.phase("llvm init"):
        host = jit.host_id()
    store = jit.open_cache() if cache else None     # None (one GraphWarning) without a home
    missing: dict[str, Plan] = {}
    for name, func in funcs.items():
        with st.phase("plan"):
            plan = make_plan(func)      # (not kept with the bundle: it is keyed by id())
        if keys is not None and name in keys:
            key = keys[name]
        else:
            with st.phase("cache key"):
                # the entry's name too: its object looks the driver up by it (entry_symbol)
                key = jit.cache_key(func_text(func), f"entry={name}", f"O{opt_level}",
                                    f"numerics={check_numerics}", f"debug={debug}",
                                    f"threads={threads}", f"flush={flush}", graphc_version(),
                                    llvmlite.__version__, host)
        e = mod.entries[name] = Entry(func, plan, key)
        with st.phase("cache read"):
            obj = store.get(key) if store is not None else None
        if obj is not None:
            mod.stats["cache_hits"] += 1
            e.obj = obj
        else:
            missing[name] = plan
    if missing:
        # the entry points the cache lacks, compiled as one module: the kernels they share
        # (the forward that backward and the step recompute) are optimised once. Each entry's
        # cache entry holds that object; its own driver is what a later hit looks up.
        with st.phase("llvm ir"):
            shared = build_model(missing, check_numerics, debug, details=True, threads=threads,
                                 flush=flush)
            parts = shared.parts(opt_level)
        st.count("glue functions", sum(t.count("\ndefine ") for t, p in parts if p == jit.GLUE))
        st.count("kernels", sum(len(p.steps) for p in missing.values()))
        st.count("kernel functions", len(shared.kernels) if not debug else
                 sum(len(p.steps) for p in missing.values()))
        obj = jit.compile_objects(parts, st)
        mod.stats["llvm_compiles"] += len(missing)
        for name in missing:
            mod.entries[name].obj = obj
            if store is not None:
                with st.phase("cache write"):
                    store.put(mod.entries[name].key, obj)
    with st.phase("link"):
        by_obj: dict[bytes, list[str]] = {}         # entries compiled together link once
        for name, e in mod.entries.items():
            by_obj.setdefault(e.obj, []).append(name)
        for obj, names in by_obj.items():
            symbols = [entry_symbol(n) for n in names]
            imports = dict(pool.POOL.symbols(threads)) if threads > 1 else {}
            imports.update(gemmlib.symbols(gemmlib.needed(obj)))   # the GEMM kernels it calls
            loaded = jit.link(obj, symbols, imports)
            for n, sym in zip(names, symbols):
                e = mod.entries[n]
                e.loaded = loaded
                e.address = loaded.addresses[sym]
                e.native = call.ENTRY_TYPE(e.address)
    return mod


# -- source locations in printed LLVM IR and assembly -----------------------------------------
class _Recording(Codegen):
    """A Codegen that notes which kernel function each step calls (identical steps share one,
    runtime/dedup.py)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.calls: list[tuple[str, Step]] = []

    def step_call(self, s: Step) -> Call:
        c = super().step_call(s)
        self.calls.append((c.fn.name, s))
        return c


def _where(loc: Loc | None) -> str:
    if loc is None:
        return "(no source location)"
    s = f"{os.path.basename(loc.file)}:{loc.line}:{loc.col}"
    return s if loc.via is None else f"{s} <- {_where(loc.via)}"


def _what(v: Value) -> str:
    body = v.attrs.get("body") if v.op == "fused" else None
    return f"fused {body.name}" if isinstance(body, Func) else v.op


def annotate(text: str, calls: list[tuple[str, Step]], asm: bool) -> str:
    """``text`` with a comment before each kernel function (the steps it runs: op, ``.graph``
    location, and a fused kernel's body ops with theirs) and before each call of one in the
    driver (that step). Comments only, so the module still parses."""
    by_fn: dict[str, list[Step]] = {}
    for fn, s in calls:
        by_fn.setdefault(fn, []).append(s)
    if not by_fn:
        return text
    mark = jit.asm_comment() if asm else ";"
    names = "|".join(re.escape(n) for n in sorted(by_fn, key=len, reverse=True))
    if asm:
        define = re.compile(rf'^"?({names})"?:')
        use = re.compile(rf'(?:\$|call\w*\s+)"?({names})"?(?=[,\s]|$)')
    else:
        define = re.compile(rf'^define [^@]*@"?({names})"?\(')
        use = re.compile(rf'\bcall [^@]*@"?({names})"?\(')
    called = {n: 0 for n in by_fn}
    sites = {n: 0 for n in by_fn}
    for line in text.splitlines():
        m = use.search(line)
        if m and not define.match(line):
            sites[m.group(1)] += 1
    out: list[str] = []
    for line in text.splitlines():
        m = define.match(line)
        if m:
            steps = by_fn[m.group(1)]
            for s in steps:
                out.append(f"{mark} kernel {m.group(1)}: step {s.index}, {_what(s.value)} at "
                           f"{_where(s.value.loc)}")
            body = steps[0].value.attrs.get("body") if steps[0].value.op == "fused" else None
            if isinstance(body, Func):
                out += [f"{mark}   {v.op:<14} {_where(v.loc)}" for v in body.values()
                        if v.op not in ("arg", "const")]
        else:
            m = use.search(line)
            if m and called[m.group(1)] < len(by_fn[m.group(1)]):
                steps = by_fn[m.group(1)]
                s = steps[called[m.group(1)]]
                indent = line[:len(line) - len(line.lstrip())]
                if sites[m.group(1)] == 1 and len(steps) > 1:
                    # a table driver's one call site of a shared kernel runs all its steps
                    called[m.group(1)] = len(steps)
                    shown = ", ".join(str(x.index) for x in steps[:8])
                    more = f" (+{len(steps) - 8} more)" if len(steps) > 8 else ""
                    out.append(f"{indent}{mark} steps {shown}{more}: {_what(s.value)} at "
                               f"{_where(s.value.loc)}")
                else:
                    called[m.group(1)] += 1
                    out.append(f"{indent}{mark} step {s.index}: {_what(s.value)} at "
                               f"{_where(s.value.loc)}")
        out.append(line)
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")
