"""LLVM for the host CPU: target machine with the CPU's features, the new pass manager's O<n>
pipeline, an ORC LLJIT that links object code, and an on-disk object cache with checksums so a
second process (or a second compile) skips LLVM entirely."""
from __future__ import annotations

import hashlib
import itertools
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llvmlite
import llvmlite.binding as llvm

_LOCK = threading.RLock()
_STATE: dict[str, Any] = {}
_NAMES = itertools.count()
_MAGIC = b"GRAPHC-OBJ-1\n"


def _init() -> None:
    if "lljit" in _STATE:
        return
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    _STATE["cpu"] = llvm.get_host_cpu_name()
    _STATE["features"] = llvm.get_host_cpu_features().flatten()
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
    """Everything about this machine and toolchain that changes the object code."""
    with _LOCK:
        _init()
    return "|".join([_STATE["triple"], _STATE["cpu"], _STATE["features"], llvmlite.__version__,
                     ".".join(map(str, llvm.llvm_version_info))])


def optimize(text: str, opt_level: int) -> tuple[llvm.ModuleRef, llvm.TargetMachine]:
    """Parse and verify LLVM IR text, then run the O<opt_level> pipeline on it."""
    with _LOCK:
        _init()
    tm = target_machine(opt_level)
    mod = llvm.parse_assembly(text)
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    mod.verify()
    if opt_level > 0:
        pto = llvm.create_pipeline_tuning_options(speed_level=min(opt_level, 3))
        pto.loop_vectorization = pto.slp_vectorization = True
        pto.loop_unrolling = opt_level >= 2
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(mod, pb)
    return mod, tm


def compile_object(text: str, opt_level: int) -> bytes:
    mod, tm = optimize(text, opt_level)
    return tm.emit_object(mod)


def assembly(text: str, opt_level: int) -> str:
    mod, tm = optimize(text, opt_level)
    return tm.emit_assembly(mod)


def optimized_ir(text: str, opt_level: int) -> str:
    return str(optimize(text, opt_level)[0])


@dataclass
class Loaded:
    """Linked object code; the code is unloaded when this is garbage-collected."""
    tracker: Any
    addresses: dict[str, int] = field(default_factory=dict)


def link(obj: bytes, symbols: list[str]) -> Loaded:
    """Link an object file into the process-wide LLJIT and look up ``symbols``."""
    with _LOCK:
        _init()
        builder = llvm.JITLibraryBuilder().add_object_img(obj).add_current_process()
        for s in symbols:
            builder.export_symbol(s)
        tracker = builder.link(_STATE["lljit"], f"graphc_lib{next(_NAMES)}")
        return Loaded(tracker, {s: tracker[s] for s in symbols})


# -- the object cache ------------------------------------------------------------------------
def cache_dir() -> Path:
    env = os.environ.get("GRAPHC_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "graphc" if xdg else Path.home() / ".cache" / "graphc"


def cache_key(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


def cache_get(key: str) -> bytes | None:
    """The cached object for ``key``, or None when absent, truncated or corrupt."""
    path = cache_dir() / key[:2] / f"{key}.o"
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    head = len(_MAGIC) + 32
    if len(blob) < head or not blob.startswith(_MAGIC):
        return None
    payload = blob[head:]
    if hashlib.sha256(payload).digest() != blob[len(_MAGIC):head]:
        return None
    return payload


def cache_put(key: str, obj: bytes) -> None:
    """Write atomically (temp file + rename); a cache that cannot be written is skipped."""
    d = cache_dir() / key[:2]
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(_MAGIC + hashlib.sha256(obj).digest() + obj)
        os.replace(tmp, d / f"{key}.o")
    except OSError:
        pass
