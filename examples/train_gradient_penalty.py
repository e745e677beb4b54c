"""A gradient penalty inside the graph (examples/gradient_penalty.graph): a small net fits noisy
samples of a smooth surface while its loss also charges for the squared gradient of its output
with respect to its input, a grad(...) that the loss is then differentiated through.

    python examples/train_gradient_penalty.py    # needs: pip install -e '.[examples]' for the bar
    python examples/train_gradient_penalty.py --steps 50 --backend interp
    graphc check examples/gradient_penalty.graph # those second-order gradients, numerically

Prints the loss, the fit and the penalty term falling.
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


def data(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    y = np.sin(2 * x[:, 0]) * np.cos(x[:, 1]) + 0.1 * rng.standard_normal(n)
    return x, y.astype(np.float32)


def main(steps: int = 500, backend: str = "native",
         progress: bool | None = None) -> list[float]:
    """Train; return the loss of every step."""
    rng = np.random.default_rng(0)
    x, y = data(256, rng)
    model = graphc.compile(HERE / "gradient_penalty.graph", backend=backend,
                           optimizer=graphc.optim.Adam(lr=0.01))
    params = model.init_params(seed=0)
    state = model.init_state(params)
    bar = Progress(steps, "gradient penalty", bar=progress)
    losses = []
    for _ in range(steps):
        losses.append(float(model.train_step(params, state, x=x, y=y)["loss"]))
        bar.update(loss=losses[-1])
    bar.close()
    x_test, y_test = data(1000, rng)
    out = model(x=x_test, y=y_test, **params)
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f}; held out: fit {float(out['fit']):.4f} "
          f"(noise alone: 0.0100), mean squared input gradient {float(out['slope']):.3f}")
    return losses


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--backend", choices=["native", "interp"], default="native")
    ap.add_argument("--no-progress", action="store_true", help="plain lines, no progress bar")
    args = ap.parse_args()
    main(args.steps, backend=args.backend, progress=False if args.no_progress else None)
