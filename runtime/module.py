"""``compile_module``: plan each Func, then per Func either load its object code from the disk
cache or build LLVM IR, optimise and emit it (counted in ``stats``), and link it into the JIT.
Inspection (``llvm_ir``, ``asm``, ``object_code``) rebuilds what it needs on demand."""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import llvmlite
import numpy as np

from graphc.ir import slots
from graphc.ir.core import Func
from graphc.ir.errors import GraphCallError
from graphc.ir.ops.registry import suggest
from graphc.runtime import call, jit
from graphc.runtime.arena import Arena
from graphc.runtime.codegen import ENTRY, build_module
from graphc.runtime.plan import Plan, make_plan

_VERSION_CACHE: list[str] = []


def graphc_version() -> str:
    """The package version plus a hash of the sources that shape generated code (this backend,
    the op table's lowerings, the slot allocator), so editing one never reuses stale objects."""
    if not _VERSION_CACHE:
        ir_dir = Path(slots.__file__).parent
        h = hashlib.sha256()
        files = [p for folder in (Path(__file__).parent, ir_dir / "ops")
                 for p in sorted(folder.glob("*.py"))] + [ir_dir / "slots.py"]
        for p in files:
            h.update(p.read_bytes())
        try:
            from importlib.metadata import version
            v = version("graphc")
        except Exception:   # not installed: the source hash alone identifies the code
            v = "dev"
        _VERSION_CACHE.append(f"{v}+{h.hexdigest()[:16]}")
    return _VERSION_CACHE[0]


def func_text(func: Func) -> str:
    """Canonical text of a Func for the cache key: the IR printer's output plus a structural
    dump with exact attribute reprs (so a printer that rounds cannot alias two programs)."""
    try:
        from graphc.ir.text import print_func
        printed = print_func(func)
    except ImportError:
        printed = ""
    ids: dict[int, int] = {}
    lines = [func.name, repr(func.result_names)]
    for k, v in enumerate(func.values()):
        ids[id(v)] = k
        lines.append(f"{v.op}({','.join(str(ids[id(i)]) for i in v.inputs)}) "
                     f"{v.attrs.items!r} {v.type}")
    lines.append("ret " + ",".join(str(ids[id(r)]) for r in func.results))
    return printed + "\n" + "\n".join(lines)


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
    stats: dict[str, int] = field(default_factory=lambda: {"llvm_compiles": 0, "cache_hits": 0})
    arena: Arena = field(default_factory=Arena)         # one block of memory per thread
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
        return call.run(e.plan, e.native, list(args.values()), env, targets, self.arena)

    def release_memory(self) -> None:
        """Free every thread's workspace now (a busy one when its call ends)."""
        self.arena.release()

    def _ir_text(self, name: str) -> str:
        e = self.entry(name)
        return str(build_module(e.plan, self.check_numerics, debug=self.debug, details=True))

    def llvm_ir(self, name: str, optimized: bool = True) -> str:
        text = self._ir_text(name)
        return jit.optimized_ir(text, self.opt_level) if optimized else text

    def asm(self, name: str) -> str:
        return jit.assembly(self._ir_text(name), self.opt_level)

    def object_code(self, name: str | None = None) -> bytes:
        """The object file of one entry point (default: the first)."""
        return self.entry(name or next(iter(self.entries))).obj


def compile_module(funcs: Mapping[str, Func], *, opt_level: int = 2, cache: bool = True,
                   check_numerics: bool = False, fuse: bool = True,
                   debug: bool | None = None) -> CompiledModule:
    """``fuse=False`` runs one kernel per op (kernels of the fusion pass taken apart): the
    baseline that fusion is measured against, and what check_numerics needs."""
    if debug is None:           # GRAPHC_DEBUG=1 makes every build a debug build (CI runs so)
        debug = os.environ.get("GRAPHC_DEBUG", "") not in ("", "0")
    mod = CompiledModule({}, opt_level, check_numerics, debug)
    host = jit.host_id()
    fuse = fuse and not check_numerics
    store = jit.open_cache() if cache else None     # None (one GraphWarning) without a home
    for name, func in funcs.items():
        plan = make_plan(func, fuse=fuse)
        key = jit.cache_key(func_text(func), f"O{opt_level}", f"numerics={check_numerics}",
                            f"fuse={fuse}", f"debug={debug}", graphc_version(),
                            llvmlite.__version__, host)
        e = Entry(func, plan, key)
        obj = store.get(key) if store is not None else None
        if obj is not None:
            mod.stats["cache_hits"] += 1
        else:
            text = str(build_module(plan, check_numerics, debug=debug, details=True))
            obj = jit.compile_object(text, opt_level)
            mod.stats["llvm_compiles"] += 1
            if store is not None:
                store.put(key, obj)
        e.obj = obj
        e.loaded = jit.link(obj, [ENTRY])
        e.address = e.loaded.addresses[ENTRY]
        e.native = call.ENTRY_TYPE(e.address)
        mod.entries[name] = e
    return mod
