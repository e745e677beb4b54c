"""Truncated backpropagation through time (examples/rnn.graph): an Elman RNN learns to imitate a
randomly drawn teacher RNN of the same shape, from fresh random sequences at every step.

    python examples/train_rnn.py                 # needs: pip install -e '.[examples]' for the bar
    python examples/train_rnn.py --steps 50 --backend interp

The teacher's final hidden state is the target; the student's loss falls by two orders of
magnitude although its gradient sees only the last T-K steps of each sequence.
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


def main(steps: int = 600, batch: int = 64, backend: str = "native",
         progress: bool | None = None) -> list[float]:
    """Train; return the loss of every step."""
    model = graphc.compile(HERE / "rnn.graph", backend=backend,
                           optimizer=graphc.optim.Adam(lr=0.02))
    rng = np.random.default_rng(0)
    (t, _, d), (_, hidden) = model.inputs["xs"].shape, model.inputs["target"].shape
    teacher = {k: 2.0 * v for k, v in model.init_params(seed=1).items()}  # a livelier teacher

    def batch_of(n: int) -> dict[str, np.ndarray]:
        xs = rng.standard_normal((t, n, d)).astype(np.float32)
        return {"xs": xs, "target": model(xs=xs, target=np.zeros((n, hidden), np.float32),
                                          **teacher)["h"]}

    params = model.init_params(seed=0)
    state = model.init_state(params)
    bar = Progress(steps, "rnn", bar=progress)
    losses = []
    for _ in range(steps):
        losses.append(float(model.train_step(params, state, **batch_of(batch))["loss"]))
        bar.update(loss=losses[-1])
    bar.close()
    held_out = float(model(**batch_of(1000), **params)["loss"])
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f}; on 1000 new sequences {held_out:.4f}")
    return losses


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--backend", choices=["native", "interp"], default="native")
    ap.add_argument("--no-progress", action="store_true", help="plain lines, no progress bar")
    args = ap.parse_args()
    main(args.steps, backend=args.backend, progress=False if args.no_progress else None)
