"""LLVM for the host CPU: target machine with the CPU's features, the new pass manager's O<n>
pipeline, and linking of object code (runtime/objload.py places graphc's own objects; an ORC
LLJIT links anything it cannot). The on-disk object cache that lets a second process (or a
second compile) skip LLVM is runtime/cache.py, re-exported here. LLVM itself (libllvmlite,
~50 MiB resident) is loaded on first use: a process whose objects all come from the cache and
whose host id is on record never loads it."""
from __future__ import annotations

import hashlib
import itertools
import os
import platform
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import llvmlite

from graphc.runtime import objload
from graphc.runtime.cache import (  # noqa: F401
    ObjectCache,
    cache_dir,
    cache_get,
    cache_key,
    cache_put,
    graphc_version,
    open_cache,
)
from graphc.runtime.stats import CompileStats


class _LazyLLVM:
    """``llvmlite.binding``, imported on first use (importing it loads libllvmlite)."""

    def __getattr__(self, name: str) -> Any:
        import llvmlite.binding as binding
        return getattr(binding, name)


llvm: Any = _LazyLLVM()
GLUE = "glue"       # the pipeline of code around library calls (``optimize``)
Pipeline = int | str    # an -O level, or GLUE
# GLUE's passes: scalar cleanup only (no loop passes, no vectoriser), ~8x cheaper than -O2 on
# a matmul kernel; the target machine still selects instructions at -O2
GLUE_PASSES = ("sroa", "instruction_combine", "simplify_cfg", "sccp", "dead_code_elimination",
               "global_dead_code_eliminate")
_LOCK = threading.RLock()
_STATE: dict[str, Any] = {}
_NAMES = itertools.count()


def _init() -> None:
    if "lljit" in _STATE:
        return
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    _STATE["cpu"] = llvm.get_host_cpu_name()
    features = llvm.get_host_cpu_features().flatten()
    # LLVM's tuning for AVX-512 CPUs caps the loop vectoriser at 256 bits; full width runs the
    # transcendental kernels 1.3-1.4x faster (host_id, and so every cache key, includes this)
    _STATE["features"] = features + (",-prefer-256-bit" if "+avx512f" in features else "")
    _STATE["triple"] = llvm.get_process_triple()
    _STATE["lljit"] = llvm.create_lljit_compiler(target_machine(2))


def target_machine(opt_level: int) -> llvm.TargetMachine:
    """A fresh target machine for this CPU (LLJIT copies its settings; nothing owns it)."""
    if "cpu" not in _STATE:
        _init()
    target = llvm.Target.from_triple(_STATE["triple"])
    return target.create_target_machine(cpu=_STATE["cpu"], features=_STATE["features"],
                                        opt=min(max(opt_level, 0), 3), jit=True)


def host_id() -> str:
    """Everything about this machine and toolchain that changes the object code. Asking LLVM
    loads it, so the answer is kept in the cache under a fingerprint of the CPU (its model and
    feature flags as the kernel reports them) and of llvmlite's version (which fixes LLVM's)."""
    with _LOCK:
        if "host_id" in _STATE:
            return _STATE["host_id"]
        fingerprint = _cpu_fingerprint()
        key = cache_key("host-id", fingerprint) if fingerprint else None
        known = cache_get(key) if key else None
        if known is None:
            _init()
            known = "|".join([_STATE["triple"], _STATE["cpu"], _STATE["features"],
                              llvmlite.__version__,
                              ".".join(map(str, llvm.llvm_version_info))]).encode()
            if key:
                cache_put(key, known)
        _STATE["host_id"] = known.decode()
        return _STATE["host_id"]


def _cpu_fingerprint() -> str | None:
    """This CPU and toolchain as Linux describes them without LLVM, or None elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = {}
            for line in f:
                name, _, value = line.partition(":")
                name = name.strip()
                if name in ("vendor_id", "model name", "flags", "Features", "CPU part") \
                        and name not in lines:
                    lines[name] = value.strip()
    except OSError:
        return None
    if not lines:
        return None
    text = "|".join([platform.machine(), llvmlite.__version__]
                    + [f"{k}={v}" for k, v in sorted(lines.items())])
    return hashlib.sha256(text.encode()).hexdigest()


def optimize(text: str, opt_level: Pipeline, stats: CompileStats | None = None
             ) -> tuple[llvm.ModuleRef, llvm.TargetMachine]:
    """Parse and verify LLVM IR text, then run the O<opt_level> pipeline (or GLUE's passes) on
    it. The module gets an LLVM context of its own, freed with it: the global context keeps
    every constant and metadata node ever made (~17 KB per compile), and two threads must not
    share a context."""
    with _LOCK:
        _init()
    stats = stats if stats is not None else CompileStats()
    glue = opt_level == GLUE
    level = 2 if glue else int(opt_level)
    with stats.phase("llvm parse"):
        tm = target_machine(level)
        mod = llvm.parse_assembly(text, context=llvm.create_context())   # it keeps it alive
        mod.triple = tm.triple
        mod.data_layout = str(tm.target_data)
        mod.verify()
    if level > 0:
        start = time.perf_counter()
        pto = llvm.create_pipeline_tuning_options(speed_level=min(level, 3))
        pto.loop_vectorization = pto.slp_vectorization = True
        # loop unrolling costs about a third of LLVM's time. It is what the GEMM library's
        # macro-kernels need (without it the MLP ran 25% slower), and that library is
        # compiled at O3; a model's kernels, whose loops the code generator vectorises itself,
        # measured no faster with it at -O2 (issue 12), so only -O3 unrolls them
        pto.loop_unrolling = level >= 3
        pb = llvm.create_pass_builder(tm, pto)
        if glue:
            mpm = llvm.create_new_module_pass_manager()
            for name in GLUE_PASSES:
                getattr(mpm, f"add_{name}_pass")()
        else:
            mpm = pb.getModulePassManager()
        try:
            mpm.run(mod, pb)
        finally:
            _close_pass_manager(mpm)
            pb.close()
            pto.close()
        stats.add("llvm opt", time.perf_counter() - start)
    return mod, tm


def _close_pass_manager(mpm: Any) -> None:
    """Free a pipeline. ``mpm.close()`` alone does not: in llvmlite's ModulePassManager (0.50)
    ObjectRef's empty ``_dispose`` comes before NewPassManager's in the MRO. Never freed, each
    pipeline kept its passes' scratch tables, sized by the module: ~0.5 MB lost per compile."""
    if type(mpm)._dispose is llvm.ffi.ObjectRef._dispose:
        llvm.NewPassManager._dispose(mpm)
        mpm.detach()                     # so that close() and __del__ do not free it again
    else:
        mpm.close()


def _release(mod: llvm.ModuleRef, tm: llvm.TargetMachine) -> None:
    """Free ``optimize``'s module, then its context, then the target machine, now."""
    ctx = mod._context
    mod.close()
    ctx.close()
    tm.close()


def compile_object(text: str, opt_level: Pipeline, stats: CompileStats | None = None) -> bytes:
    mod, tm = optimize(text, opt_level, stats)
    try:
        start = time.perf_counter()
        obj = tm.emit_object(mod)
        if stats is not None:
            stats.add("machine code", time.perf_counter() - start)
        return obj
    finally:
        _release(mod, tm)


def compile_objects(parts: list[tuple[str, Pipeline]], stats: CompileStats | None = None
                    ) -> bytes:
    """Compile modules (LLVM IR text, opt level or GLUE) into one blob for ``link``. One after the
    other: llvmlite serialises every call into LLVM behind one lock, so threads gain nothing."""
    return pack([compile_object(text, opt, stats) for text, opt in parts])


MAGIC = b"GRAPHC-OBJS\n"


def pack(objs: list[bytes]) -> bytes:
    """Object files as one blob (what the disk cache stores): MAGIC, then each one's length
    (8 bytes, little-endian) and bytes."""
    return MAGIC + b"".join(len(o).to_bytes(8, "little") + o for o in objs)


def unpack(blob: bytes) -> list[bytes]:
    """``pack``'s object files; a blob without MAGIC is a single object file."""
    if not blob.startswith(MAGIC):
        return [blob]
    out, at = [], len(MAGIC)
    while at < len(blob):
        n = int.from_bytes(blob[at:at + 8], "little")
        if n <= 0 or at + 8 + n > len(blob):
            raise ValueError("a truncated object blob")
        out.append(blob[at + 8:at + 8 + n])
        at += 8 + n
    return out


def asm_comment() -> str:
    """The line-comment marker of this CPU's assembly syntax (``#`` on x86, ``//`` on AArch64)."""
    with _LOCK:
        _init()
    return "//" if _STATE["triple"].startswith(("aarch64", "arm64")) else "#"


def assembly(text: str, opt_level: int) -> str:
    mod, tm = optimize(text, opt_level)
    try:
        return tm.emit_assembly(mod)
    finally:
        _release(mod, tm)


def optimized_ir(text: str, opt_level: int) -> str:
    return str(optimize(text, opt_level)[0])


@dataclass
class Loaded:
    """Linked object code; the code is unloaded when this is garbage-collected."""
    tracker: Any
    addresses: dict[str, int] = field(default_factory=dict)


def cached_object(name: str, make_ir: Callable[[], str], opt_level: int = 2) -> bytes:
    """The object code of one of the runtime's own parts (its LLVM IR from ``make_ir``), from
    the disk cache when it is there (keyed by ``name``, graphc's sources and the host), else
    compiled and stored, so that a process that finds it never loads LLVM."""
    key = cache_key("runtime-object", name, graphc_version(), host_id())
    store = open_cache(quiet=True)
    obj = store.get(key) if store is not None else None
    if obj is None:
        obj = compile_object(make_ir(), opt_level)
        if store is not None:
            store.put(key, obj)
    return bytes(obj)


def link(obj: bytes, symbols: list[str], imports: Mapping[str, int] | None = None
         ) -> Loaded | objload.Loaded:
    """Link an object file, or ``pack``'s blob of them, and look up ``symbols``; ``imports``
    resolves names the code calls that the process does not export (the worker pool's entry
    points, the GEMM library). graphc's own loader places what it can without LLVM;
    GRAPHC_LOADER=llvm, or an object it does not handle, links in the process-wide LLJIT."""
    if os.environ.get("GRAPHC_LOADER", "") != "llvm" and objload.supported():
        try:
            return objload.load(unpack(obj), symbols, imports)
        except objload.Unsupported:
            pass
    return _link_llvm(obj, symbols, imports)


def _link_llvm(obj: bytes, symbols: list[str], imports: Mapping[str, int] | None = None
               ) -> Loaded:
    with _LOCK:
        _init()
        builder = llvm.JITLibraryBuilder()
        for o in unpack(obj):
            builder.add_object_img(o)
        builder.add_current_process()
        for name, address in (imports or {}).items():
            builder.import_symbol(name, address)
        for s in symbols:
            builder.export_symbol(s)
        tracker = builder.link(_STATE["lljit"], f"graphc_lib{next(_NAMES)}")
        return Loaded(tracker, {s: tracker[s] for s in symbols})
