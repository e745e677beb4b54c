"""Logistic regression (examples/logreg.graph) on scikit-learn's breast-cancer data: 569
patients, 30 features, full-batch gradient descent with graphc's fused SGD step.

    python examples/train_logreg.py               # needs: pip install -e '.[examples]'
    python examples/train_logreg.py --steps 50 --backend interp

Prints the loss falling and the held-out accuracy (about 96%).
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))

from examplekit import Progress

import graphc


def load() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError:
        sys.exit("this example needs scikit-learn: pip install -e '.[examples]'")
    d = load_breast_cancer()
    order = np.random.default_rng(0).permutation(len(d.target))
    train, test = order[:450], order[450:]
    mu, sd = d.data[train].mean(0), d.data[train].std(0)      # statistics of the train rows
    x = ((d.data - mu) / sd).astype(np.float32)
    y = d.target.astype(np.float32)
    return x[train], y[train], x[test], y[test]


def main(steps: int = 300, lr: float = 0.5, backend: str = "native",
         progress: bool | None = None) -> list[float]:
    """Train; return the loss of every step."""
    x, y, x_test, y_test = load()
    model = graphc.compile(HERE / "logreg.graph", backend=backend)
    params = model.init_params(seed=0)
    bar = Progress(steps, "logreg", bar=progress)
    losses = []
    for _ in range(steps):
        losses.append(float(model.sgd_step(params, lr, x=x, y=y)))
        bar.update(loss=losses[-1])
    bar.close()
    p = model(x=x_test, y=y_test, **params)["probability"]
    acc = float(np.mean((p > 0.5) == (y_test > 0.5)))
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f}; held-out accuracy {acc:.3f} "
          f"({len(y_test)} patients)")
    return losses


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--backend", choices=["native", "interp"], default="native")
    ap.add_argument("--no-progress", action="store_true", help="plain lines, no progress bar")
    args = ap.parse_args()
    main(args.steps, args.lr, args.backend, progress=False if args.no_progress else None)
