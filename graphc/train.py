"""The ``train_step`` entry point as IR: forward, backward (over ``micro_batches`` slices of the
batch), the statistics, clipping and the optimiser's update of every param and state tensor, so
that the passes fuse and plan the whole step and it runs as one native call. Updated params and
state are results named after the arguments they replace, which lets the memory plan write them
over the caller's arrays."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphc.ir.core import Func, Value, const, make, rebuild, toposort
from graphc.ir.errors import GraphArgumentTypeError, GraphCallError, GraphTypeError
from graphc.ir.ops import random
from graphc.ir.types import Dim, DType, TensorType, dim_mul
from graphc.optim import Optimizer, Scalars
from graphc.program import GraphDef

STEP = "opt.step"            # argument names no graph can declare (a .graph name has no dot)
LR = "opt.lr"
EPS = 1e-6                   # clip_grad_norm_'s: factor min(1, clip_norm / (norm + 1e-6))


@dataclass(frozen=True)
class TrainSpec:
    """What ``Model.train_step`` needs to know about the function built here."""
    trained: tuple[str, ...]                        # params the step updates, in grad order
    state: tuple[tuple[str, TensorType], ...]      # state key -> type; "step" last
    stats: tuple[str, ...]                          # the leading results, as stats keys
    micro_batches: int
    batch_symbol: str | None                        # the dim micro-batching splits
    batched: tuple[str, ...] = ()                   # the inputs it splits
    stats_at: int = 0                               # index of the first stats result
    updated: tuple[tuple[str, TensorType], ...] = ()   # updated params, then state, by arg

    @property
    def forward_results(self) -> int:
        """How many leading results the forward computes: the loss (none with micro-batches,
        whose results lead with the updates, see ``build``)."""
        return 1 if self.stats_at == 0 else 0

    @property
    def updates_at(self) -> int:
        """Index of the first updated param in the results (the state follows)."""
        return len(self.stats) if self.stats_at == 0 else 0


def state_arg(key: str) -> str:
    """The argument (and result) name of state entry ``key`` in train_step."""
    return STEP if key == "step" else key


def _batch_symbol(g: GraphDef) -> str:
    """The symbolic leading dim of the first input: the batch that micro-batching splits."""
    lead = g.inputs[0].type.shape[:1] if g.inputs else ()
    if not lead or not isinstance(lead[0], Dim) or len(lead[0].symbols) != 1 \
            or lead[0] != Dim.sym(lead[0].symbols[0]):
        raise GraphTypeError(f"micro_batches needs a batch dim: graph '{g.name}' must have an "
                             f"input whose leading dim is a symbol such as N")
    return lead[0].symbols[0]


def _micro_targets(g: GraphDef, k: int, n: str
                   ) -> tuple[tuple[Value, ...], tuple[Value, ...], tuple[str, ...]]:
    """The train_step's input args (leading dim k*N for those batched by N), the grad target
    on each of the k slices (each of N examples), and the names of the inputs split."""
    sym = Dim.sym(n)
    fwd = g.forward
    new_params, slices, batched = [], [], []
    for p in fwd.params:
        shape = p.type.shape
        if p.attrs["name"] in {d.name for d in g.inputs} and shape and shape[0] == sym:
            big = make("arg", name=p.attrs["name"], dtype=p.dtype,
                       shape=(dim_mul(k, sym),) + tuple(shape[1:]), loc=p.loc)
            new_params.append(big)
            batched.append(p.attrs["name"])
            slices.append([make("slice", big, start=(dim_mul(j, sym),),
                                stop=(dim_mul(j + 1, sym),)) for j in range(k)])
        else:
            new_params.append(p)
            slices.append([p] * k)
    targets = []
    order = toposort((g.grad.target,), fwd.params)
    for j in range(k):
        new: dict[int, Value] = {id(p): s[j] for p, s in zip(fwd.params, slices)}
        for v in order:
            if id(v) not in new:
                new[id(v)] = random.slice_of_batch(
                    rebuild(v, tuple(new[id(i)] for i in v.inputs)), j, sym)
        targets.append(new[id(g.grad.target)])
    return tuple(new_params), tuple(targets), tuple(batched)


def _sumsq(x: Value) -> Value:
    """sum(x^2) in f64: the norms' partial sums, exact enough to compare with f64 references."""
    x64 = x if x.dtype is DType.f64 else make("cast", x, dtype=DType.f64)
    return make("sum", x64 * x64)


@dataclass(frozen=True)
class _Grads:
    """The gradient half of a step: its input args, the loss and each trained param's gradient
    (the mean over ``micro_batches`` slices)."""
    inputs: tuple[Value, ...]
    loss: Value
    grads: dict[str, Value]
    by_name: dict[str, Value]
    trained: tuple[str, ...]
    batch: str | None
    batched: tuple[str, ...]


def _gradients(g: GraphDef, k: int) -> _Grads:
    if g.grad is None:
        raise GraphTypeError(f"graph '{g.name}' has no grad line, so it cannot be trained; "
                             f"add e.g. 'grad loss' to the graph")
    fwd = g.forward
    by_name = {p.attrs["name"]: p for p in fwd.params}
    param_names = {d.name for d in g.params}
    trained = tuple(n for n in g.grad.wrt if n in param_names)
    if not trained:
        raise GraphTypeError(f"graph '{g.name}' takes the gradient of no param, so an optimiser "
                             f"has nothing to update")
    batch = _batch_symbol(g) if k > 1 else None
    if batch is not None:
        inputs, targets, batched = _micro_targets(g, k, batch)
        grads = {n: _mean([make("grad", t, by_name[n], loc=g.grad.loc) for t in targets])
                 for n in trained}
        return _Grads(inputs, _mean(list(targets)), grads, by_name, trained, batch, batched)
    grads = {n: make("grad", g.grad.target, by_name[n], loc=g.grad.loc) for n in trained}
    return _Grads(fwd.params, g.grad.target, grads, by_name, trained, None, ())


@dataclass(frozen=True)
class _Update:
    """The update half of a step: its statistics, the new params and state (by argument name),
    and the state's args ("step" last)."""
    stats: list[tuple[str, Value]]
    updates: list[tuple[str, Value]]
    state_params: tuple[Value, ...]
    state: tuple[tuple[str, TensorType], ...]
    lr: Value


def _update(opt: Optimizer, by_name: dict[str, Value], trained: tuple[str, ...],
            grads: dict[str, Value], monitor: bool) -> _Update:
    """Statistics, clipping, the non-finite check and the optimiser's update, from ``grads``."""
    slots = opt.slots()
    state_args = {n: {s: make("arg", name=f"{n}.{s}", dtype=by_name[n].dtype,
                              shape=by_name[n].shape) for s in slots} for n in trained}
    step = make("arg", name=STEP, dtype=DType.i64, shape=())
    lr = make("arg", name=LR, dtype=DType.f64, shape=())

    sumsq = {n: _sumsq(gx) for n, gx in grads.items()}
    bad = {n: make("sum", make("where", make("isfinite", gx), const(0, DType.i64),
                               const(1, DType.i64))) for n, gx in grads.items()}
    grad_norm = make("sqrt", _total(list(sumsq.values())))
    nonfinite = _total(list(bad.values()))
    ok = make("eq", nonfinite, const(0, DType.i64))
    if opt.clip_norm is not None:
        coef = make("minimum", opt.clip_norm / (grad_norm + EPS), const(1.0, DType.f64))
        grads = {n: gx * _like(coef, gx) for n, gx in grads.items()}
    if opt.clip_value is not None:
        c = opt.clip_value
        grads = {n: make("clip", gx, const(-c, gx.dtype), const(c, gx.dtype))
                 for n, gx in grads.items()}
    k_ = Scalars(lr=lr, t=make("cast", step, dtype=DType.f64) + 1.0,
                 first=make("eq", step, const(0, DType.i64)))
    new_params, new_state = [], []
    for n in trained:
        p = by_name[n]
        upd, st = opt.update(p, grads[n], state_args[n], k_)
        new_params.append((n, _keep_if(opt, ok, upd, p)))
        for s in slots:
            new_state.append((f"{n}.{s}", _keep_if(opt, ok, st[s], state_args[n][s])))
    new_state.append((STEP, _keep_if(opt, ok, step + 1, step)))

    stats: list[tuple[str, Value]] = [("grad_norm", grad_norm), ("nonfinite", nonfinite)]
    if opt.skip_nonfinite:
        stats.append(("skipped", make("logical_not", ok)))
    if monitor:
        stats += [(f"grad_norms.{n}", make("sqrt", sumsq[n])) for n in trained]
        stats += [(f"param_norms.{n}", make("sqrt", _sumsq(by_name[n]))) for n in trained]
    state_params = tuple(a for n in trained for a in state_args[n].values()) + (step,)
    state = tuple((f"{n}.{s}", by_name[n].type) for n in trained for s in slots) \
        + (("step", TensorType(DType.i64, ())),)
    return _Update(stats, new_params + new_state, state_params, state, lr)


def build(g: GraphDef, opt: Optimizer, *, monitor: bool = False, micro_batches: int = 1
          ) -> tuple[Func, TrainSpec]:
    """The train_step function of graph ``g`` and how to call it."""
    k = micro_batches
    gr = _gradients(g, k)
    up = _update(opt, gr.by_name, gr.trained, gr.grads, monitor)
    stats = [("loss", gr.loss)] + up.stats
    named = [(f"stats.{s}", v) for s, v in stats]
    # With micro-batches the updates lead: the IR's program order (depth first from the
    # results) then runs each slice's forward and backward in turn, and the schedule follows
    # it, so that one slice's activations are dead before the next slice's forward starts.
    results = named + up.updates if k == 1 else up.updates + named
    func = Func(f"{g.name}.train_step", tuple(gr.inputs) + up.state_params + (up.lr,),
                tuple(v for _, v in results), tuple(n for n, _ in results))
    return func, TrainSpec(gr.trained, up.state, tuple(s for s, _ in stats), k, gr.batch,
                           gr.batched, 0 if k == 1 else len(up.updates),
                           tuple((n, v.type) for n, v in up.updates))


GRAD = "train_grad"          # data_parallel's two halves of train_step (graphc/distributed.py)
UPDATE = "train_update"
WEIGHT = "dp.weight"         # the examples this rank's gradient averages over
FLAT = "dp.grads"            # the flat buffer of gradient sums that ranks add up
HEADER = 2                   # the flat buffer ends with (loss * weight, weight)


@dataclass(frozen=True)
class SplitSpec:
    """What the data-parallel step needs about ``train_grad`` and ``train_update``."""
    update: TrainSpec                               # train_update's results, as train_step's
    layout: tuple[tuple[str, int, int], ...]        # param, offset, size in the flat buffer
    size: int                                       # elements, the header included
    dtype: DType                                    # of the flat buffer
    batch_input: str | None                         # whose rows count the examples


def build_split(g: GraphDef, opt: Optimizer, *, monitor: bool = False, micro_batches: int = 1
                ) -> tuple[Func, Func, SplitSpec]:
    """train_step in two halves, so that gradients can be summed over ranks between them.

    ``train_grad`` takes the step's inputs, params and ``dp.weight`` (w, the rank's example
    count) and returns one flat buffer: every trained param's gradient times w, then
    ``loss * w`` and ``w``. Summed over ranks it holds the example-weighted gradient sums and
    the global example count. ``train_update`` takes that sum, divides by the count (the
    global mean gradient of a batch-mean loss) and does the rest of train_step: statistics,
    clipping, the non-finite check and the update."""
    gr = _gradients(g, micro_batches)
    dtype = DType.f64 if any(gr.by_name[n].dtype is DType.f64 for n in gr.trained) \
        else DType.f32
    w = make("arg", name=WEIGHT, dtype=DType.f64, shape=())
    layout, pieces, offset = [], [], 0
    for n in gr.trained:
        gx = gr.grads[n]
        size = _static_size(n, gr.by_name[n].type)
        layout.append((n, offset, size))
        offset += size
        pieces.append(make("reshape", _cast(gx * _like(w, gx), dtype), shape=(-1,)))
    loss = _cast(gr.loss, dtype)
    pieces += [make("reshape", loss * _like(w, loss), shape=(1,)),
               make("reshape", _cast(w, dtype), shape=(1,))]
    total = offset + HEADER
    grad_f = Func(f"{g.name}.{GRAD}", tuple(gr.inputs) + (w,),
                  (make("concat", *pieces, axis=0),), (FLAT,))

    flat = make("arg", name=FLAT, dtype=dtype, shape=(total,))
    count = make("reshape", make("slice", flat, start=(total - 1,), stop=(total,)), shape=())
    grads = {}
    for n, start, size in layout:
        p = gr.by_name[n]
        part = make("slice", flat, start=(start,), stop=(start + size,))
        gx = make("reshape", part / count, shape=p.shape)
        grads[n] = _like(gx, p)
    up = _update(opt, gr.by_name, gr.trained, grads, monitor)
    results = [(f"stats.{s}", v) for s, v in up.stats] + up.updates
    update_f = Func(f"{g.name}.{UPDATE}",
                    tuple(gr.by_name[n] for n in gr.trained) + (flat,) + up.state_params
                    + (up.lr,), tuple(v for _, v in results), tuple(n for n, _ in results))
    spec = TrainSpec(gr.trained, up.state, tuple(s for s, _ in up.stats), 1, None, (), 0,
                     tuple((n, v.type) for n, v in up.updates))
    first = g.inputs[0] if g.inputs else None
    batch_input = first.name if first is not None and first.type.shape and \
        isinstance(first.type.shape[0], Dim) else None
    return grad_f, update_f, SplitSpec(spec, tuple(layout), total, dtype, batch_input)


def _cast(x: Value, dtype: DType) -> Value:
    return x if x.dtype is dtype else make("cast", x, dtype=dtype)


def _static_size(name: str, ty: TensorType) -> int:
    if not all(isinstance(d, int) for d in ty.shape):
        raise GraphTypeError(f"data_parallel needs params of static shape (their gradients go "
                             f"into one flat buffer), but '{name}' is {ty}")
    return int(np.prod(ty.shape, dtype=np.int64))


def _mean(xs: list[Value]) -> Value:
    """The mean of the slices' values, summed as a running sum: one buffer, updated in place
    as each slice finishes (``accumulate``), rather than every slice's value kept to the end."""
    total = xs[0]
    for x in xs[1:]:
        total = make("accumulate", total, x)
    return total if len(xs) == 1 else total * (1.0 / len(xs))


def _total(xs: list[Value]) -> Value:
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    return total


def _like(x: Value, like: Value) -> Value:
    return _cast(x, like.dtype)


def _keep_if(opt: Optimizer, ok: Value, new: Value, old: Value) -> Value:
    """With skip_nonfinite, the old value (bitwise) on a step whose gradients are not finite."""
    return make("where", ok, new, old) if opt.skip_nonfinite else new


def check_micro_batches(k: object) -> int:
    if not isinstance(k, int) or isinstance(k, bool):
        raise GraphCallError(f"micro_batches must be an int >= 1, got {k!r}")
    if k < 1:
        raise GraphCallError(f"micro_batches must be >= 1, got {k}")
    return k


def key_of(arg: str) -> str:
    """The params or state key of a train_step argument."""
    return "step" if arg == STEP else arg


def arguments(spec: TrainSpec, opt: Optimizer, params: Mapping[str, Any],
              state: Mapping[str, Any], lr: Any, inputs: Mapping[str, Any]
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """train_step's arguments by name, and the caller's arrays that receive each updated
    param and state entry; a GraphCallError, before anything runs, for what does not fit."""
    for what, d in (("params", params), ("state", state)):
        if not isinstance(d, Mapping):
            raise GraphArgumentTypeError(f"train_step: {what} must be a dict of arrays, got "
                                         f"{type(d).__name__}")
    missing = [key for key, _ in spec.state if key not in state]
    if missing:
        raise GraphCallError(f"train_step: state has no '{missing[0]}' (make the state with "
                             f"model.init_state(params), or load one saved for this optimiser)")
    extra = [key for key in state if key not in dict(spec.state)]
    if extra:
        raise GraphCallError(f"train_step: state has '{extra[0]}', which this optimiser "
                             f"({opt!r}) does not keep")
    if lr is None:
        lr = opt.lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)):
        raise GraphArgumentTypeError(f"train_step: lr must be a number, got {lr!r}")
    given: dict[str, Any] = {**params, **inputs}
    if spec.micro_batches > 1:
        _check_split(spec, given)
    targets: dict[str, Any] = {n: params.get(n) for n in spec.trained}
    for key, _ in spec.state:
        given[state_arg(key)] = targets[state_arg(key)] = state[key]
    given[LR] = float(lr)
    for name, ty in spec.updated:
        t = targets[name]
        if t is None and name in inputs:
            raise GraphCallError(f"train_step updates params['{name}'] in place, so it must be "
                                 f"passed in params, not as a keyword argument")
        if t is None:                  # missing: the binder names it
            continue
        if not isinstance(t, np.ndarray) or not t.flags.writeable or \
                not np.can_cast(ty.dtype.np, t.dtype, "same_kind"):
            what = "state" if key_of(name) in state else "params"
            raise GraphCallError(f"train_step updates {what}['{key_of(name)}'] in place, so it "
                                 f"must be a writeable NumPy array of {ty.dtype}")
    return given, targets


def _check_split(spec: TrainSpec, given: Mapping[str, Any]) -> None:
    """micro_batches must divide the batch: said plainly, before the binder's dim error."""
    k = spec.micro_batches
    for name in spec.batched:
        rows = np.shape(given[name])[0] if name in given and np.ndim(given[name]) else None
        if rows is not None and rows % k:
            raise GraphCallError(f"micro_batches={k} does not divide the batch: '{name}' has "
                                 f"{rows} rows ({spec.batch_symbol} = {rows}); pass a multiple "
                                 f"of {k}")


def micro_dims(spec: TrainSpec, dims: Mapping[str, int]) -> dict[str, int]:
    """``memory_plan``'s dims name the whole batch; with micro-batches the function's batch
    symbol is one slice of it."""
    k, sym = spec.micro_batches, spec.batch_symbol
    if k == 1 or sym is None or sym not in dims:
        return dict(dims)
    if dims[sym] % k:
        raise GraphCallError(f"micro_batches={k} does not divide the batch {sym} = {dims[sym]}")
    return {**dims, sym: dims[sym] // k}


def stats(spec: TrainSpec, outs: list[np.ndarray]) -> dict[str, Any]:
    """The stats dict from train_step's results."""
    out: dict[str, Any] = {"skipped": False}
    for name, a in zip(spec.stats, outs[spec.stats_at:]):
        head, _, param = name.partition(".")
        value = a.item() if a.ndim == 0 else a
        if param:
            out.setdefault(head, {})[param] = value
        else:
            out[head] = value
    return out


def init_state(spec: TrainSpec, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Zeros for every slot, shaped as the caller's param, and step 0."""
    state: dict[str, np.ndarray] = {}
    for key, ty in spec.state:
        if key == "step":
            state[key] = np.zeros((), np.int64)
            continue
        p = params.get(key.rsplit(".", 1)[0]) if isinstance(params, Mapping) else None
        if p is None:
            raise GraphCallError(f"init_state needs params['{key.rsplit('.', 1)[0]}'] "
                                 f"({ty}) for the shape of '{key}'")
        shape = np.shape(p)
        if len(shape) != len(ty.shape) or any(isinstance(d, int) and d != n
                                               for d, n in zip(ty.shape, shape)):
            name = key.rsplit(".", 1)[0]
            raise GraphCallError(f"init_state: params['{name}'] has shape {shape}, but "
                                 f"'{name}' is {ty}")
        state[key] = np.zeros(shape, ty.dtype.np)
    return state
