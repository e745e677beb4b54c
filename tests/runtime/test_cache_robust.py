"""The object cache under abuse (issue 9): an entry is only ever used for the key it was written
for, and nothing found at an entry's path (truncated, garbled, swapped, another format version,
a FIFO, a symlink to /dev/zero, a directory, an unreadable file, a read-only directory) makes a
compile hang, crash or compute the wrong thing: it is a miss, and the compile goes on."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from graphc.ir.core import Func, make
from graphc.ir.errors import GraphWarning
from graphc.ir.types import Dim, DType
from graphc.runtime import cache, compile_module, pool

ROOT = Path(__file__).resolve().parents[2]
N = Dim.sym("N")
X = np.linspace(-3, 3, 7)


def funcs() -> dict[str, Func]:
    """Three functions with one signature, so any one's object code links under another's key."""
    x = make("arg", name="x", dtype=DType.f64, shape=(N,))
    return {"s": Func("s", (x,), (make("sin", x) + 1.0,)),
            "c": Func("c", (x,), (make("cos", x) + 2.0,)),
            "t": Func("t", (x,), (make("tanh", x) * 3.0,))}


WANT = {"s": np.sin(X) + 1.0, "c": np.cos(X) + 2.0, "t": np.tanh(X) * 3.0}


def check(mod: object) -> None:
    for name, want in WANT.items():
        np.testing.assert_allclose(mod.call(name, {"x": X})[0], want, rtol=1e-14)  # type: ignore


@pytest.fixture(autouse=True)
def _pool_loaded() -> None:
    """The worker pool's code goes to the cache of the process's first use: load it before
    a test counts entries or warnings of its own cache directory."""
    pool.POOL.symbols(1)


def entries(root: Path) -> dict[str, Path]:
    """The entry of each function of ``funcs()`` after a compile into ``root``, by name."""
    mod = compile_module(funcs())
    return {name: root / e.key[:2] / f"{e.key}.o" for name, e in mod.entries.items()}


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GRAPHC_CACHE_MAX_MB", raising=False)
    return tmp_path


def test_swapped_entries_are_misses_not_wrong_code(root: Path) -> None:
    paths = entries(root)
    blobs = {name: p.read_bytes() for name, p in paths.items()}
    paths["s"].write_bytes(blobs["c"])          # c's bytes under s's name, and so on round
    paths["c"].write_bytes(blobs["t"])
    paths["t"].write_bytes(blobs["s"])
    mod = compile_module(funcs())
    assert mod.stats == {"llvm_compiles": 3, "cache_hits": 0}
    check(mod)
    assert {n: p.read_bytes() for n, p in paths.items()} == blobs      # each rewritten as its own
    assert compile_module(funcs()).stats == {"llvm_compiles": 0, "cache_hits": 3}


def test_another_format_version_is_a_miss_and_is_overwritten(root: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cache, "FORMAT", cache.FORMAT + 1)             # written by a newer graphc
        paths = entries(root)
    newer = paths["s"].read_bytes()
    mod = compile_module(funcs())
    assert mod.stats == {"llvm_compiles": 3, "cache_hits": 0}
    check(mod)
    assert paths["s"].read_bytes() != newer
    assert compile_module(funcs()).stats["cache_hits"] == 3


@pytest.mark.parametrize("damage", ["truncate-header", "truncate-object", "flip-key", "append"])
def test_damaged_entries_are_misses(root: Path, damage: str) -> None:
    path = entries(root)["c"]
    blob = path.read_bytes()
    blob = {"truncate-header": blob[:20], "truncate-object": blob[:-1],
            "flip-key": blob[:20] + bytes([blob[20] ^ 1]) + blob[21:],
            "append": blob + b"\0"}[damage]
    path.write_bytes(blob)
    mod = compile_module(funcs())
    assert mod.stats == {"llvm_compiles": 1, "cache_hits": 2}
    check(mod)


CHILD = textwrap.dedent("""
    import json, sys
    from tests.runtime.test_cache_robust import WANT, X, check, funcs
    from graphc.runtime import compile_module
    mod = compile_module(funcs())
    check(mod)
    print(json.dumps(mod.stats))
""")


def compile_in_child(root: Path, timeout: float = 120) -> dict[str, int]:
    """Compile ``funcs()`` in a fresh process with at most 4 GiB of memory, so that a cache read
    which blocks or never ends fails this test instead of hanging or exhausting the machine."""
    def limit() -> None:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(root))
    try:
        done = subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=ROOT, timeout=timeout,
                              capture_output=True, text=True, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        pytest.fail(f"compiling with this cache did not finish in {timeout} s")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and /dev/zero")
def test_non_regular_entries_are_misses_without_blocking(root: Path) -> None:
    paths = entries(root)
    paths["s"].unlink()
    os.mkfifo(paths["s"])                       # reading this blocks until a writer comes
    paths["c"].unlink()
    paths["c"].symlink_to("/dev/zero")          # reading this never ends
    paths["t"].unlink()
    paths["t"].mkdir()                          # cannot be replaced by a file either
    (paths["t"] / "x").write_text("")
    assert compile_in_child(root) == {"llvm_compiles": 3, "cache_hits": 0}
    assert paths["s"].is_file() and not paths["c"].is_symlink()      # overwritten by the put
    assert paths["t"].is_dir()
    assert not list(root.rglob("*.tmp")), "a failed rename left its temp file"


def test_symlink_to_a_valid_entry_is_not_followed(root: Path) -> None:
    paths = entries(root)
    real = root / "elsewhere.o"
    paths["s"].rename(real)
    paths["s"].symlink_to(real)
    assert compile_module(funcs()).stats == {"llvm_compiles": 1, "cache_hits": 2}


def test_oversized_entry_is_a_miss(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = entries(root)
    monkeypatch.setattr(cache, "MAX_ENTRY_BYTES", min(p.stat().st_size for p in paths.values()) - 1)
    assert compile_module(funcs()).stats["llvm_compiles"] == 3


def test_unreadable_entry_is_a_miss(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = entries(root)["t"]
    path.chmod(0)
    if os.access(path, os.R_OK):        # root reads a chmod-000 file: refuse as the kernel would
        real_open = os.open

        def refuse(p: object, *args: object, **kw: object) -> int:
            if os.fspath(p) == str(path):  # type: ignore[arg-type]
                raise PermissionError(13, "Permission denied", str(p))
            return real_open(p, *args, **kw)  # type: ignore[arg-type]
        monkeypatch.setattr(os, "open", refuse)
    try:
        mod = compile_module(funcs())
    finally:
        path.chmod(0o644)
    assert mod.stats == {"llvm_compiles": 1, "cache_hits": 2}
    check(mod)


def test_read_only_cache_directory(root: Path) -> None:
    """Entries are still served, nothing new is stored, nothing fails. Root writes through a
    chmod, so as root only the serving half is meaningful (the put succeeds)."""
    entries(root)
    x = make("arg", name="x", dtype=DType.f64, shape=(N,))
    new = {"u": Func("u", (x,), (make("exp", x),))}
    for d in [root, *root.iterdir()]:
        d.chmod(0o555)
    try:
        assert compile_module(funcs()).stats["cache_hits"] == 3
        mod = compile_module(new)
        np.testing.assert_allclose(mod.call("u", {"x": X})[0], np.exp(X), rtol=1e-14)
        if not os.access(root, os.W_OK):
            assert compile_module(new).stats["llvm_compiles"] == 1
    finally:
        for d in [root, *root.iterdir()]:
            d.chmod(0o755)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_unwritable_cache_location_even_for_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPHC_CACHE_DIR", "/proc/self")       # no mkdir here, even as root
    with pytest.warns(GraphWarning, match="cannot be written"):
        mod = compile_module(funcs())
    check(mod)
    assert compile_module(funcs()).stats["llvm_compiles"] == 3


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_entries_follow_the_umask(root: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        paths = entries(root)
    finally:
        os.umask(old)
    for p in paths.values():
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask


def test_no_temp_file_left_when_the_rename_fails(root: Path) -> None:
    paths = entries(root)
    paths["s"].unlink()
    paths["s"].mkdir()
    (paths["s"] / "keep").write_text("")
    check(compile_module(funcs()))
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_no_home_directory_compiles_without_cache_and_warns_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No GRAPHC_CACHE_DIR, XDG_CACHE_HOME or HOME, and a uid with no passwd entry (a container,
    cron): Path.home() raises, but the cache is optional."""
    import pwd
    for var in ("GRAPHC_CACHE_DIR", "XDG_CACHE_HOME", "HOME"):
        monkeypatch.delenv(var, raising=False)

    def no_entry(uid: int) -> object:
        raise KeyError(f"getpwuid(): uid not found: {uid}")
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mod = compile_module(funcs())
    check(mod)
    assert mod.stats == {"llvm_compiles": 3, "cache_hits": 0}
    assert [w.category for w in caught] == [GraphWarning]
    assert "GRAPHC_CACHE_DIR" in str(caught[0].message)


# -- size limit and LRU ------------------------------------------------------------------------
def test_hit_marks_the_entry_recently_used(root: Path) -> None:
    paths = entries(root)
    old = time.time() - 3600
    for p in paths.values():
        os.utime(p, (old, old))
    compile_module(funcs())
    assert all(p.stat().st_mtime > old + 3000 for p in paths.values())


def test_least_recently_used_entries_are_evicted_past_the_limit(
        root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = entries(root)
    size = max(p.stat().st_size for p in paths.values())
    now = time.time()
    for age, name in enumerate(["s", "c", "t"]):            # s the newest, t the oldest
        os.utime(paths[name], (now - 1000 * (age + 1),) * 2)
    compile_module({"c": funcs()["c"]})                     # a hit: c is now the newest
    monkeypatch.setenv("GRAPHC_CACHE_MAX_MB", str(2.5 * size / 2**20))
    x = make("arg", name="x", dtype=DType.f64, shape=(N,))
    compile_module({"u": Func("u", (x,), (make("exp", x) - 1.0,))})          # a put: evict
    left = {p.name for p in root.rglob("*.o")}
    assert paths["c"].name in left and paths["t"].name not in left
    assert sum(p.stat().st_size for p in root.rglob("*.o")) <= 2.5 * size


def test_eviction_does_not_scan_on_every_put(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scans: list[Path] = []
    real = cache.ObjectCache.evict
    monkeypatch.setattr(cache.ObjectCache, "evict",
                        lambda self: scans.append(self.root) or real(self))
    x = make("arg", name="x", dtype=DType.f64, shape=(N,))
    for k in range(6):
        compile_module({"f": Func("f", (x,), (x * float(k + 1),))})
    assert len(scans) <= 1


def test_info_and_clear_touch_only_cache_files(root: Path) -> None:
    entries(root)
    (root / "notes.txt").write_text("mine")
    (root / "ab").mkdir(exist_ok=True)
    (root / "ab" / "mine.o").write_text("not an entry")
    (root / "ab" / "notes.tmp").write_text("mine too")
    (root / "ab" / "tmpw5mxo5o1.tmp").write_text("left by an old graphc")
    store = cache.ObjectCache(root, cache.cache_limit())
    info = store.info()
    assert (info.directory, info.entries) == (root, 3) and info.bytes > 0
    assert store.clear() == 3
    assert store.info().entries == 0
    assert sorted(p.name for p in root.rglob("*")) == ["ab", "mine.o", "notes.tmp", "notes.txt"]


def test_eviction_removes_temp_files_of_writers_that_died(root: Path) -> None:
    shard = root / "cd"
    shard.mkdir()
    dead, busy = shard / ".0123456789abcdef.99.deadbeef.tmp", shard / "tmpabcd1234.tmp"
    dead.write_bytes(b"x")
    busy.write_bytes(b"y")
    old = time.time() - 2 * cache.STALE_TMP_S
    os.utime(dead, (old, old))
    cache.ObjectCache(root, 1 << 20).evict()
    assert not dead.exists() and busy.exists()


# -- two processes, one cache --------------------------------------------------------------------
MODEL = """
graph m {
    input  x: f32[N, 6]
    param  W: f32[6, 3] = glorot_uniform
    param  b: f32[3]    = zeros
    h    = tanh(x @ W + b)
    loss = mean(h * h)
    output loss, h
    grad   loss
}
"""

RACER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import graphc
    from graphc.runtime import cache
    ref = graphc.compile_source(sys.argv[1], backend="interp")
    params = ref.init_params(seed=0)
    x = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    want_out, want_grads = ref.value_and_grad(x=x, **params)
    stats = {"llvm_compiles": 0, "cache_hits": 0}
    for i in range(20):
        if sys.argv[2] == "clear" and i % 2:
            cache.open_cache().clear()
        model = graphc.compile_source(sys.argv[1])
        out, grads = model.value_and_grad(x=x, **params)
        for k in want_out:
            np.testing.assert_allclose(out[k], want_out[k], rtol=1e-5, atol=1e-6)
        for k in want_grads:
            np.testing.assert_allclose(grads[k], want_grads[k], rtol=1e-5, atol=1e-6)
        for k in stats:
            stats[k] += model._native.stats[k]
    print(json.dumps(stats))
""")


@pytest.mark.slow
def test_two_processes_compiling_into_one_cache(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes compile one model 20 times into one cache, one of them emptying it every
    other time (``graphc cache clear`` meanwhile): reads race writes, renames and unlinks, and
    every result is still the interpreter's."""
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(tmp_path))
    env.pop("GRAPHC_CACHE_MAX_MB", None)
    procs = [subprocess.Popen([sys.executable, "-c", RACER, MODEL, mode], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for mode in ("keep", "clear")]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        stats = json.loads(out.strip().splitlines()[-1])
        assert stats["llvm_compiles"] + stats["cache_hits"] == 60
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    import graphc
    assert graphc.compile_source(MODEL)._native.stats == {"llvm_compiles": 0, "cache_hits": 3}


@pytest.mark.parametrize("value, limit", [("lots", cache.DEFAULT_LIMIT_MB << 20),
                                          ("-1", cache.DEFAULT_LIMIT_MB << 20),
                                          ("0", 0), ("1.5", 3 << 19)])
def test_size_limit_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str,
                                         limit: int) -> None:
    monkeypatch.setenv("GRAPHC_CACHE_MAX_MB", value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cache.cache_limit() == limit
    assert len(caught) == (value in ("lots", "-1"))
