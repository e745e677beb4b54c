"""The command line as a new user meets it (issue 15): help with an example everywhere,
--version, `graphc check` on graphs with grad(...) inside and the binding it used, --bind of an
unknown dim, `graphc ops`, exit codes 0/1/2 and never a traceback (fuzzed)."""
from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

import graphc
from graphc.cli import parser
from graphc.ir.ops import registry
from tests.e2e.test_cli import TINY, graphc_exe, run_cli

PENALTY = """graph gp {
    input  x: f32[N, 3]
    param  w: f32[3, 2] = glorot_uniform
    h      = tanh(x @ w)
    gx     = grad(sum(h * h), x)
    loss   = mean(h) + 0.1 * sum(gx * gx)
    output loss
    grad   loss
}
"""
NO_GRAD = "graph f {\n  input x: f32[N, 3]\n  output y = sum(x * x)\n}\n"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("polish")
    out = {}
    for name, text in (("tiny", TINY), ("gp", PENALTY), ("nograd", NO_GRAD),
                       ("two", NO_GRAD + NO_GRAD.replace("graph f", "graph g"))):
        (d / f"{name}.graph").write_text(text)
        out[name] = str(d / f"{name}.graph")
    np.savez(d / "all.npz", x=np.ones((2, 4), np.float32), w=np.full((4, 2), 0.5, np.float32))
    out["all"] = str(d / "all.npz")
    out["dir"] = str(d)
    return out


def test_help_has_an_example_for_every_subcommand_and_option() -> None:
    p = parser()
    top = p.format_help()
    sub = next(a for a in p._actions if a.dest == "cmd")
    assert "examples:" in top and "exit status: 0 ok, 1" in top
    for name, sp in sub.choices.items():
        assert f"  {name} " in top                       # listed with its one-line help
        text = sp.format_help()
        assert "example:\n  graphc " in text, name
        for action in sp._actions:
            if action.dest == "help":
                continue
            assert action.help and "e.g." in action.help, (name, action.dest)


def test_version_and_help_through_the_executable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = graphc_exe("--version", cache=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == f"graphc {graphc.__version__}"
    r = graphc_exe("check", "--help", cache=tmp_path)
    assert r.returncode == 0 and "--bind DIM=N" in r.stdout and "e.g. --bind N=4" in r.stdout


def test_check_runs_autodiff_first_and_prints_its_binding(files: dict[str, str]) -> None:
    r = graphc_exe("check", files["gp"], "--bind", "N=2", cache=files["dir"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("graph gp: binding N=2, seed 0\n")
    assert "grad(..., x) at 5:14" in r.stdout            # the grad inside the graph, checked
    for section in ("forward:", "backward:", "sgd_step:"):
        assert section in r.stdout
    assert "FAIL" not in r.stdout and r.stdout.count(" ok") >= 4


INTERMEDIATE = """graph gz {
    input  x: f32[N, 3]
    param  w: f32[3, 2] = glorot_uniform
    z      = x @ w
    gz     = grad(sum(tanh(z) * z), z)
    output y = mean(sin(gz))
}
"""


@pytest.mark.parametrize("wrong", [False, True])
def test_check_grad_of_an_intermediate_value(capsys, tmp_path, monkeypatch, wrong: bool) -> None:  # type: ignore[no-untyped-def]
    """grad(y, z) for a z computed in the graph: central differences with z cut loose; a wrong
    VJP (tanh's, as g * out) fails the row."""
    if wrong:
        tanh = registry.get("tanh")
        monkeypatch.setitem(registry._TABLE, "tanh",
                            dataclasses.replace(tanh, vjp=lambda g, out, x: [g * out]))
    src = tmp_path / "gz.graph"
    src.write_text(INTERMEDIATE)
    rc, out, err = run_cli(capsys, "check", str(src))
    row = next(ln for ln in out.splitlines() if ln.startswith("grad(..., matmul at 4:16) at 5:14"))
    assert row.endswith("FAIL" if wrong else "ok"), out
    assert rc == (1 if wrong else 0) and ("grad(..., matmul" in err) == wrong


def test_check_a_graph_without_grad_line(capsys, files: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    rc, out, _ = run_cli(capsys, "check", files["nograd"])
    assert rc == 0 and "binding N=3" in out and "no gradient to check" in out


def test_check_fails_on_nonfinite_forward(capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "nan.graph"
    src.write_text("graph f {\n  input x: f32[N]\n  output y = sum(log(x - 10.0))\n}\n")
    rc, out, err = run_cli(capsys, "check", str(src))
    assert rc == 1 and "NaN/Inf  FAIL" in out and "check FAILED for y" in err


@pytest.mark.parametrize("cmd", ["check", "bench"])
def test_bind_of_an_unknown_dim_is_bad_usage(capsys, files: dict[str, str], cmd: str) -> None:  # type: ignore[no-untyped-def]
    rc, out, err = run_cli(capsys, cmd, files["tiny"], "--bind", "M=4")
    assert rc == 2 and out == ""
    assert "graph 't' has no dim 'M' (its dims: N)" in err


def test_bench_prints_its_binding(capsys, files: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    rc, out, _ = run_cli(capsys, "bench", files["tiny"], "--bind", "N=4")
    assert rc == 0 and out.startswith("graph t: binding N=4, seed 0\n") and "sgd_step" in out


def test_several_graphs_name_the_flag(capsys, files: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    rc, _, err = run_cli(capsys, "compile", files["two"])
    assert rc == 1 and "--graph" in err and "graph=" not in err
    assert run_cli(capsys, "compile", files["two"], "--graph", "g")[0] == 0


def test_run_with_inputs_and_params_in_one_archive(files: dict[str, str]) -> None:
    """Was: TypeError: got multiple values for keyword argument 'w', as a traceback."""
    r = graphc_exe("run", files["tiny"], "--inputs", files["all"], cache=files["dir"])
    assert r.returncode == 0 and "Traceback" not in r.stderr
    want = np.mean(np.tanh(np.ones((2, 4)) @ np.full((4, 2), 0.5)))   # the archive's w counts
    assert r.stdout.startswith("loss: float32[]\n")
    assert float(r.stdout.split("\n")[1]) == pytest.approx(want, rel=1e-6)


def test_ops_prints_the_reference(capsys) -> None:  # type: ignore[no-untyped-def]
    from graphc import opdoc
    rc, out, _ = run_cli(capsys, "ops")
    assert rc == 0 and out.rstrip("\n") == opdoc.render().rstrip("\n")
    rc, out, _ = run_cli(capsys, "ops", "matmul")
    assert rc == 0 and out.rstrip("\n") == opdoc.render("matmul").rstrip("\n")
    assert "matmul" in out
    rc, out, err = run_cli(capsys, "ops", "matmull")
    assert rc == 1 and out == "" and "matmul" in err and "Traceback" not in err


# -- fuzzing the arguments: whatever the argv, exit 0, 1 or 2 and one message, no traceback ----
def _vocabulary(files: dict[str, str]) -> dict[str, dict[str, list[str]]]:
    """Per subcommand, its flags and values to draw from (bad ones included); "" is the
    positional argument."""
    d = files["dir"]
    graphs = [files["tiny"], files["gp"], files["two"], f"{d}/missing.graph", files["all"], d]
    common = {"--graph": ["t", "g", "nope"], "--seed": ["0", "-3", "x", "1e9"]}
    bind = {"--bind": ["N=2", "N", "M=3", "N=-1", "=", "N=0", "N=2x"]}
    return {
        "compile": {"": graphs, **common, "-O0": [], "-O3": [], "--time-passes": [],
                    "--passes": ["simplify,cse", "simplfy{x=1}", "O2", ""],
                    "--emit": ["ir", "ir-unopt", "llvm", "dot", "svg", "obj", "pdf"],
                    "--func": ["forward", "backward", "train_step", "nope"],
                    "--optimizer": ["adam", "sgd", "lbfgs"], "--dump-after": ["all", "cse", "x"],
                    "-o": [f"{d}/out.bin", "/nonexistent/dir/o"]},
        "check": {"": graphs, **common, **bind},
        "bench": {"": graphs, **common, **bind},
        "run": {"": graphs, **common, "--inputs": [files["all"], f"{d}/no.npz", files["tiny"]],
                "--params": [files["all"], "/dev/null"], "-o": [f"{d}/o.npz", "/nonexistent/o"]},
        "passes": {"-O1": [], "--passes": ["simplify,cse", "cse{x=1}", "O9", "autodiff,"]},
        "opt": {"": [files["tiny"], f"{d}/missing.ir", "/dev/null"], "-p": ["simplify", "O2", "x"],
                "-o": [f"{d}/o.ir"]},
        "cache": {"": ["info", "clean"]},
        "ops": {"": ["matmul", "sofmax", "grad", "--", "\u00e9"]},
        "frob": {"": ["x"]},
    }


def _argv(rng: random.Random, vocab: dict[str, dict[str, list[str]]]) -> list[str]:
    cmd = rng.choice(list(vocab))
    flags = vocab[cmd]
    argv = [cmd]
    if "" in flags and rng.random() < 0.9:
        argv.append(rng.choice(flags[""]))
    for _ in range(rng.randint(0, 3)):
        flag = rng.choice(list(flags) + ["--help", "--version", "-x"])
        if flag == "":
            continue
        argv.append(flag)
        values = flags.get(flag, [])
        if values and rng.random() < 0.9:
            argv.append(rng.choice(values))
    return argv


def test_fuzzed_arguments_never_give_a_traceback(capsys, files: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    vocab = _vocabulary(files)
    rng = random.Random(15)
    seen: dict[int, int] = {}
    for _ in range(40):
        argv = _argv(rng, vocab)
        rc, _, err = run_cli(capsys, *argv)
        seen[rc] = seen.get(rc, 0) + 1
        assert rc in (0, 1, 2), (argv, rc, err)
        assert "Traceback" not in err and "internal error" not in err, (argv, err)
        if rc == 1:
            assert any(line.startswith(("error: ", "check FAILED"))
                       for line in err.splitlines()), (argv, err)
    assert min(seen.get(0, 0), seen.get(1, 0), seen.get(2, 0)) >= 5, seen
