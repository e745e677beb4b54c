"""graphc's own object loader (runtime/objload.py): a process that finds everything in the disk
cache runs without loading LLVM, gets the same numbers as code linked by LLVM, and anything
the loader does not handle falls back to LLVM's linker instead of running wrongly."""
from __future__ import annotations

import gc
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc.runtime import jit, objload

pytestmark = pytest.mark.skipif(not objload.supported(), reason="the loader is x86-64 Linux only")

SRC = """graph g {
    input x: f32[N, 20]
    param W: f32[20, 7]
    param b: f32[7]
    h = tanh(x @ W + b)
    loss = sum(h * h) / 3.0
    output loss
    grad loss
}"""

# a fresh process: compile (a cache hit when the cache is warm), run, report what it loaded
CHILD = """
import json, sys
import numpy as np
import graphc
m = graphc.compile_source(sys.argv[1], num_threads=2)
rng = np.random.default_rng(0)
p = {"W": rng.standard_normal((20, 7)).astype(np.float32),
     "b": rng.standard_normal(7).astype(np.float32)}
x = rng.standard_normal((33, 20)).astype(np.float32)
vals, grads = m.value_and_grad(x=x, **p)
print(json.dumps({"llvm": "llvmlite.binding" in sys.modules,
                  "loss": float(vals["loss"]), "gW": grads["W"].tolist()}))
"""


def _child(cache: Path, **env: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, SRC], capture_output=True, text=True,
                         env=dict(os.environ, GRAPHC_CACHE_DIR=str(cache), **env), check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_process_that_hits_the_cache_never_loads_llvm(tmp_path: Path) -> None:
    """The first process compiles (LLVM); the second finds the model, the GEMM library, the
    worker pool, the call trampoline and the host id in the cache and loads none of LLVM;
    a third forced onto LLVM's linker gets the same bits."""
    cold = _child(tmp_path)
    warm = _child(tmp_path)
    forced = _child(tmp_path, GRAPHC_LOADER="llvm")
    assert cold["llvm"] and not warm["llvm"] and forced["llvm"]
    assert warm["loss"] == cold["loss"] == forced["loss"]
    assert warm["gW"] == cold["gW"] == forced["gW"]


def test_loaded_code_matches_the_interpreter_and_is_unmapped_when_dropped() -> None:
    model = graphc.compile_source(SRC, cache=False)
    ref = graphc.compile_source(SRC, backend="interp")
    rng = np.random.default_rng(1)
    args = dict(x=rng.standard_normal((5, 20)).astype(np.float32),
                W=rng.standard_normal((20, 7)).astype(np.float32),
                b=rng.standard_normal(7).astype(np.float32))
    np.testing.assert_allclose(model(**args)["loss"], ref(**args)["loss"], rtol=2e-5)
    obj = jit.compile_object(_ADD_IR, 2)
    loaded = objload.load([obj], ["graphc_test_add"])
    address = loaded.addresses["graphc_test_add"]
    assert _mapped(address)
    del loaded
    gc.collect()
    assert not _mapped(address)


_ADD_IR = """
@counter = internal global i64 0
define i64 @graphc_test_add(i64 %x) {
  %c = load i64, ptr @counter
  %c1 = add i64 %c, 1
  store i64 %c1, ptr @counter
  %r = add i64 %x, %c1
  ret i64 %r
}
"""


def _mapped(address: int) -> bool:
    for line in Path("/proc/self/maps").read_text().splitlines():
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        if lo <= address < hi:
            return True
    return False


def test_writable_globals_keep_their_state_between_calls() -> None:
    import ctypes
    loaded = objload.load([jit.compile_object(_ADD_IR, 2)], ["graphc_test_add"])
    fn = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(loaded.addresses["graphc_test_add"])
    assert [fn(10), fn(10), fn(100)] == [11, 12, 103]


def _relocation_types(obj: bytes) -> set[int]:
    shoff, = struct.unpack_from("<Q", obj, 0x28)
    size, count = struct.unpack_from("<HH", obj, 0x3A)
    kinds = set()
    for i in range(count):
        _, typ, _, _, off, n, _, _, _, ent = struct.unpack_from("<IIQQQQIIQQ", obj,
                                                                shoff + i * size)
        if typ == 4:
            kinds |= {struct.unpack_from("<Q", obj, off + j * ent + 8)[0] & 0xFFFFFFFF
                      for j in range(n // ent)}
    return kinds


def test_what_the_loader_cannot_place_is_linked_by_llvm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not an ELF object, another machine, or a relocation type it does not know: Unsupported
    (nothing placed), and ``jit.link`` hands the object to LLVM, whose code runs."""
    import ctypes
    obj = jit.compile_object(_ADD_IR, 2)
    assert _relocation_types(obj) <= {1}          # what the JIT's large code model emits
    with pytest.raises(objload.Unsupported):
        objload.load([b"not an object"], ["graphc_test_add"])
    arm = bytearray(obj)
    arm[18:20] = (183).to_bytes(2, "little")       # e_machine = AArch64
    with pytest.raises(objload.Unsupported):
        objload.load([bytes(arm)], ["graphc_test_add"])
    with pytest.raises(objload.Unsupported):
        objload.load([obj], ["graphc_no_such_symbol"])
    strange = _with_relocation_type(obj, 2)         # R_X86_64_PC32
    with pytest.raises(objload.Unsupported):
        objload.load([strange], ["graphc_test_add"])
    assert isinstance(jit.link(jit.pack([obj]), ["graphc_test_add"]), objload.Loaded)

    def refuse(*args: object) -> None:
        raise objload.Unsupported("planted")
    monkeypatch.setattr(objload, "load", refuse)
    linked = jit.link(jit.pack([obj]), ["graphc_test_add"])
    assert not isinstance(linked, objload.Loaded)
    fn = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(linked.addresses["graphc_test_add"])
    assert fn(1) == 2


def _with_relocation_type(obj: bytes, kind: int) -> bytes:
    out = bytearray(obj)
    shoff, = struct.unpack_from("<Q", obj, 0x28)
    size, count = struct.unpack_from("<HH", obj, 0x3A)
    for i in range(count):
        _, typ, _, _, off, n, _, _, _, ent = struct.unpack_from("<IIQQQQIIQQ", obj,
                                                                shoff + i * size)
        if typ == 4 and n:
            info, = struct.unpack_from("<Q", obj, off + 8)
            struct.pack_into("<Q", out, off + 8, (info & ~0xFFFFFFFF) | kind)
            return bytes(out)
    raise AssertionError("the object has no relocations")


def test_forcing_llvm_links_with_llvm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPHC_LOADER", "llvm")
    linked = jit.link(jit.compile_object(_ADD_IR, 2), ["graphc_test_add"])
    assert not isinstance(linked, objload.Loaded) and linked.addresses["graphc_test_add"]


def test_perf_map_names_the_functions_it_placed(monkeypatch: pytest.MonkeyPatch) -> None:
    """GRAPHC_PERF_MAP=1 writes /tmp/perf-<pid>.map, where perf finds JIT code's names."""
    path = Path(f"/tmp/perf-{os.getpid()}.map")
    before = path.read_text() if path.exists() else ""
    monkeypatch.setenv("GRAPHC_PERF_MAP", "1")
    loaded = objload.load([jit.compile_object(_ADD_IR, 2)], ["graphc_test_add"])
    new = path.read_text()[len(before):].splitlines()
    address = loaded.addresses["graphc_test_add"]
    assert any(line.split()[0] == f"{address:x}" and line.split()[2] == "graphc_test_add"
               and int(line.split()[1], 16) > 0 for line in new)
