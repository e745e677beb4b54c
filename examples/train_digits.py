"""Train examples/digits.graph on scikit-learn's bundled 8x8 digits with graphc's fused SGD step.

    python examples/train_digits.py            # needs: pip install -e '.[examples]'

Shows the seed's training loop end to end: init params, then forward -> backward -> update in one
compiled call per mini-batch, with the loss falling and the held-out accuracy rising.
"""
from __future__ import annotations

import pathlib
import sys
import time

import numpy as np

import graphc

HERE = pathlib.Path(__file__).parent


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits as sk_load
    except ImportError:
        sys.exit("this example needs scikit-learn: pip install -e '.[examples]'")
    d = sk_load()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


def main(epochs: int = 30, batch: int = 64, lr: float = 0.1, backend: str = "native") -> float:
    x, labels = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, test = order[:1500], order[1500:]
    t0 = time.perf_counter()
    model = graphc.compile(HERE / "digits.graph", backend=backend)
    print(f"compiled {model} in {time.perf_counter() - t0:.2f}s")
    params = model.init_params(seed=0)
    for epoch in range(epochs):
        perm = rng.permutation(train)
        losses = [float(model.sgd_step(params, lr, x=x[idx], labels=labels[idx]))
                  for idx in np.array_split(perm, len(perm) // batch)]
        if epoch % 5 == 0 or epoch == epochs - 1:
            out = model(x=x[test], labels=labels[test], **params)
            acc = float(np.mean(out["predicted"] == labels[test]))
            print(f"epoch {epoch:3d}  train loss {np.mean(losses):.4f}  "
                  f"test loss {float(out['loss']):.4f}  test accuracy {acc:.3f}")
    return acc


if __name__ == "__main__":
    main(backend=sys.argv[1] if len(sys.argv) > 1 else "native")
