"""Func -> LLVM module: one function per distinct step (its buffers ``noalias``, so loops
vectorise without run-time alias checks; identical steps share it, runtime/dedup.py) and one
exported driver that checks slice bounds, takes a workspace, runs every step in order and writes
the results: one native call per entry point (runtime/driver.py: a call per step, or, for an
unrolled loop's many repeated kernels, a constant table of the steps that one loop walks).
``build_model`` puts the kernels of all entry points in one module, so forward, backward and the
step compile a kernel they share once; ``Shared.parts`` hands it to LLVM as one module per
pipeline its functions need (``pipeline_of``).

Driver ABI: ``i32 graphc_entry(ptr args)`` (``graphc_entry.<name>`` in a model's module),
``args`` = [param ptrs.., output ptrs.., dims ptr, direct flags ptr, workspace ptr]; byte k
of the flags says output k may be written directly (else it is staged in the workspace and
copied at the end). ``dims`` holds one i64 per symbol, then DETAIL_WORDS words where a
failing kernel describes its error. Kernel bodies: runtime/kernel.py, kernels.py, fusedgen.py."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import llvmlite.ir as ll

from graphc.ir.ops import registry
from graphc.ir.ops.fused import FUSED
from graphc.ir.types import DimLike, DType, dim_prod
from graphc.runtime import dedup, fpmode, fusedgen, gemmlib, kernels, matmul_kernels
from graphc.runtime.driver import emit_driver
from graphc.runtime.emit import I1, I32, mem_type
from graphc.runtime.errcodes import ERR_ARG_NUMERICS, ERR_NUMERICS
from graphc.runtime.jit import GLUE, Pipeline
from graphc.runtime.kernel import (  # noqa: F401  (ENTRY, Kernel, DimEval: the public names)
    ENTRY,
    Call,
    DimEval,
    Kernel,
    shares_output,
)
from graphc.runtime.lowering import emit_copy, emit_map, shape_of
from graphc.runtime.plantypes import Lazy, Operand, Plan, Step, View, buffers_read, contiguous


def emit_step(k: Kernel, s: Step) -> None:
    """The body of step ``s``'s kernel, by its kind."""
    opdef = registry.get(s.value.op)
    if s.kind == FUSED:
        fusedgen.emit(k, s)
    elif s.kind == "copy":
        emit_copy(k, s.out, s.args[0], shape_of(s.args[0]))
    elif s.kind == registry.ELEMENTWISE:
        emit_map(k, s.out, Lazy(s.value, s.args))
    elif s.kind == registry.REDUCE:
        if opdef.combine in ("argmax", "argmin"):
            kernels.emit_argreduce(k, s, opdef.combine)
        else:
            kernels.emit_reduce(k, s, opdef.combine, opdef.identity)
    elif s.kind == registry.MATMUL:
        matmul_kernels.emit_matmul(k, s)
    else:
        kernels.EMITTERS[s.value.op](k, s)


class Shared:
    """What the entry points built into one LLVM module share: the module, its kernel
    functions by structural key (runtime/dedup.py) and its consts by contents. ``split``: the
    drivers go to a module of their own (``drivers``), which calls the kernels by name and is
    compiled without optimisation (the kernels' module at the model's -O level)."""

    def __init__(self, name: str, split: bool = False):
        self.split = split
        self.module = ll.Module(name=name)
        self.drivers = ll.Module(name=f"{name}.drivers") if split else self.module
        self.kernels: dict[Any, ll.Function] = {}
        self.consts: dict[tuple, ll.GlobalVariable] = {}

    def parts(self, opt_level: int) -> list[tuple[str, Pipeline]]:
        """The kernels' module as one text per pipeline (``split_by_pipeline``), then the
        drivers' (-O0: they only call kernels)."""
        out = split_by_pipeline(self.module, opt_level)
        return out + [(str(self.drivers), 0)] if self.split else out

    def callee(self, fn: ll.Function) -> ll.Function:
        """``fn`` as the drivers' module sees it (a declaration there when split)."""
        if not self.split:
            return fn
        g = self.drivers.globals.get(fn.name)
        return g if g is not None else ll.Function(self.drivers, fn.function_type, fn.name)


def entry_symbol(name: str) -> str:
    """The driver symbol of entry point ``name`` in a model's module."""
    return f"{ENTRY}.{name}"


class Codegen:
    """``debug``: check every load and store of a buffer against its size (ERR_DEBUG_BOUNDS);
    ``details``: kernels describe their errors after the run-time dims (DETAIL_WORDS), which
    the caller must then allocate; ``flush``: the driver runs with subnormals flushed to zero
    (flush_denormals, runtime/fpmode.py; ignored where the machine has no such mode)."""

    def __init__(self, plan: Plan, check_numerics: bool = False, debug: bool = False,
                 details: bool = False, threads: int = 1, shared: Shared | None = None,
                 entry: str = ENTRY, flush: bool = False):
        self.plan = plan
        self.check = check_numerics
        self.debug = debug
        self.details = details
        self.threads = threads           # > 1: big loops call the worker pool (runtime/pool.py)
        self.shared = shared if shared is not None else Shared(plan.func.name)
        self.module = self.shared.module
        self.kernels = self.shared.kernels
        self.entry = entry                  # the driver's symbol
        self.flush = flush and fpmode.supported()
        self.prefix = "" if entry == ENTRY else entry.removeprefix(ENTRY + ".") + "."
        self.keys = dedup.KeyMaker(plan)

    def const_global(self, buf: int) -> ll.GlobalVariable:
        """Buffer ``buf`` (a const) as a global, one per distinct contents in the module."""
        b = self.plan.buffers[buf]
        value = b.value.attrs["value"]
        vals = value if isinstance(value, tuple) else (value,)
        key = (b.dtype, repr(vals))
        if key not in self.shared.consts:
            mt = mem_type(b.dtype)
            conv = (lambda x: int(bool(x))) if b.dtype is DType.bool else \
                (float if b.dtype.is_float else int)
            ty = ll.ArrayType(mt, len(vals))
            g = ll.GlobalVariable(self.module, ty, f"const{len(self.shared.consts)}")
            g.global_constant = True
            g.linkage = "internal"
            g.initializer = ll.Constant(ty, [ll.Constant(mt, conv(x)) for x in vals])
            self.shared.consts[key] = g
        return self.shared.consts[key]

    def kernel_bufs(self, out: int, args: Sequence[Operand]) -> list[int]:
        bufs = [out] + [b for a in args for b in buffers_read(a)]
        return [b for b in dict.fromkeys(bufs) if self.plan.buffers[b].kind != "const"]

    def build(self) -> ll.Module:
        steps = [self.step_call(s) for s in self.plan.steps]
        copies: list[Call | None] = []
        for r, (src, own) in enumerate(self.plan.results):
            if own is not None:
                copies.append(None)
                continue
            out_buf = self.output_buf(r)
            k = Kernel(self, f"{self.prefix}result{r}.copy", self.kernel_bufs(out_buf, [src]),
                       len(self.plan.steps) + r)
            emit_copy(k, contiguous(out_buf, src.dtype if isinstance(src, View)
                                    else src.value.dtype, ()), src, self.result_shape(r))
            k.finish()
            copies.append(Call(k.fn, k.bufs, [], 0))      # its codes carry their index
        arg_checks = []
        if self.check:
            for b, buf in enumerate(self.plan.buffers):
                if buf.kind == "param" and buf.dtype.is_float:
                    k = Kernel(self, f"{self.prefix}arg{buf.index}.check", [b],
                               len(self.plan.steps) + len(self.plan.results) + buf.index)
                    k.finish(self.numerics(k, contiguous(b, buf.dtype, buf.value.shape),
                                           (ERR_ARG_NUMERICS << 24) | buf.index))
                    arg_checks.append(Call(k.fn, k.bufs, [], 0))
        driver = emit_driver(self, steps, copies, arg_checks)
        if self.flush:
            fpmode.wrap_entry(driver, self.entry)
        return self.module

    def step_call(self, s: Step) -> Call:
        """The call that runs step ``s``: a function emitted for it, or the one already
        emitted for an identical step (runtime/dedup.py; not in a debug build, whose error
        details name the buffer of a bad access)."""
        bufs = self.kernel_bufs(s.out.buf, s.args)
        if self.debug:
            key, step, offsets = None, s, []
        else:
            step, offsets = dedup.symbolize(s)
            # kernels of entry points read their dims from the same places only when the
            # entry points have the same symbols
            key = (self.plan.symbols, self.keys.key(step, bufs, shares_output(self.plan, bufs)))
        fn = self.kernels.get(key) if key is not None else None
        if fn is None:
            names = [f"{dedup.OFFSET}{j}" for j in range(len(offsets))]
            k = Kernel(self, f"{self.prefix}k{s.index}.{s.value.op}", bufs, step.index, names)
            self.emit_versions(k, step)
            code = k.code
            if self.check:
                num = self.numerics(k, step.out, (ERR_NUMERICS << 24) | step.index)
                if num is not None:
                    code = num if code is None else k.b.select(
                        k.b.icmp_signed("!=", code, ll.Constant(I32, 0)), code, num)
            k.finish(code)
            fn = k.fn
            if key is not None:
                self.kernels[key] = fn
        return Call(fn, list(dict.fromkeys(bufs)), offsets, s.index)

    def emit_versions(self, k: Kernel, step: Step) -> None:
        """The kernel's body; for a kernel that writes over an input in place (``_shares_output``)
        twice: once for the pointers equal, with that input read through the output's own
        pointer, and once for them apart. Either way no two pointers of the kernel alias, so
        every pointer stays ``noalias`` and the loops vectorise without run-time overlap checks
        (which an exact in-place update always failed, falling back to scalar code). Apart
        happens only for a param's update staged elsewhere, so the two never overlap."""
        shared = shares_output(self.plan, k.bufs) if not self.debug else set()
        out = k.bufs[0] if k.bufs else None
        ins = [b for b in k.bufs[1:] if b in shared]
        if not ins:
            emit_step(k, step)
            return
        b = k.b
        same = b.icmp_unsigned("==", k.ptrs[ins[0]], k.ptrs[out])
        for x in ins[1:]:
            same = b.and_(same, b.icmp_unsigned("==", k.ptrs[x], k.ptrs[out]))
        ends = []
        with b.if_else(same, likely=True) as (equal, apart):
            with equal:
                saved = dict(k.ptrs)
                k.ptrs.update({x: k.ptrs[out] for x in ins})
                emit_step(k, step)
                ends.append((k.code, b.block))
                k.ptrs, k.code = saved, None
            with apart:
                emit_step(k, step)
                ends.append((k.code, b.block))
        if any(c is not None for c, _ in ends):
            phi = b.phi(I32, name="code")
            for c, blk in ends:
                phi.add_incoming(c if c is not None else ll.Constant(I32, 0), blk)
            k.code = phi

    def output_buf(self, r: int) -> int:
        return next(i for i, b in enumerate(self.plan.buffers) if b.kind == "output"
                    and b.index == r)

    def result_shape(self, r: int) -> tuple[DimLike, ...]:
        return self.plan.func.results[r].shape

    def numerics(self, k: Kernel, out: View, code: int) -> ll.Value | None:
        """OR of ``not isfinite`` over a float output; returns ``code`` if any."""
        if not out.dtype.is_float:
            return None
        em = k.em
        flag = em.alloca_entry(I1, "bad")
        k.b.store(ll.Constant(I1, 0), flag)
        n = k.dim(_size(out.shape))
        with em.loop(n, "chk") as i:
            x = k.load_at(out.buf, i, out.dtype)
            k.b.store(k.b.or_(k.b.load(flag, typ=I1), em.not_(em.isfinite(x))), flag)
        return k.b.select(k.b.load(flag, typ=I1), ll.Constant(I32, code), ll.Constant(I32, 0))


def _size(shape: Sequence[DimLike]) -> DimLike:
    return dim_prod(tuple(shape))


def build_module(plan: Plan, check_numerics: bool = False, debug: bool = False,
                 details: bool = False, threads: int = 1, flush: bool = False) -> ll.Module:
    """The LLVM module of ``plan``; see Codegen for ``debug``, ``details``, ``threads`` and
    ``flush``."""
    return Codegen(plan, check_numerics, debug, details, threads, flush=flush).build()


def build_model(plans: dict[str, Plan], check_numerics: bool = False, debug: bool = False,
                details: bool = False, threads: int = 1, flush: bool = False) -> Shared:
    """The kernels of several entry points in one LLVM module, their drivers
    (``entry_symbol(name)`` each) in another (``Shared.split``), so a kernel that forward,
    backward and the step share is optimised and compiled once."""
    shared = Shared("graphc", split=True)
    for name, plan in plans.items():
        Codegen(plan, check_numerics, debug, details, threads, shared, entry_symbol(name),
                flush).build()
    return shared


# -- a pipeline per function ------------------------------------------------------------------
# Most kernels are scalar loops that LLVM's loop vectoriser makes fast: they get the model's
# -O<n>. A kernel around the GEMM library (a matmul and its epilogue) is glue: its loops run
# once per block of the product, or are vectors the code generator wrote itself (the
# epilogue, the thin product). They took ~60% of an MLP's -O2 time, for code that measured no
# faster than GLUE's (runtime/jit.py), which they get (issue 12), as do the parts outlined
# from them (an epilogue on the pool). One that also holds a reassociable fold (``reassoc``,
# there only for the vectoriser: the dot products of a few rows against a transposed B) keeps
# -O<n>.
_LIBRARY = '@"' + gemmlib.PREFIX.decode()       # a call of the GEMM library in IR text
_FOLD = " reassoc "


def pipeline_of(text: str, opt_level: int) -> Pipeline:
    """The pipeline of a function, given its LLVM IR text."""
    if opt_level > 0 and _LIBRARY in text and _FOLD not in text:
        return GLUE
    return opt_level


def split_by_pipeline(module: ll.Module, opt_level: int) -> list[tuple[str, Pipeline]]:
    """``module`` as one module text per pipeline its functions get (``pipeline_of``; a part
    outlined from a GLUE kernel is GLUE too, unless it folds), -O<n> first. Each text has all
    of the module's globals and metadata (either pipeline drops an unused internal constant)
    and declares the functions other texts define; an internal function (a pool task) is
    defined in each text whose functions use it."""
    bodies: dict[str, str] = {}
    internal: set[str] = set()
    others: list[str] = []
    for g in module.globals.values():
        if isinstance(g, ll.Function) and g.blocks:
            bodies[g.name] = str(g)
            if g.linkage == "internal":
                internal.add(g.name)
        else:
            others.append(str(g))
    where: dict[str, set[Pipeline]] = {}
    for name, text in bodies.items():
        if name not in internal:
            # a part outlined from a kernel (``Kernel.outline``: its name, a dot, the part's)
            # is glue as that kernel is, unless it folds for the vectoriser
            parent = name.rpartition(".")[0]
            while parent and parent not in where:
                parent = parent.rpartition(".")[0]
            glue = parent and where[parent] == {GLUE} and opt_level > 0 and _FOLD not in text
            where[name] = {GLUE} if glue else {pipeline_of(text, opt_level)}
    for name in internal:
        ref = f'@"{name}"'
        where[name] = {p for n, t in bodies.items() if n not in internal and ref in t
                       for p in where[n]} or {opt_level}
    kinds = sorted(set().union(*where.values()) if where else {opt_level},
                   key=lambda p: (isinstance(p, str), str(p)))
    head = [f'; ModuleID = "{module.name}"', f'target triple = "{module.triple}"',
            f'target datalayout = "{module.data_layout}"', ""] + others
    meta = module._get_metadata_lines()
    out = []
    for kind in kinds:
        lines = list(head)
        for name, text in bodies.items():
            if kind in where[name]:
                lines.append(text)
            elif name not in internal:
                lines.append(_declaration(module.globals[name]))
        out.append(("\n".join(lines + meta), kind))
    return out


def _declaration(fn: ll.Function) -> str:
    """``fn``'s prototype as a declaration (its body is in another module)."""
    blocks = fn.blocks
    fn.blocks = []
    try:
        buf: list[str] = []
        fn.descr_prototype(buf)
        return "".join(buf)
    finally:
        fn.blocks = blocks
