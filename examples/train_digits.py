"""Train examples/digits.graph on scikit-learn's bundled 8x8 digits, one compiled train_step per
mini-batch: forward, backward, gradient clipping and the Adam update in one native call.

    python examples/train_digits.py                 # Adam; needs: pip install -e '.[examples]'
    python examples/train_digits.py --optimizer sgd # SGD with momentum
    python examples/train_digits.py --backend interp --steps 50 --plot none

A progress bar (tqdm) shows the loss and the held-out accuracy as they change; every few epochs
a line gives the train loss, the gradient norm (before clipping) the step reports and the test
loss and accuracy; at the end the loss curves go to digits_loss.png (matplotlib). Without tqdm
or matplotlib it prints plain lines only. A batch whose gradients were not finite would be
skipped and counted.
"""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))

from examplekit import Progress, load_digits, plot_curves, smooth

import graphc

OPTIMIZERS = {
    "adam": lambda: graphc.optim.Adam(lr=0.01, clip_norm=5.0),
    "sgd": lambda: graphc.optim.SGD(lr=0.1, momentum=0.9, clip_norm=5.0),
}


def main(epochs: int = 30, batch: int = 64, optimizer: str = "adam", backend: str = "native",
         steps: int | None = None, plot: str | None = None,
         progress: bool | None = None) -> float:
    """Train; return the final test accuracy. ``steps`` caps the number of steps (for a quick
    run), ``plot`` names a PNG for the loss and accuracy curves, ``progress=False`` hides the
    bar."""
    x, labels = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, test = order[:1500], order[1500:]
    per_epoch = len(train) // batch
    total = min(epochs * per_epoch, steps) if steps is not None else epochs * per_epoch
    t0 = time.perf_counter()
    opt = OPTIMIZERS[optimizer]()
    model = graphc.compile(HERE / "digits.graph", backend=backend, optimizer=opt)
    print(f"compiled {model} with {opt} in {time.perf_counter() - t0:.2f}s")
    params = model.init_params(seed=0)
    state = model.init_state(params)
    bar = Progress(total, "digits", bar=progress, every=0)
    losses: list[float] = []
    evals: list[tuple[int, float, float]] = []          # (step, test loss, test accuracy)
    for epoch in range(epochs):
        perm = rng.permutation(train)
        stats = []
        for idx in np.array_split(perm, per_epoch)[:total - len(losses)]:
            stats.append(model.train_step(params, state, x=x[idx], labels=labels[idx]))
            losses.append(float(stats[-1]["loss"]))
            bar.update(loss=losses[-1])
        out = model(x=x[test], labels=labels[test], **params)
        acc = float(np.mean(out["predicted"] == labels[test]))
        evals.append((len(losses), float(out["loss"]), acc))
        bar.stats["test acc"] = acc
        last = len(losses) == total
        if epoch % 5 == 0 or epoch == epochs - 1 or last:
            skipped = sum(s["skipped"] for s in stats)
            bar.log(f"epoch {epoch:3d}  train loss {np.mean([s['loss'] for s in stats]):.4f}  "
                    f"grad norm {np.mean([s['grad_norm'] for s in stats]):.3f}  "
                    f"test loss {float(out['loss']):.4f}  test accuracy {acc:.3f}"
                    + (f"  skipped {skipped}" if skipped else ""))
        if last:
            break
    bar.close()
    if plot:
        steps_, test_loss, test_acc = zip(*evals)
        if plot_curves(plot, f"digits MLP, {optimizer}", {
                "loss": {"train (mean of 10 steps)": (range(1, len(losses) + 1), smooth(losses)),
                         "test": (steps_, test_loss)},
                "test accuracy": {"test": (steps_, test_acc)}}):
            print(f"loss curves written to {plot}", file=sys.stderr)
    return acc


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adam")
    ap.add_argument("--backend", choices=["native", "interp"], default="native")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    ap.add_argument("--plot", default="digits_loss.png",
                    help="PNG for the loss curves ('none': no plot)")
    ap.add_argument("--no-progress", action="store_true", help="plain lines, no progress bar")
    args = ap.parse_args()
    main(epochs=args.epochs, optimizer=args.optimizer, backend=args.backend, steps=args.steps,
         plot=None if args.plot == "none" else args.plot,
         progress=False if args.no_progress else None)
