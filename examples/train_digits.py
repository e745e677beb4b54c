"""Train examples/digits.graph on scikit-learn's bundled 8x8 digits, one compiled train_step per
mini-batch: forward, backward, gradient clipping and the Adam update in one native call.

    python examples/train_digits.py                 # Adam; needs: pip install -e '.[examples]'
    python examples/train_digits.py --optimizer sgd # SGD with momentum
    python examples/train_digits.py --backend interp

Shows the loss falling, the gradient norm (before clipping) the step reports, and the held-out
accuracy rising; a batch whose gradients were not finite would be skipped and counted.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

import graphc

HERE = pathlib.Path(__file__).parent
OPTIMIZERS = {
    "adam": lambda: graphc.optim.Adam(lr=0.01, clip_norm=5.0),
    "sgd": lambda: graphc.optim.SGD(lr=0.1, momentum=0.9, clip_norm=5.0),
}


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits as sk_load
    except ImportError:
        sys.exit("this example needs scikit-learn: pip install -e '.[examples]'")
    d = sk_load()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)


def main(epochs: int = 30, batch: int = 64, optimizer: str = "adam",
         backend: str = "native") -> float:
    x, labels = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, test = order[:1500], order[1500:]
    t0 = time.perf_counter()
    opt = OPTIMIZERS[optimizer]()
    model = graphc.compile(HERE / "digits.graph", backend=backend, optimizer=opt)
    print(f"compiled {model} with {opt} in {time.perf_counter() - t0:.2f}s")
    params = model.init_params(seed=0)
    state = model.init_state(params)
    for epoch in range(epochs):
        perm = rng.permutation(train)
        stats = [model.train_step(params, state, x=x[idx], labels=labels[idx])
                 for idx in np.array_split(perm, len(perm) // batch)]
        if epoch % 5 == 0 or epoch == epochs - 1:
            out = model(x=x[test], labels=labels[test], **params)
            acc = float(np.mean(out["predicted"] == labels[test]))
            skipped = sum(s["skipped"] for s in stats)
            print(f"epoch {epoch:3d}  train loss {np.mean([s['loss'] for s in stats]):.4f}  "
                  f"grad norm {np.mean([s['grad_norm'] for s in stats]):.3f}  "
                  f"test loss {float(out['loss']):.4f}  test accuracy {acc:.3f}"
                  + (f"  skipped {skipped}" if skipped else ""))
    return acc


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam")
    ap.add_argument("--backend", choices=["native", "interp"], default="native")
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    main(epochs=args.epochs, optimizer=args.optimizer, backend=args.backend)
