"""Data-parallel training over MPI (mpi4py). Each rank runs the gradient half of train_step
natively on its shard of the batch; the ranks add their gradients up as one flat buffer; each
rank then runs the same update natively on the same sum, so params stay bitwise identical on
every rank. The two halves are IR built in graphc/train.py (``build_split``); this module holds
the communicator and the step between them. docs/distributed.md."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from graphc import train
from graphc.ir.errors import GraphArgumentTypeError, GraphCallError

__all__ = ["Communicator", "Local", "MPIComm", "from_bf16", "init", "to_bf16"]

COMPRESS = (None, "bf16")
# what launchers tell their processes (MPICH's Hydra and PMI, Open MPI, MVAPICH): a world this
# size was started, whatever the MPI that mpi4py loaded says
_LAUNCHER_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def _check_compress(compress: Any) -> str | None:
    if compress not in COMPRESS:
        raise GraphCallError(f"compress must be None or 'bf16', got {compress!r}")
    return compress


class Communicator:
    """The ranks of a data-parallel job. This base class is the no-op single-process
    communicator (``Local``); ``MPIComm`` wraps an mpi4py communicator."""
    rank: int = 0
    size: int = 1
    local_size: int = 1          # ranks on this machine (to share its cores among them)

    def __init__(self, compress: str | None = None) -> None:
        self.compress = _check_compress(compress)

    def broadcast_params(self, params: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """Rank 0's values of every array in ``params``, written in place on every rank (call
        it once after ``init_params``, as each rank's draw may differ). Returns ``params``."""
        _arrays("broadcast_params", params)
        return params

    def allreduce(self, flat: np.ndarray) -> np.ndarray:
        """The element-wise sum over ranks of the flat buffer ``flat`` (train_step's gradient
        sums, ending with the loss sum and the example count), the same bits on every rank."""
        return flat

    def shard(self, *arrays: Any) -> Any:
        """This rank's share of each array's rows (``np.array_split`` over the ranks: the
        first ``len % size`` ranks take one row more). One array gives one slice."""
        out = []
        for a in arrays:
            n = len(a)
            lo = self.rank * (n // self.size) + min(self.rank, n % self.size)
            out.append(a[lo:lo + n // self.size + (self.rank < n % self.size)])
        return out[0] if len(out) == 1 else tuple(out)

    def barrier(self) -> None:
        """Wait until every rank has called this."""

    def __reduce__(self) -> Any:
        raise GraphCallError("a communicator (and a model compiled with data_parallel=) cannot "
                             "be pickled: it belongs to this process's MPI job. Pickle a model "
                             "compiled without data_parallel=, or compile in each rank")

    def __copy__(self) -> Communicator:
        return self                          # a handle to the job: copies share it

    def __deepcopy__(self, memo: Any) -> Communicator:
        return self

    def __repr__(self) -> str:
        extra = f", compress={self.compress!r}" if self.compress else ""
        return f"<graphc.distributed.{type(self).__name__} rank {self.rank} of {self.size}{extra}>"


class Local(Communicator):
    """One process, no MPI: every collective is the identity (with ``compress``, nothing
    travels, so nothing is rounded). A script written for several ranks runs unchanged."""


class MPIComm(Communicator):
    """An mpi4py communicator. Uncompressed, the sum is MPI's ``Allreduce`` (``MPI_SUM``) on
    the flat buffer, whose result MPI gives every rank identically; with ``compress="bf16"``
    the buffers travel as bfloat16 by ``Allgather`` and each rank adds them in f32 in rank
    order, the same bits on every rank by construction."""

    def __init__(self, comm: Any, compress: str | None = None) -> None:
        super().__init__(compress)
        from mpi4py import MPI
        self._mpi = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_size = node.Get_size()
        node.Free()

    def broadcast_params(self, params: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        mine = _arrays("broadcast_params", params)
        ref = self.comm.bcast(mine, root=0)
        problem = "" if mine == ref else _mismatch(ref, mine)
        problems = self.comm.allgather(problem)   # every rank raises, or none: no one hangs
        bad = next((r for r, p in enumerate(problems) if p), None)
        if bad is not None:
            raise GraphCallError(f"broadcast_params: rank {bad}'s params differ from rank 0's "
                                 f"({problems[bad]})")
        for name, _, _ in mine:
            self.comm.Bcast(params[name], root=0)
        return params

    def allreduce(self, flat: np.ndarray) -> np.ndarray:
        if self.compress == "bf16":
            return self._allreduce_bf16(flat)
        self.comm.Allreduce(self._mpi.IN_PLACE, flat, op=self._mpi.SUM)
        return flat

    def _allreduce_bf16(self, flat: np.ndarray) -> np.ndarray:
        """Gradients as bfloat16, the header (loss sum, example count) as f64 beside them;
        gathered, then added in rank order (f32 for the gradients, f64 for the header)."""
        h = train.HEADER
        send = np.empty(4 * h + flat.size - h, np.uint16)
        send[:4 * h] = flat[-h:].astype(np.float64).view(np.uint16)
        send[4 * h:] = to_bf16(flat[:-h])
        got = np.empty((self.size, send.size), np.uint16)
        self.comm.Allgather(send, got)
        grads = from_bf16(got[0, 4 * h:])
        header = got[0, :4 * h].copy().view(np.float64)
        for r in range(1, self.size):
            grads += from_bf16(got[r, 4 * h:])
            header += got[r, :4 * h].copy().view(np.float64)
        out = np.empty_like(flat)
        out[:-h], out[-h:] = grads, header
        return out

    def barrier(self) -> None:
        self.comm.Barrier()


def init(*, compress: str | None = None, comm: Any = None) -> Communicator:
    """The communicator of this process's MPI job: ``comm`` (an mpi4py communicator) or
    ``MPI.COMM_WORLD``. Without mpi4py, or in a world of one process, the no-op ``Local``.
    ``compress="bf16"``: gradients travel as bfloat16 (half the bytes), summed in f32.
    Collective: every rank calls it (the same number of times)."""
    compress = _check_compress(compress)
    launched = _launched()
    if comm is None:
        try:
            from mpi4py import MPI
        except ImportError:
            if launched > 1:
                raise GraphCallError(f"this process is one of {launched} that mpiexec started, "
                                     f"but mpi4py is not installed, so each would train alone: "
                                     f"pip install 'graphc[distributed]'") from None
            return Local(compress)
        comm = MPI.COMM_WORLD
    elif not all(hasattr(comm, a) for a in ("Allreduce", "Allgather", "Get_size")):
        raise GraphArgumentTypeError(f"init: comm must be an mpi4py communicator, got {comm!r}")
    if comm.Get_size() == 1:
        if launched > 1:
            raise GraphCallError(f"mpiexec started {launched} processes but MPI says this one "
                                 f"is alone: the mpiexec on PATH belongs to another MPI than "
                                 f"the one mpi4py loaded (run mpi4py's: python -m mpi4py "
                                 f"--mpi-library; use its mpiexec)")
        return Local(compress)
    return MPIComm(comm, compress)


def _launched() -> int:
    """How many processes the launcher says it started (1 when none says)."""
    sizes = [os.environ.get(v, "") for v in _LAUNCHER_SIZE]
    return max([int(s) for s in sizes if s.strip().isdigit()], default=1)


def check(comm: Any, optimizer: Any) -> None:
    """compile's ``data_parallel=``: a communicator, with an optimiser to apply the update."""
    if not isinstance(comm, Communicator):
        raise GraphArgumentTypeError(f"data_parallel must be a communicator from "
                                     f"graphc.distributed.init(), got {comm!r}")
    if optimizer is None:
        raise GraphCallError("data_parallel= averages train_step's gradients over the ranks, "
                             "which needs an optimizer: compile(..., optimizer="
                             "graphc.optim.Adam(), data_parallel=comm)")


# ---------------------------------------------------------------------------- the step


def train_step(model: Any, comm: Communicator, params: Mapping[str, Any],
               state: Mapping[str, Any], lr: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """``Model.train_step`` with ``data_parallel=comm``: the local gradient sums (native), their
    sum over ranks, the update (native) on every rank; stats are global."""
    spec, split = model._train, model._split
    given, targets = train.arguments(spec, model.optimizer, params, state, lr, inputs)
    update_only = {train.state_arg(k) for k, _ in spec.state} | {train.LR}
    grad_given = {k: v for k, v in given.items() if k not in update_only}
    n = _examples(split, given)
    grad_given[train.WEIGHT] = float(n)
    if n == 0:           # nothing to add; a mean over no rows would make NaNs
        flat = np.zeros(split.size, split.dtype.np)
    else:
        flat = model._run(train.GRAD, model._prepare(train.GRAD, grad_given))[0]
    total = comm.allreduce(flat)

    up = split.update
    upd_given = {k: given[k] for k in up.trained}
    upd_given[train.FLAT] = total
    upd_given.update({k: given[k] for k in update_only})
    prepared = model._prepare(train.UPDATE, upd_given)
    args, first = prepared[0], up.updates_at
    # results go straight into the caller's arrays when they are usable as buffers
    direct = {first + i: k for i, (k, _) in enumerate(up.updated) if args[k] is targets[k]}
    outs = model._run(train.UPDATE, prepared, inplace=direct)
    for i, (k, _) in enumerate(up.updated):
        if args[k] is not targets[k]:
            targets[k][...] = outs[first + i]
    count = float(total[-1])
    stats = {"loss": float(total[-2]) / count if count else float("nan")}
    stats.update(train.stats(up, outs))
    stats["examples"] = int(count)
    return stats


def _examples(split: train.SplitSpec, given: Mapping[str, Any]) -> int:
    """This rank's example count: the rows of the first input (1 for a graph without a batch
    dim, whose ranks then weigh alike)."""
    x = given.get(split.batch_input) if split.batch_input else None
    return int(np.shape(x)[0]) if x is not None and np.ndim(x) else 1


def _arrays(what: str, params: Mapping[str, Any]) -> list[tuple[str, tuple, str]]:
    """(name, shape, dtype) of each array, sorted: what every rank must agree on."""
    if not isinstance(params, Mapping):
        raise GraphArgumentTypeError(f"{what}: params must be a dict of arrays, got "
                                     f"{type(params).__name__}")
    for k, a in params.items():
        if not isinstance(a, np.ndarray) or not a.flags.writeable or not a.flags.c_contiguous:
            raise GraphCallError(f"{what} writes params['{k}'] in place, so it must be a "
                                 f"writeable C-contiguous NumPy array")
    return [(k, params[k].shape, params[k].dtype.str) for k in sorted(params)]


def _mismatch(ref: list, mine: list) -> str:
    ref_d, mine_d = {k: v for k, *v in ref}, {k: v for k, *v in mine}
    for k in sorted(set(ref_d) | set(mine_d)):
        if ref_d.get(k) != mine_d.get(k):
            return f"'{k}': {mine_d.get(k, 'missing')} here, {ref_d.get(k, 'missing')} on rank 0"
    return "different order"


# ---------------------------------------------------------------------------- bfloat16


def to_bf16(x: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) of ``x``, rounded to nearest, ties to even; NaN stays a
    (quiet) NaN, a finite value past bfloat16's largest rounds to infinity."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    out = ((bits + np.uint32(0x7FFF) + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)
    return out


def from_bf16(bits: np.ndarray) -> np.ndarray:
    """The f32 values of bfloat16 bit patterns (exact)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)
