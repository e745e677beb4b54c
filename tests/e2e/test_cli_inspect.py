"""``graphc compile`` for inspection (issue 15): one valid LLVM module per entry point with the
.graph lines as comments, assembly likewise, --time-passes through machine code, pictures of any
entry point (and a clear message where Graphviz is missing)."""
from __future__ import annotations

import os
import re
import shutil
import sys

import llvmlite.binding as llvm
import pytest

from graphc.runtime import jit
from tests.e2e.test_cli import TINY, graphc_exe, run_cli


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("inspect") / "t.graph"
    path.write_text(TINY)
    return str(path)


@pytest.mark.parametrize("func", ["forward", "backward", "sgd_step"])
def test_emit_llvm_is_one_valid_module_per_entry_point(capsys, tiny: str, func: str) -> None:  # type: ignore[no-untyped-def]
    rc, out, _ = run_cli(capsys, "compile", tiny, "--emit", "llvm", "--func", func)
    assert rc == 0
    assert len(re.findall(r"^define [^@]*@\"?graphc_entry\"?\(", out, re.MULTILINE)) == 1
    mod = llvm.parse_assembly(out)              # the comments do not break the module
    mod.verify()
    # each kernel, and each call of one, says which .graph line it computes
    kernels = re.findall(r"^define [^@]*@\"?(k\d+\.\w+)\"?\(", out, re.MULTILINE)
    assert kernels
    for k in kernels:
        assert re.search(rf"^; kernel {re.escape(k)}: step \d+, .* at t\.graph:\d+:\d+", out,
                         re.MULTILINE), k
    assert re.search(r"^\s+; step 0: \S.* at t\.graph:4:\d+", out, re.MULTILINE)    # tanh(x @ w)


def test_emit_asm_has_source_comments_and_train_step(capsys, tiny: str) -> None:  # type: ignore[no-untyped-def]
    rc, out, _ = run_cli(capsys, "compile", tiny, "--emit", "asm", "--func", "train_step",
                         "--optimizer", "adam")
    assert rc == 0 and out.count("graphc_entry:") == 1
    mark = jit.asm_comment()
    assert re.search(rf"^{re.escape(mark)} kernel k0\.\w+: step 0, .* at t\.graph:\d+:\d+", out,
                     re.MULTILINE)


def test_unknown_func_lists_the_entry_points(capsys, tiny: str) -> None:  # type: ignore[no-untyped-def]
    rc, _, err = run_cli(capsys, "compile", tiny, "--emit", "llvm", "--func", "train_step")
    assert rc == 1 and "(it has forward, backward, sgd_step)" in err
    assert "Traceback" not in err


def test_time_passes_covers_every_phase_through_machine_code(capsys, tiny: str) -> None:  # type: ignore[no-untyped-def]
    rc, _, err = run_cli(capsys, "compile", tiny, "--time-passes", "--func", "forward")
    assert rc == 0
    phases = err.split("compile phases", 1)[1]
    for phase in ("parse+elaborate", "passes", "autodiff", "fusion", "plan", "llvm ir",
                  "llvm parse", "llvm opt", "machine code", "link", "total"):
        assert re.search(rf"^\s*{re.escape(phase)}\s+\d+\.\d\d$", phases, re.MULTILINE), phase


def test_emit_ir_and_dump_after_take_func(capsys, tiny: str) -> None:  # type: ignore[no-untyped-def]
    rc, out, _ = run_cli(capsys, "compile", tiny, "--func", "sgd_step")
    assert rc == 0 and out.startswith("func @t.sgd_step(") and "func @t.forward" not in out
    rc, out, _ = run_cli(capsys, "compile", tiny, "--func", "backward", "--dump-after", "cse")
    assert rc == 0 and out.count("func @t.") == 1 and "func @t.backward" in out


def test_emit_dot_through_the_executable(tiny: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = graphc_exe("compile", tiny, "--emit", "dot", "--func", "backward", cache=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('digraph "t.backward"') and "subgraph cluster_" in r.stdout
    assert "t.graph:4" in r.stdout


def test_svg_without_graphviz_is_one_clear_error(tiny: str, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    bindir = os.path.dirname(sys.executable)       # python and graphc, but no dot
    if shutil.which("dot", path=bindir):
        pytest.skip("Graphviz's dot sits next to python")
    monkeypatch.setenv("PATH", bindir)
    r = graphc_exe("compile", tiny, "--emit", "svg", "-o", str(tmp_path / "t.svg"),
                   cache=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "Graphviz" in r.stderr
    assert "apt install graphviz" in r.stderr
    assert not (tmp_path / "t.svg").exists()
