"""A whole-model cache hit (graphc/modelcache.py): compiling the same source with the same
options again runs no pass and makes no plan, yet gives the same model: the same results, the
same IR, the same warnings. Any option or const that changes the model misses. And the GEMM
library (runtime/gemmlib.py): compiled once, kept in the cache, linked by every model."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc.ir.types import DType
from graphc.runtime import gemmlib, jit

SRC = """
const H = 6
graph g {
    input x: f32[N, 4]
    param w: f32[4, H]
    param unused: f32[3]
    loss = sum(tanh(x @ w))
    output loss
    grad loss
}
"""


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    return tmp_path


def _compile(**options: object) -> tuple[graphc.Model, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = graphc.compile_source(SRC, **options)
    return m, [str(w.message) for w in caught if issubclass(w.category, graphc.GraphWarning)]


def test_a_hit_runs_no_pass_and_gives_the_same_model(cache: Path) -> None:
    cold, said_cold = _compile()
    hit, said_hit = _compile()
    assert "passes" in cold.compile_stats.phases and cold.compile_stats.passes
    assert "passes" not in hit.compile_stats.phases and not hit.compile_stats.passes
    assert "llvm opt" not in hit.compile_stats.phases
    assert said_cold and said_hit == said_cold          # 'unused' gets no gradient: said again
    for f in cold.funcs:
        assert hit.dump_ir(func=f) == cold.dump_ir(func=f)
    params = cold.init_params(seed=1)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    (a, ga), (b, gb) = cold.value_and_grad(x=x, **params), hit.value_and_grad(x=x, **params)
    assert a["loss"] == b["loss"] and all(np.array_equal(ga[n], gb[n]) for n in ga)
    assert hit.memory_plan(N=5).peak_bytes == cold.memory_plan(N=5).peak_bytes


def test_what_changes_the_model_misses(cache: Path) -> None:
    _compile()
    for options in ({"consts": {"H": 7}}, {"opt_level": 1}, {"check_numerics": True},
                    {"optimizer": graphc.optim.Adam(lr=0.1)}, {"num_threads": 3}):
        m, _ = _compile(**options)
        assert m.compile_stats.passes, options          # compiled, not loaded
        again, _ = _compile(**options)
        assert not again.compile_stats.passes, options  # and then loaded


def test_a_damaged_entry_is_a_miss(cache: Path) -> None:
    _compile()
    for entry in cache.rglob("*"):
        if entry.is_file():
            entry.write_bytes(entry.read_bytes()[:-7] + b"garbage")
    m, _ = _compile()
    assert m.compile_stats.passes
    x = np.ones((2, 4), np.float32)
    assert np.isfinite(m(x=x, **m.init_params(seed=0))["loss"])


def test_models_link_the_gemm_library_built_once(cache: Path) -> None:
    m = graphc.compile(Path(__file__).parents[2] / "examples" / "mlp.graph", debug=False)
    text = m.llvm_ir("forward")             # (a debug build has no packed GEMM)
    assert re.search(r'declare \w+ @"?graphc\.gemm\.driver\.f32', text)   # declared only
    assert not re.search(r'define[^@]*@"?graphc\.gemm', text)
    assert gemmlib.needed(m._native.entries["forward"].obj) == [DType.f32]  # an f32 model
    for dt in gemmlib.DTYPES:
        _, names = gemmlib.build(dt)
        addresses = gemmlib.symbols([dt])
        assert sorted(addresses) == sorted(names) and all(addresses.values())
        assert {f"graphc.gemm.pack_b.{dt.name}", f"graphc.gemm.pack_task.{dt.name}"} <= \
            set(names) and all(dt.name in n for n in names)
    assert jit.open_cache() is not None
