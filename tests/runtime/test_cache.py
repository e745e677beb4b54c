"""The on-disk object cache: a second process compiling the same functions skips LLVM; options
change the key; a corrupt or truncated entry is detected by its checksum and recompiled (abuse
of every other kind: test_cache_robust.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from graphc.ir.core import Func, make
from graphc.ir.errors import GraphWarning
from graphc.ir.types import Dim, DType
from graphc.runtime import compile_module, jit, pool

N = Dim.sym("N")

PROGRAM = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from graphc.ir.core import Func, make
    from graphc.ir.types import Dim, DType
    from graphc.runtime import compile_module
    x = make("arg", name="x", dtype=DType.f32, shape=(Dim.sym("N"), 8))
    w = make("arg", name="w", dtype=DType.f32, shape=(8, 4))
    y = make("tanh", x @ w)
    f = Func("f", (x, w), (make("sum", make("exp", y), axis=(1,), keepdims=False), y))
    t = time.perf_counter()
    mod = compile_module({"f": f, "g": Func("g", (x,), (make("log1p", x * x),))})
    dt = time.perf_counter() - t
    out = mod.call("f", {"x": np.ones((3, 8), np.float32), "w": np.ones((8, 4), np.float32)})
    print(json.dumps(dict(mod.stats, seconds=dt, value=float(out[0][0]))))
""")


def run_process(cache: Path) -> dict:
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(cache))
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", PROGRAM], env=env, cwd=root, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_second_process_skips_llvm(tmp_path: Path) -> None:
    first = run_process(tmp_path)
    second = run_process(tmp_path)
    assert (first["llvm_compiles"], first["cache_hits"]) == (2, 0)
    assert (second["llvm_compiles"], second["cache_hits"]) == (0, 2)
    assert second["value"] == first["value"] == pytest.approx(4 * np.exp(np.tanh(8.0)))


def func() -> Func:
    x = make("arg", name="x", dtype=DType.f64, shape=(N,))
    return Func("f", (x,), (make("sin", x) + 1.0,))


@pytest.fixture(autouse=True)
def _pool_loaded() -> None:
    """The worker pool's code goes to the cache of the process's first use: load it before
    a test points GRAPHC_CACHE_DIR at its own directory and counts the entries there."""
    pool.POOL.symbols(1)


def entries(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*.o"))


def test_options_change_the_key_and_cache_false_bypasses(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    assert compile_module({"f": func()}).stats["llvm_compiles"] == 1
    assert compile_module({"f": func()}).stats["cache_hits"] == 1
    assert compile_module({"f": func()}, opt_level=1).stats["llvm_compiles"] == 1
    assert compile_module({"f": func()}, check_numerics=True).stats["llvm_compiles"] == 1
    assert len(entries(tmp_path)) == 3
    assert compile_module({"f": func()}, cache=False).stats == {"llvm_compiles": 1,
                                                               "cache_hits": 0}


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_corrupt_entry_is_recompiled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     damage: str) -> None:
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    compile_module({"f": func()})
    (path,) = entries(tmp_path)
    blob = path.read_bytes()
    if damage == "truncate":
        blob = blob[:len(blob) // 2]
    elif damage == "flip":
        blob = blob[:-100] + bytes([blob[-100] ^ 0xFF]) + blob[-99:]
    elif damage == "empty":
        blob = b""
    else:
        blob = os.urandom(len(blob))
    path.write_bytes(blob)
    mod = compile_module({"f": func()})
    assert mod.stats == {"llvm_compiles": 1, "cache_hits": 0}
    x = np.linspace(-3, 3, 7)
    np.testing.assert_allclose(mod.call("f", {"x": x})[0], np.sin(x) + 1, rtol=1e-15)
    assert jit.cache_get(path.stem) is not None          # rewritten whole


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRAPHC_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/some/where")
    assert jit.cache_dir() == Path("/some/where/graphc")
    monkeypatch.setenv("HOME", "/home/u")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")      # the XDG spec: ignored
    assert jit.cache_dir() == Path("/home/u/.cache/graphc")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert jit.cache_dir() == Path("/home/u/.cache/graphc")


def test_unwritable_cache_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(blocker / "cache"))
    with pytest.warns(GraphWarning, match="cannot be written") as said:   # (it was silent)
        mod = compile_module({"f": func()})
        compile_module({"f": func()})
    assert len([w for w in said if "cannot be written" in str(w.message)]) == 1   # once
    assert mod.call("f", {"x": np.zeros(2)})[0].tolist() == [1.0, 1.0]
