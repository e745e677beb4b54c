"""Where compile time goes: ``model.compile_stats`` and ``graphc compile --time-passes`` time
every phase (front end, each IR pass, plan, LLVM IR, LLVM optimisation, machine code, cache
I/O, link); a cache hit runs no LLVM; ``import graphc`` does not load LLVM."""
from __future__ import annotations

import subprocess
import sys

import pytest

import graphc
from graphc.runtime import jit
from graphc.runtime.stats import CompileStats

SRC = """
graph g {
    input x: f32[N, 4]
    param w: f32[4, 3]
    loss = sum(tanh(x @ w))
    output loss
    grad loss
}
"""

COLD = ("parse+elaborate", "passes", "plan", "cache key", "cache read", "llvm ir", "llvm parse",
        "llvm opt", "machine code", "cache write", "link")


@pytest.fixture(scope="module")
def cold_and_hit(tmp_path_factory: pytest.TempPathFactory) -> tuple[graphc.Model, graphc.Model]:
    with pytest.MonkeyPatch.context() as m:
        m.setenv("GRAPHC_CACHE_DIR", str(tmp_path_factory.mktemp("stats-cache")))
        return graphc.compile_source(SRC), graphc.compile_source(SRC)


def test_a_cold_compile_times_every_phase(cold_and_hit: tuple[graphc.Model, ...]) -> None:
    s = cold_and_hit[0].compile_stats
    assert all(s.phases[p] >= 0 for p in COLD), sorted(s.phases)
    assert {"autodiff", "fusion", "memplan"} <= set(s.passes)
    assert s["passes"] == pytest.approx(sum(s.passes.values()))
    assert s.total == pytest.approx(sum(s.phases.values())) and s.total > 0
    assert s.counts["kernel functions"] <= s.counts["kernels"]
    table = s.table()
    assert all(p in table for p in COLD) and "  autodiff" in table and "total" in table
    assert set(s.as_dict()) == {"phases", "passes", "counts", "total"}


def test_a_cache_hit_runs_no_llvm(cold_and_hit: tuple[graphc.Model, ...]) -> None:
    hit = cold_and_hit[1]
    assert hit._native.stats == {"llvm_compiles": 0, "cache_hits": 3}
    assert "cache read" in hit.compile_stats.phases and "link" in hit.compile_stats.phases
    assert not {"llvm ir", "llvm opt", "machine code"} & set(hit.compile_stats.phases)


def test_stats_add_up_by_phase() -> None:
    s = CompileStats()
    s.add("plan", 0.25)
    s.add("plan", 0.5)
    s.add_pass("cse", 1.0)
    with s.phase("link"):
        pass
    assert s["plan"] == 0.75 and s["passes"] == 1.0 and s.passes == {"cse": 1.0}
    assert list(s.phases) == ["plan", "passes", "link"]
    assert s.table().splitlines()[1].startswith("passes")      # listed in ORDER


def test_object_blobs_round_trip_and_a_truncated_one_is_refused() -> None:
    objs = [b"\x7fELF one", b"\x7fELF two, longer"]
    assert jit.unpack(jit.pack(objs)) == objs
    assert jit.unpack(b"\x7fELF plain") == [b"\x7fELF plain"]
    with pytest.raises(ValueError):
        jit.unpack(jit.pack(objs)[:-3])


def test_import_graphc_does_not_load_llvm() -> None:
    code = "import sys, graphc; print(sorted(m for m in sys.modules if 'llvmlite' in m))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_time_passes_prints_the_phase_table(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from graphc.cli import main
    path = tmp_path / "g.graph"
    path.write_text(SRC)
    assert main(["compile", str(path), "--time-passes", "-o", str(tmp_path / "g.ir")]) == 0
    err = capsys.readouterr().err
    assert "compile phases" in err and "llvm opt" in err and "machine code" in err
