"""Every example script runs briefly (a few steps, on the interpreter: no LLVM) and its loss
falls; the digits script draws its progress bar and writes its loss-curve PNG through its own
command line; `graphc check` (the real executable) passes on the gradient-penalty example.
These run as a user runs them, without verifying the IR after every pass (the slow
tests/runtime/test_debug_build.py compiles every example with it)."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from types import ModuleType

import numpy as np
import pytest

from tests.e2e.conftest import EXAMPLES

pytest.importorskip("sklearn")


@pytest.fixture(autouse=True)
def _as_users_run_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from graphc.passes.manager import VERIFY_ENV
    monkeypatch.setenv(VERIFY_ENV, "0")


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def fell(losses: list[float], factor: float) -> bool:
    k = max(1, len(losses) // 5)
    return bool(np.isfinite(losses).all() and np.mean(losses[-k:]) < factor * np.mean(losses[:k]))


@pytest.mark.parametrize("script, steps, factor, batch", [
    ("train_logreg", 20, 0.5, {}),
    ("train_autoencoder", 30, 0.8, {}),
    ("train_rnn", 40, 0.5, {"batch": 32}),
    ("train_gradient_penalty", 25, 0.5, {}),
])
def test_example_loss_falls(script: str, steps: int, factor: float, batch: dict,  # type: ignore[no-untyped-def]
                            capsys) -> None:
    losses = load(script).main(steps=steps, backend="interp", progress=False, **batch)
    out = capsys.readouterr().out
    assert len(losses) == steps and fell(losses, factor), out
    assert "loss" in out.splitlines()[-1]


def test_train_digits_quick_run_learns(capsys) -> None:  # type: ignore[no-untyped-def]
    acc = load("train_digits").main(steps=30, backend="interp", progress=False)
    out = capsys.readouterr().out
    assert acc > 0.8, out
    first, last = (float(ln.split("train loss")[1].split()[0]) for ln in
                   (out.splitlines()[1], out.splitlines()[-1]))
    assert last < 0.5 * first, out


def test_train_digits_command_line_shows_a_bar_and_writes_the_png(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The script as a user runs it (fewer steps): tqdm's bar on stderr, epoch lines on stdout,
    the PNG where --plot says; `--plot none` and a missing tqdm fall back to plain lines."""
    pytest.importorskip("tqdm")
    pytest.importorskip("matplotlib")
    r = subprocess.run([sys.executable, str(EXAMPLES / "train_digits.py"), "--steps", "10",
                        "--backend", "interp", "--plot", str(tmp_path / "d.png")],
                       check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(EXAMPLES.parent)})
    assert r.returncode == 0, r.stderr
    assert "10/10" in r.stderr and "step" in r.stderr          # the bar's last state
    assert "test accuracy" in r.stdout.splitlines()[-1]
    assert (tmp_path / "d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(tmp_path.iterdir()) == [tmp_path / "d.png"]     # nothing else left behind


def test_progress_without_tqdm_prints_plain_lines(capsys) -> None:  # type: ignore[no-untyped-def]
    kit = load("examplekit")
    bar = kit.Progress(20, "x", bar=False)
    for i in range(20):
        bar.update(loss=1.0 / (i + 1))
    bar.close()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 10 and lines[-1].startswith("step    20/20  loss 0.05")


def test_graphc_check_passes_on_the_gradient_penalty_example() -> None:
    r = subprocess.run(["graphc", "check", str(EXAMPLES / "gradient_penalty.graph")],
                       check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [ln for ln in r.stdout.splitlines() if "e-" in ln or "e+" in ln]   # error columns
    assert any(ln.startswith("grad(") for ln in rows), r.stdout    # the in-graph grad checked
    assert rows and all(ln.rstrip().endswith("ok") for ln in rows), r.stdout


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.graph")), ids=lambda p: p.stem)
def test_graphc_check_passes_on_every_graph_of_every_example(path) -> None:  # type: ignore[no-untyped-def]
    """Checked at N(0, 1) params, the autoencoder's sigmoid saturated until f64 could not
    resolve 1 - p, and `graphc check` failed a graph whose gradients were right."""
    from graphc.check import check_all
    from graphc.elaborate import elaborate_source
    for name, g in elaborate_source(path.read_text(), str(path)).items():
        report = check_all(g)
        assert report.failed == [], name
