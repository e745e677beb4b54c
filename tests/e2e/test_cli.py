"""The command line: emits, pass listing, gradient check, exit codes, no tracebacks."""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from graphc.cli import main
from graphc.ir.ops import registry
from graphc.passes import describe_pipeline
from tests.e2e.conftest import EXAMPLES


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as e:                       # argparse's usage errors
        rc = int(e.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def test_passes_lists_the_pipeline_one_per_line(capsys) -> None:  # type: ignore[no-untyped-def]
    import graphc.passes
    rc, out, _ = run_cli(capsys, "passes")
    lines = out.strip().splitlines()
    assert rc == 0 and [ln.split()[0] for ln in lines] == [n for n, _ in
                                                           graphc.passes.describe_pipeline(2)]
    assert lines[0].startswith("autodiff") and all(len(ln.split()) > 2 for ln in lines)


def test_compile_emits_readable_ir(capsys) -> None:  # type: ignore[no-untyped-def]
    rc, out, _ = run_cli(capsys, "compile", str(EXAMPLES / "mlp.graph"), "--emit", "ir-unopt")
    assert rc == 0
    assert "func @mlp.forward(%x: f32[N,784], %y: f32[N,10], %W1: f32[784,256]" in out
    assert "grad %" in out                      # unoptimised backward still holds grad ops
    rc, out, _ = run_cli(capsys, "compile", str(EXAMPLES / "mlp.graph"), "-O0")
    assert rc == 0 and "grad %" not in out and "func @mlp.sgd_step" in out


def test_compile_dump_after_each_pass(capsys) -> None:  # type: ignore[no-untyped-def]
    rc, out, _ = run_cli(capsys, "compile", str(EXAMPLES / "mlp.graph"), "--dump-after", "all")
    assert rc == 0 and out.count("// ----- after ") == len(describe_pipeline(2))
    rc, _, err = run_cli(capsys, "compile", str(EXAMPLES / "mlp.graph"), "--dump-after", "nope")
    assert rc == 2 and "no pass 'nope'" in err


def test_compile_time_passes_reports_op_counts(capsys) -> None:  # type: ignore[no-untyped-def]
    rc, _, err = run_cli(capsys, "compile", str(EXAMPLES / "mlp.graph"), "--time-passes")
    assert rc == 0 and "autodiff" in err and "dce" in err


def test_compile_emit_dot(capsys) -> None:  # type: ignore[no-untyped-def]
    rc, out, _ = run_cli(capsys, "compile", str(EXAMPLES / "mlp.graph"), "--emit", "dot")
    assert rc == 0 and out.startswith('digraph "mlp.forward"') and "matmul" in out


@pytest.mark.parametrize("name", ["mlp", "digits", "rnn"])
def test_check_passes_on_every_example(capsys, name: str) -> None:  # type: ignore[no-untyped-def]
    rc, out, _ = run_cli(capsys, "check", str(EXAMPLES / f"{name}.graph"), "--bind", "N=2")
    assert rc == 0, out
    assert "FAIL" not in out and out.count(" ok") >= 2


def test_check_fails_loudly_on_a_wrong_vjp(capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    tanh = registry.get("tanh")
    wrong = dataclasses.replace(tanh, vjp=lambda g, out, x: [g * out])     # should be 1 - out^2
    monkeypatch.setitem(registry._TABLE, "tanh", wrong)
    rc, out, err = run_cli(capsys, "check", str(EXAMPLES / "digits.graph"), "--bind", "N=3")
    assert rc == 1 and "FAIL" in out and "W1" in err


def test_run_writes_outputs(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "in.npz", x=rng.normal(size=(3, 784)), y=np.eye(10)[[1, 2, 3]])
    rc, _, _ = run_cli(capsys, "run", str(EXAMPLES / "mlp.graph"), "--inputs",
                       str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz"))
    assert rc == 0
    with np.load(tmp_path / "out.npz") as z:
        assert z["logits"].shape == (3, 10) and z["loss"].shape == ()


def test_user_error_exits_1_with_location_and_no_traceback(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.graph"
    bad.write_text("graph g {\n  input x: f32[3]\n  output y = exq(x)\n}\n")
    rc, out, err = run_cli(capsys, "compile", str(bad))
    assert rc == 1 and "Traceback" not in err
    assert f"{bad}:3:" in err and "did you mean 'exp'" in err
    rc, _, err = run_cli(capsys, "compile", str(tmp_path / "missing.graph"))
    assert rc == 1 and "missing.graph" in err


def test_bad_usage_exits_2(capsys) -> None:  # type: ignore[no-untyped-def]
    assert run_cli(capsys, "frobnicate")[0] == 2
    assert run_cli(capsys, "check", str(EXAMPLES / "mlp.graph"), "--bind", "N")[0] == 2


def test_console_entry_point_runs_as_a_module() -> None:
    r = subprocess.run([sys.executable, "-m", "graphc", "passes"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("autodiff")


def test_compile_emits_llvm_asm_and_objects(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    mlp = str(EXAMPLES / "mlp.graph")
    rc, out, _ = run_cli(capsys, "compile", mlp, "--emit", "llvm")
    assert rc == 0 and "target triple" in out and "define" in out
    rc, out, _ = run_cli(capsys, "compile", mlp, "--emit", "asm")
    assert rc == 0 and ("ymm" in out or "zmm" in out)          # vectorised loops
    rc, _, err = run_cli(capsys, "compile", mlp, "--emit", "obj", "-o", str(tmp_path / "m.o"))
    assert rc == 0
    for name in ("forward", "backward", "sgd_step"):
        assert (tmp_path / f"m.{name}.o").read_bytes()[:4] == b"\x7fELF"
    assert run_cli(capsys, "compile", mlp, "--emit", "obj")[0] == 2          # needs -o


@pytest.mark.parametrize("make_input, words", [
    (lambda p: np.save(p, np.zeros(3)), "not an .npz archive"),
    (lambda p: p.write_bytes(b"PK\x03\x04 broken zip"), "not an .npz archive"),
    # a .graph passed by mistake gave NumPy's words about pickled data and allow_pickle
    (lambda p: p.write_text("graph t {\n input x: f32[N]\n output x\n}\n"),
     "not an .npz archive"),
])
def test_bad_input_files_are_user_errors(tmp_path, capsys, make_input, words) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "in.npz"
    make_input(path)
    if not path.exists():                       # np.save appended .npy
        path = tmp_path / "in.npz.npy"
    rc, _, err = run_cli(capsys, "run", str(EXAMPLES / "mlp.graph"), "--inputs", str(path))
    assert rc == 1 and words in err and "Traceback" not in err


def test_unwritable_output_is_a_user_error(capsys) -> None:  # type: ignore[no-untyped-def]
    rc, _, err = run_cli(capsys, "compile", str(EXAMPLES / "mlp.graph"), "-o",
                         "/nonexistent/dir/out.ir")
    assert rc == 1 and "cannot write /nonexistent/dir/out.ir" in err


def test_negative_bind_is_bad_usage(capsys) -> None:  # type: ignore[no-untyped-def]
    rc, _, err = run_cli(capsys, "check", str(EXAMPLES / "mlp.graph"), "--bind", "N=-1")
    assert rc == 2 and "N >= 0" in err


def test_dump_after_writes_to_the_output_file(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "dump.ir"
    rc, stdout, _ = run_cli(capsys, "compile", str(EXAMPLES / "mlp.graph"), "--dump-after",
                            "cse", "-o", str(out))
    assert rc == 0 and stdout == "" and "// ----- after cse -----" in out.read_text()


def test_zero_gradient_warning_reads_like_an_error(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "w.graph"
    src.write_text("graph g {\n  input x: f32[3]\n  param w: f32[3]\n  param u: f32[3]\n"
                   "  loss = sum(x * w)\n  output loss\n  grad loss\n}\n")
    rc, _, err = run_cli(capsys, "compile", str(src))
    assert rc == 0
    assert err.count("warning: ") == 1 and f"{src}:7:3: the gradient w.r.t. u" in err
    assert ".py:" not in err


# -- the real executable: no traceback, whatever the input (issue 17) --------------------------
TINY = """graph t {
    input  x: f32[N, 4]
    param  w: f32[4, 2] = glorot_uniform
    loss = mean(tanh(x @ w))
    output loss
    grad   loss
}
"""


def graphc_exe(*argv: str, cache: object, stdout: int = subprocess.PIPE
               ) -> subprocess.CompletedProcess[str]:
    """Run the installed ``graphc`` (``python -m graphc`` where it is not on PATH)."""
    exe = shutil.which("graphc")
    cmd = [exe] if exe else [sys.executable, "-m", "graphc"]
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(cache))
    env.pop("GRAPHC_TRACEBACK", None)
    env.pop("GRAPHC_CACHE_MAX_MB", None)
    return subprocess.run(cmd + list(argv), env=env, stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=120)


def test_negative_seed_is_bad_usage(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = graphc_exe("check", str(EXAMPLES / "mlp.graph"), "--seed", "-1", cache=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--seed: takes an integer >= 0, got '-1'" in r.stderr


@pytest.mark.parametrize("cmd", ["check", "bench"])
def test_binding_too_big_for_memory_is_one_clear_error(tmp_path, cmd: str) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "t.graph"
    src.write_text(TINY.replace("4", "784"))         # 784 floats a row: 292 TiB
    r = graphc_exe(cmd, str(src), "--bind", "N=100000000000", cache=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1
    assert r.stderr.startswith("error: --bind N=100000000000: the arguments alone need ")


def test_huge_literal_is_one_error_without_traceback(tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "big.graph"
    src.write_text("graph g {\n  input x: f32[3]\n  output y = x * " + "9" * 5000 + "\n}\n")
    r = graphc_exe("compile", str(src), cache=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith(("error: ", "graphc: internal error: "))


def test_a_closed_pipe_ends_the_command_quietly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    read, write = os.pipe()
    os.close(read)                  # no reader at all, before graphc writes a byte
    try:
        r = graphc_exe("passes", cache=tmp_path, stdout=write)
    finally:
        os.close(write)
    assert (r.returncode, r.stderr) == (141, "")


def test_run_writes_exactly_the_output_name_given(tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "m.graph"
    src.write_text("graph g {\n  input x: f32[3]\n  output file = x * 2.0\n"
                   "  output allow_pickle = x + 1.0\n}\n")
    np.savez(tmp_path / "in.npz", x=np.arange(3.0))
    r = graphc_exe("run", str(src), "--inputs", str(tmp_path / "in.npz"), "-o",
                   str(tmp_path / "result"), cache=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "result.npz").exists()
    with np.load(tmp_path / "result") as z:
        assert z["file"].tolist() == [0, 2, 4] and z["allow_pickle"].tolist() == [1, 2, 3]


def test_cache_info_and_clear(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import graphc
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    graphc.compile_source(TINY)   # forward, backward, sgd_step and the whole model: 4 entries
    stored = len(list(tmp_path.rglob("*.o")))    # (and the worker pool's, when made here)
    assert stored >= 4
    r = graphc_exe("cache", "info", cache=tmp_path)
    info = dict(line.split(None, 1) for line in r.stdout.strip().splitlines())
    assert r.returncode == 0 and info["directory"] == str(tmp_path)
    assert info["entries"] == str(stored)
    assert info["size"].endswith(("KiB", "bytes"))
    assert info["limit"] == "512.0 MiB (GRAPHC_CACHE_MAX_MB)"
    r = graphc_exe("cache", "clear", cache=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith(f"removed {stored} entries")
    assert not list(tmp_path.rglob("*.o"))


def test_internal_error_is_one_line_asking_for_a_report(capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def bug(*args: object, **kw: object) -> None:
        raise KeyError("something\nmultiline")
    monkeypatch.setattr("graphc.compile", bug)
    monkeypatch.delenv("GRAPHC_TRACEBACK", raising=False)
    rc, _, err = run_cli(capsys, "compile", str(EXAMPLES / "mlp.graph"))
    assert rc == 1 and err.count("\n") == 1
    assert err.startswith("graphc: internal error: KeyError: 'something\\nmultiline'")
    assert "please report" in err


def test_no_home_directory_compiles_without_cache(tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """No GRAPHC_CACHE_DIR, XDG_CACHE_HOME or HOME, and a uid without a passwd entry."""
    import pwd
    for var in ("GRAPHC_CACHE_DIR", "XDG_CACHE_HOME", "HOME"):
        monkeypatch.delenv(var, raising=False)

    def no_entry(uid: int) -> object:
        raise KeyError(f"getpwuid(): uid not found: {uid}")
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    src = tmp_path / "t.graph"
    src.write_text(TINY)
    rc, out, err = run_cli(capsys, "compile", str(src), "--emit", "llvm")
    assert rc == 0 and "define" in out
    assert err.count("warning: ") == 1 and "set GRAPHC_CACHE_DIR" in err


def test_passes_and_compile_take_a_pipeline_spec(capsys) -> None:  # type: ignore[no-untyped-def]
    rc, out, _ = run_cli(capsys, "passes", "--passes", "simplify,checkpoint{policy=all}")
    assert rc == 0 and [ln.split()[0] for ln in out.strip().splitlines()] == [
        "autodiff", "simplify", "dce", "checkpoint{policy=all}"]
    rc, out, err = run_cli(capsys, "compile", str(EXAMPLES / "mlp.graph"), "--passes",
                           "simplify,cse", "--dump-after", "all", "--time-passes")
    assert rc == 0 and out.count("// ----- after ") == 4
    assert "(--passes autodiff,simplify,cse,dce)" in err
    rc, _, err = run_cli(capsys, "compile", str(EXAMPLES / "mlp.graph"), "--passes", "simplfy")
    assert rc == 1 and "unknown pass 'simplfy'" in err and "did you mean 'simplify'" in err


OPT_IN = """\
func @f(%x: f32[4]) -> (f32[4]) {
  %0 = neg %x : f32[4]
  %1 = neg %0 : f32[4]
  %2 = exp %1 : f32[4]
  return %2
}
"""


def test_opt_runs_passes_on_ir_text(tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "f.ir"
    src.write_text(OPT_IN)
    r = graphc_exe("opt", str(src), "-p", "simplify", cache=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "func @f(%x: f32[4]) -> (f32[4]) {\n  %0 = exp %x : f32[4]\n  " \
        "return %0\n}\n"
    r = graphc_exe("opt", str(src), "-p", "dce", cache=tmp_path)        # as written: no simplify
    assert r.returncode == 0 and r.stdout == OPT_IN
    r = graphc_exe("opt", str(src), "-p", "simplify{x=1}", cache=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr == "error: pass 'simplify' has no option 'x' (it takes none)\n"
    r = graphc_exe("opt", str(tmp_path / "missing.ir"), "-p", "O2", cache=tmp_path)
    assert r.returncode == 1 and r.stderr.startswith("error: cannot read ")
