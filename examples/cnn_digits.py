"""Train examples/cnn_digits.graph (conv, batch norm, max-pool, dropout) on scikit-learn's 8x8
digits with graphc's fused SGD step, then evaluate with the batch norms' statistics over the
whole training set (as a model is deployed: no batch statistics at inference).

    python examples/cnn_digits.py            # needs: pip install -e '.[examples]'
"""
from __future__ import annotations

import pathlib
import sys
import time

import numpy as np

import graphc

HERE = pathlib.Path(__file__).parent
STATS = ("m1", "v1", "m2", "v2")


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits as sk_load
    except ImportError:
        sys.exit("this example needs scikit-learn: pip install -e '.[examples]'")
    d = sk_load()
    return (d.images / 16.0).astype(np.float32)[..., None], d.target.astype(np.int64)


def main(epochs: int = 12, batch: int = 32, lr: float = 0.05, backend: str = "native",
         rate: float = 0.25) -> float:
    x, labels = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, test = order[:1500], order[1500:]
    t0 = time.perf_counter()
    model = graphc.compile(HERE / "cnn_digits.graph", graph="cnn", backend=backend)
    evaluate = graphc.compile(HERE / "cnn_digits.graph", graph="cnn_eval", backend=backend)
    print(f"compiled {model} and {evaluate} in {time.perf_counter() - t0:.2f}s")
    params = model.init_params(seed=0)
    step = 0
    for epoch in range(epochs):
        perm = rng.permutation(train)
        losses = []
        step_lr = lr * 0.5 * (1 + np.cos(np.pi * epoch / epochs))      # cosine decay
        for idx in np.array_split(perm, len(perm) // batch):
            step += 1
            losses.append(float(model.sgd_step(params, step_lr, x=x[idx], labels=labels[idx],
                                               key=np.int64(step), rate=np.float32(rate))))
        # inference statistics: the batch norms' mean and variance over the training set
        out = model(x=x[train], labels=labels[train], key=np.int64(0), rate=np.float32(0),
                    **params)
        stats = {k: out[k] for k in STATS}
        pred = evaluate(x=x[test], **stats, **params)["predicted"]
        acc = float(np.mean(pred == labels[test]))
        print(f"epoch {epoch:3d}  train loss {np.mean(losses):.4f}  test accuracy {acc:.4f}  "
              f"({time.perf_counter() - t0:.1f}s)")
    return acc


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="Train a small CNN (convolutions, batch norm, "
                                 "max-pooling, dropout) on scikit-learn's 8x8 digits.")
    ap.add_argument("--epochs", type=int, default=12, help="passes over the training set")
    ap.add_argument("--backend", choices=["native", "interp"], default="native",
                    help="native code (default) or the NumPy reference interpreter")
    args = ap.parse_args()
    main(epochs=args.epochs, backend=args.backend)
