"""The command line (SPEC §3): emits, pass listing, gradient check, exit codes, no tracebacks."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from graphc.cli import main
from ir.ops import registry
from tests.e2e.conftest import EXAMPLES


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as e:                       # argparse's usage errors
        rc = int(e.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def test_passes_lists_the_pipeline_one_per_line(capsys) -> None:  # type: ignore[no-untyped-def]
    import passes
    rc, out, _ = run_cli(capsys, "passes")
    lines = out.strip().splitlines()
    assert rc == 0 and [ln.split()[0] for ln in lines] == [n for n, _ in
                                                           passes.describe_pipeline(2)]
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
    assert rc == 0 and out.count("// ----- after ") == len(__import__("passes")
                                                           .describe_pipeline(2))
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
    (lambda p: p.write_bytes(b"PK\x03\x04 broken zip"), "cannot read"),
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
