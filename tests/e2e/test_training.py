"""The seed's training loop end to end: init -> forward -> backward -> SGD update, on
scikit-learn's bundled digits, on both backends; the loss falls and the model learns."""
from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

import graphc
from tests.e2e.conftest import EXAMPLES


def load_example():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("train_digits", EXAMPLES / "train_digits.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["train_digits"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_sgd_steps_reduce_the_loss_identically_on_both_backends() -> None:
    x, labels = load_example().load_digits()
    x, labels = x[:256], labels[:256]
    losses = {}
    for backend in ("interp", "native"):
        m = graphc.compile(EXAMPLES / "digits.graph", backend=backend)
        p = m.init_params(seed=0)
        losses[backend] = [float(m.sgd_step(p, 0.2, x=x, labels=labels)) for _ in range(40)]
    assert losses["interp"][-1] < 0.5 * losses["interp"][0]
    np.testing.assert_allclose(losses["native"], losses["interp"], rtol=1e-4)


@pytest.mark.slow
def test_train_digits_example_reaches_high_accuracy(capsys) -> None:  # type: ignore[no-untyped-def]
    acc = load_example().main(epochs=30)
    out = capsys.readouterr().out
    assert acc >= 0.93, out
    first, last = (float(ln.split("train loss")[1].split()[0]) for ln in
                   (out.splitlines()[1], out.splitlines()[-1]))
    assert last < 0.2 * first


def test_adam_train_step_learns_identically_on_both_backends() -> None:
    """train_step (Adam, clipped) on the digits: the loss falls, the grad norm is reported,
    and the native step follows the interpreter's."""
    from graphc.elaborate import elaborate_source
    from graphc.model import Model
    x, labels = load_example().load_digits()
    x, labels = x[:256], labels[:256]
    path = EXAMPLES / "digits.graph"
    graph = elaborate_source(path.read_text(), str(path))["digits"]
    runs = {}
    for backend in ("interp", "native"):
        m = Model(graph, backend=backend,
                  optimizer=graphc.optim.Adam(lr=0.01, clip_norm=1.0))
        p = m.init_params(seed=0)
        s = m.init_state(p)
        runs[backend] = [m.train_step(p, s, x=x, labels=labels) for _ in range(40)]
    losses = {b: [st["loss"] for st in r] for b, r in runs.items()}
    assert losses["interp"][-1] < 0.2 * losses["interp"][0]
    assert all(st["grad_norm"] > 0 and not st["skipped"] for st in runs["native"])
    np.testing.assert_allclose(losses["native"], losses["interp"], rtol=1e-4)
