"""Train examples/digits.graph data-parallel over MPI: every rank takes its share of each
mini-batch, train_step averages the gradients over all ranks (one Allreduce of one flat
buffer per step) and every rank applies the same Adam update, so all ranks hold the same
params. docs/distributed.md.

    mpiexec -n 2 python examples/train_digits_dp.py                  # needs: pip install -e
                                                                      #   '.[examples,distributed]'
    mpiexec -n 2 python examples/train_digits_dp.py --compress bf16  # gradients sent as bfloat16
    python examples/train_digits_dp.py                               # one process, no MPI needed

The global batch is the same whatever the number of ranks, so the run learns as
examples/train_digits.py does with one process.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np

import graphc
import graphc.distributed

HERE = pathlib.Path(__file__).parent
sys.path.insert(0, str(HERE))
from examplekit import load_digits  # the examples' shared helpers


def main(epochs: int = 30, batch: int = 64, compress: str | None = None) -> float:
    comm = graphc.distributed.init(compress=compress)
    say = print if comm.rank == 0 else (lambda *a, **k: None)
    x, labels = load_digits()
    rng = np.random.default_rng(0)          # the same seed on every rank: the same batches
    order = rng.permutation(len(x))
    train, test = order[:1500], order[1500:]
    t0 = time.perf_counter()
    # the ranks on one machine share its cores
    threads = max(1, (os.cpu_count() or 1) // comm.local_size)
    model = graphc.compile(HERE / "digits.graph", optimizer=graphc.optim.Adam(lr=0.01,
                           clip_norm=5.0), data_parallel=comm, num_threads=threads)
    say(f"{comm}: compiled {model} in {time.perf_counter() - t0:.2f}s")
    params = model.init_params(seed=comm.rank)
    comm.broadcast_params(params)           # rank 0's draw everywhere
    state = model.init_state(params)
    acc = 0.0
    t0 = time.perf_counter()
    for epoch in range(epochs):
        perm = rng.permutation(train)
        stats = []
        for idx in np.array_split(perm, len(perm) // batch):    # one global batch
            mine = comm.shard(idx)                               # this rank's rows of it
            stats.append(model.train_step(params, state, x=x[mine], labels=labels[mine]))
        if epoch % 5 == 0 or epoch == epochs - 1:
            out = model(x=x[test], labels=labels[test], **params)
            acc = float(np.mean(out["predicted"] == labels[test]))
            say(f"epoch {epoch:3d}  train loss {np.mean([s['loss'] for s in stats]):.4f}  "
                f"grad norm {np.mean([s['grad_norm'] for s in stats]):.3f}  "
                f"test loss {float(out['loss']):.4f}  test accuracy {acc:.3f}")
    say(f"{epochs} epochs in {time.perf_counter() - t0:.2f}s on {comm.size} rank(s)")
    return acc


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64, help="global batch (all ranks together)")
    ap.add_argument("--compress", choices=["bf16"], default=None)
    args = ap.parse_args()
    main(epochs=args.epochs, batch=args.batch, compress=args.compress)
