"""What every example script shares: the digits data, a progress display (a tqdm bar when tqdm
is installed, plain lines otherwise), and loss curves drawn with matplotlib when installed.
`pip install -e '.[examples]'` installs all three."""
from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import numpy as np


def load_digits(images: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits scaled to [0, 1] (rows of 64, or NHWC images), labels."""
    try:
        from sklearn.datasets import load_digits as sk_load
    except ImportError:
        sys.exit("this example needs scikit-learn: pip install -e '.[examples]'")
    d = sk_load()
    x = d.images[..., None] if images else d.data
    return (x / 16.0).astype(np.float32), d.target.astype(np.int64)


class Progress:
    """Counts steps: with tqdm, a bar whose postfix shows the latest statistics; without it (or
    with ``bar=False``), a plain line every ``every`` steps (default: a tenth of them; 0: never)
    and at the end. ``log`` prints a line above the bar in both cases (on stdout)."""

    def __init__(self, total: int, desc: str, bar: bool | None = None,
                 every: int | None = None) -> None:
        self.total, self.step, self.stats = total, 0, {}
        self.every = max(1, total // 10) if every is None else every
        self._bar: Any = None
        if bar is not False:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True,
                                 leave=True)

    def update(self, **stats: float) -> None:
        self.step += 1
        self.stats.update(stats)
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in self.stats.items()}, refresh=False)
            self._bar.update(1)
        elif self.every and (self.step % self.every == 0 or self.step == self.total):
            self.log(f"step {self.step:5d}/{self.total}  " + "  ".join(
                f"{k} {v:.4f}" for k, v in self.stats.items()))

    def log(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def smooth(ys: Iterable[float], window: int = 10) -> np.ndarray:
    """A running mean over ``window`` steps (what a noisy mini-batch loss curve needs)."""
    y = np.asarray(list(ys), dtype=np.float64)
    if len(y) < window:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    return np.concatenate([c[1:window] / np.arange(1, window), (c[window:] - c[:-window]) / window])


def plot_curves(path: str, title: str, panels: dict[str, dict[str, tuple[Any, Any]]]) -> bool:
    """Save one PNG of side-by-side panels, each {label: (xs, ys)}; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")            # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed, so no plot: pip install -e '.[examples]'")
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (name, series) in zip(axes[0], panels.items()):
        for label, (xs, ys) in series.items():
            ax.plot(xs, ys, label=label)
        ax.set_title(name)
        ax.set_xlabel("step")
        ys_all = [y for _, ys in series.values() for y in ys]
        if name.lower().endswith("loss") and min(ys_all) > 0 and max(ys_all) > 20 * min(ys_all):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True

