"""An autoencoder (examples/autoencoder.graph) on scikit-learn's 8x8 digits: 64 pixels -> 8
numbers -> 64 pixels, trained with Adam in one native train_step per mini-batch.

    python examples/train_autoencoder.py              # needs: pip install -e '.[examples]'
    python examples/train_autoencoder.py --plot recon.png   # held-out digits and their copies

Prints the reconstruction loss falling (binary cross-entropy against grey pixels cannot reach
0); the held-out squared error per pixel ends near 0.017, where the mean image gives 0.074.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))

from examplekit import Progress, load_digits

import graphc


def main(steps: int = 1500, batch: int = 64, backend: str = "native",
         plot: str | None = None, progress: bool | None = None) -> list[float]:
    """Train; return the loss of every step."""
    x, _ = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, test = x[order[:1500]], x[order[1500:]]
    model = graphc.compile(HERE / "autoencoder.graph", backend=backend,
                           optimizer=graphc.optim.Adam(lr=3e-3))
    params = model.init_params(seed=0)
    state = model.init_state(params)
    bar = Progress(steps, "autoencoder", bar=progress)
    losses = []
    for _ in range(steps):
        idx = rng.integers(0, len(train), batch)
        losses.append(float(model.train_step(params, state, x=train[idx])["loss"]))
        bar.update(loss=losses[-1])
    bar.close()
    out = model(x=test, **params)
    base = float(np.mean((test - train.mean(0)) ** 2))
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f}; held-out squared error per pixel "
          f"{float(out['error']):.4f} (the mean image: {base:.4f})")
    if plot:
        show(plot, test[:10], out["recon"][:10])
    return losses


def show(path: str, originals: np.ndarray, copies: np.ndarray) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed, so no picture: pip install -e '.[examples]'")
        return
    fig, axes = plt.subplots(2, len(originals), figsize=(len(originals), 2.2))
    for i, (a, b) in enumerate(zip(originals, copies)):
        for row, img in ((0, a), (1, b)):
            axes[row, i].imshow(img.reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
            axes[row, i].axis("off")
    fig.suptitle("held-out digits (top) and their reconstructions from 8 numbers (bottom)",
                 fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"reconstructions written to {path}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--backend", choices=["native", "interp"], default="native")
    ap.add_argument("--plot", default=None, help="PNG of held-out digits and reconstructions")
    ap.add_argument("--no-progress", action="store_true", help="plain lines, no progress bar")
    args = ap.parse_args()
    main(args.steps, backend=args.backend, plot=args.plot,
         progress=False if args.no_progress else None)
