"""``Model``: a compiled graph. It builds the entry points (forward, backward, sgd_step, and
train_step with an optimiser: graphc/train.py) as IR, runs the pass pipeline on each, and calls
them natively (or on the interpreter)."""
from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any, Mapping

import numpy as np

import graphc.passes
from graphc import distributed, modelcache, optim, train
from graphc import init as initializers
from graphc.errors import attach_snippet, public, public_methods
from graphc.ir import interp, shapecheck
from graphc.ir.args import Binder
from graphc.ir.core import Func, make
from graphc.ir.errors import (
    GraphArgumentTypeError,
    GraphCallError,
    GraphError,
    GraphWarning,
    warn,
)
from graphc.ir.ops.fused import body_symbols
from graphc.ir.ops.registry import suggest
from graphc.ir.types import DType, TensorType
from graphc.passes import checkpoint as checkpointing
from graphc.passes import fusion
from graphc.program import GraphDef
from graphc.runtime.stats import CompileStats

BACKENDS = ("native", "interp")


def grad_name(name: str) -> str:
    """Result name of a gradient in the backward function's signature."""
    return f"grad.{name}"


def build_funcs(g: GraphDef) -> dict[str, Func]:
    """forward: outputs; backward: outputs + gradients; sgd_step: target + updated params."""
    fwd = g.forward
    funcs = {"forward": fwd}
    if g.grad is None:
        return funcs
    by_name = {p.attrs["name"]: p for p in fwd.params}
    wrt = [by_name[n] for n in g.grad.wrt]
    grads = [make("grad", g.grad.target, x, loc=g.grad.loc) for x in wrt]
    funcs["backward"] = Func(f"{g.name}.backward", fwd.params, fwd.results + tuple(grads),
                             fwd.result_names + tuple(grad_name(n) for n in g.grad.wrt))
    param_names = {d.name for d in g.params}
    taken = set(by_name)
    lr_name = next(n for n in ("lr", "lr_", "sgd.lr") if n not in taken)   # never a user's name
    lr = make("arg", name=lr_name, dtype=DType.f64, shape=())
    updates = []
    for n, x, gx in zip(g.grad.wrt, wrt, grads):
        if n in param_names:
            step = gx * make("cast", lr, dtype=x.dtype) if x.dtype is not DType.f64 else gx * lr
            updates.append((n, make("sub", x, step, loc=g.grad.loc)))
    funcs["sgd_step"] = Func(f"{g.name}.sgd_step", fwd.params + (lr,),
                             (g.grad.target,) + tuple(u for _, u in updates),
                             ("target",) + tuple(n for n, _ in updates))
    return funcs


OPTIONS = ("opt_level", "backend", "cache", "check_numerics", "checkpoint", "debug", "passes",
           "optimizer", "monitor", "micro_batches", "num_threads", "data_parallel",
           "flush_denormals")


def check_options(options: Mapping[str, Any]) -> None:
    """The options of ``compile``: a wrong type or value is a GraphError naming the option (also
    a TypeError or ValueError, as Python's own would be)."""
    level = options.get("opt_level", 2)
    if not isinstance(level, int) or isinstance(level, bool):
        raise GraphArgumentTypeError(f"opt_level must be an int 0..3, got {level!r}")
    if level not in (0, 1, 2, 3):
        raise GraphCallError(f"opt_level must be 0, 1, 2 or 3, got {level}")
    backend = options.get("backend", "native")
    if backend not in BACKENDS:
        raise GraphCallError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got "
                             f"{backend!r}")
    for flag in ("cache", "check_numerics", "debug", "monitor", "flush_denormals"):
        value = options.get(flag)
        if value is not None and not isinstance(value, (bool, np.bool_)):
            raise GraphArgumentTypeError(f"{flag} must be True or False, got {value!r}")
    passes = options.get("passes")
    if passes is not None:
        if not isinstance(passes, str):
            raise GraphArgumentTypeError(f"passes must be a pipeline spec (a str such as "
                                         f"'autodiff,simplify,dce'), got {passes!r}")
        graphc.passes.parse_pipeline(passes)
    if options.get("optimizer") is not None:
        optim.check(options["optimizer"])
    elif options.get("monitor") or options.get("micro_batches", 1) != 1:
        raise GraphCallError("monitor= and micro_batches= shape train_step, which needs an "
                             "optimizer: compile(..., optimizer=graphc.optim.Adam())")
    train.check_micro_batches(options.get("micro_batches", 1))
    if options.get("data_parallel") is not None:
        distributed.check(options["data_parallel"], options.get("optimizer"))
    threads = options.get("num_threads")
    if threads is not None and (not isinstance(threads, (int, np.integer)) or
                                isinstance(threads, bool) or not 1 <= threads <= 256):
        raise GraphCallError(f"num_threads must be an int from 1 to 256 (or None: "
                             f"GRAPHC_NUM_THREADS, else every core), got {threads!r}")


def _seed(seed: Any) -> int:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise GraphArgumentTypeError(f"seed must be an int, got {seed!r}")
    if seed < 0:
        raise GraphCallError(f"seed must be >= 0, got {seed}")
    return int(seed)


def _too_big(e: ValueError) -> bool:
    """NumPy's way of saying an array cannot be allocated at all."""
    return any(w in str(e) for w in ("too big", "Maximum allowed size", "array is too large"))


@public_methods        # a GraphError from a method has a traceback that ends at the user's call
class Model:
    """A compiled ``.graph`` graph. Call it with NumPy arrays by name."""

    def __init__(self, graph: GraphDef, *, opt_level: int = 2, backend: str = "native",
                 cache: bool = True, check_numerics: bool = False,
                 verify_each: bool | None = None, checkpoint: Any = None,
                 debug: bool | None = None, passes: str | None = None, optimizer: Any = None,
                 monitor: bool = False, micro_batches: int = 1,
                 num_threads: int | None = None, data_parallel: Any = None,
                 flush_denormals: bool = False) -> None:
        check_options(dict(opt_level=opt_level, backend=backend, cache=cache,
                           check_numerics=check_numerics, debug=debug, passes=passes,
                           optimizer=optimizer, monitor=monitor, micro_batches=micro_batches,
                           num_threads=num_threads, data_parallel=data_parallel,
                           flush_denormals=flush_denormals))
        self._options = dict(opt_level=opt_level, backend=backend, cache=cache,
                             check_numerics=check_numerics, verify_each=verify_each,
                             checkpoint=checkpoint, debug=debug, passes=passes,
                             optimizer=optimizer, monitor=monitor, micro_batches=micro_batches,
                             num_threads=num_threads, data_parallel=data_parallel,
                             flush_denormals=bool(flush_denormals))
        self.graph = graph
        self.name = graph.name
        self.opt_level = opt_level
        self.backend = backend
        self.inputs: dict[str, TensorType] = {d.name: d.type for d in graph.inputs}
        self.params: dict[str, TensorType] = {d.name: d.type for d in graph.params}
        self.outputs: dict[str, TensorType] = dict(zip(graph.forward.result_names,
                                                       (r.type for r in graph.forward.results)))
        self.grad_wrt: tuple[str, ...] = graph.grad.wrt if graph.grad else ()
        self.funcs = build_funcs(graph)
        self.optimizer = optimizer               # train_step's, or None: no train_step
        self._train: train.TrainSpec | None = None
        self._split: train.SplitSpec | None = None    # data_parallel's halves of train_step
        self.data_parallel = data_parallel             # a graphc.distributed communicator
        if optimizer is not None:
            try:
                self.funcs["train_step"], self._train = train.build(
                    graph, optimizer, monitor=bool(monitor), micro_batches=micro_batches)
                if data_parallel is not None:
                    self.funcs[train.GRAD], self.funcs[train.UPDATE], self._split = \
                        train.build_split(graph, optimizer, monitor=bool(monitor),
                                          micro_batches=micro_batches)
            except GraphError as e:
                raise attach_snippet(e, graph.source) if e.loc and \
                    e.loc.file == graph.filename else e
        # the pass pipeline: a spec (passes=) or the -O level's; the required passes added
        self.pipeline = graphc.passes.pipeline(passes if passes is not None else opt_level)
        # verify (and print/read back) the IR after every pass: $GRAPHC_VERIFY_EACH (the test
        # suite sets it), else only at -O0, as its job is to be the trustworthy build
        self.verify_each = (graphc.passes.manager.verify_from_env() or opt_level == 0) \
            if verify_each is None else verify_each
        # checkpoint: None, "elementwise", "all", a byte budget or {"budget": b, "N": n, ...}
        try:
            self.checkpoint = checkpointing.policy(checkpoint)
        except (OverflowError, ValueError) as e:     # int(1e400), int(nan)
            if isinstance(e, GraphError):
                raise
            raise GraphCallError(f"checkpoint={checkpoint!r} is not a usable byte budget: "
                                 f"{e}") from None
        self.compile_stats = CompileStats()      # where compile time goes (runtime/stats.py)
        self.check_numerics = check_numerics    # one op per kernel, so a NaN names its op
        # a whole-model cache hit loads what the passes and the planner made last time
        store, key, hit = None, None, None
        if backend == "native" and cache:
            store, key, hit = self._bundle(debug, num_threads)
        keys = None
        if hit is not None:
            self.optimized, self._requirements, keys, said = hit
            for text in said:
                warn(GraphWarning(text))
        else:
            said = self._run_passes(graph)
        self._binders = {k: Binder(f, self._requirements[k], sorted(body_symbols(f)))
                         for k, f in self.optimized.items()}
        self._native = None
        if backend == "native":
            from graphc.runtime import compile_module
            self._native = compile_module(self.optimized, opt_level=opt_level, cache=cache,
                                          check_numerics=check_numerics, debug=debug,
                                          compile_stats=self.compile_stats,
                                          threads=num_threads, keys=keys,
                                          flush_denormals=bool(flush_denormals))
            if key is not None and hit is None:
                entries = self._native.entries
                modelcache.save(store, key, (self.optimized, self._requirements,
                                             {n: e.key for n, e in entries.items()},
                                             said))
            self._native_signatures()

    def _run_passes(self, graph: GraphDef) -> tuple[str, ...]:
        """Run the pipeline on every entry point; returns the GraphWarnings it gave (shown
        now, and stored with a whole-model cache entry to be shown again on a hit)."""
        ran: list[Any] = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self.optimized = {k: self._pipeline(k, stats=ran) for k in self.funcs}
            try:
                self._requirements = {k: shapecheck.requirements(f) + shapecheck.limits(f)
                                      for k, f in self.optimized.items()}
            except GraphError as e:
                raise attach_snippet(e, graph.source) if e.loc and \
                    e.loc.file == graph.filename else e
        once = list({(str(w.message), w.category): w for w in caught}.values())
        for w in once:                  # each entry point's autodiff says the same once
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        for p in ran:
            self.compile_stats.add_pass(p.name, p.seconds)
        return tuple(str(w.message) for w in once if issubclass(w.category, GraphWarning))

    def _bundle(self, debug: bool | None, threads: int | None) -> tuple[Any, str | None, Any]:
        """The disk cache, the key of this model's whole-model entry, and that entry if it is
        there (graphc/modelcache.py)."""
        from graphc.runtime import jit, pool
        from graphc.runtime.cache import cache_dir
        if cache_dir() is None:
            return None, None, None
        with self.compile_stats.phase("cache key"):
            options = {k: v for k, v in self._options.items()
                       if k not in ("verify_each", "cache", "backend", "data_parallel",
                                    "debug", "num_threads")}
            if debug is None:
                debug = os.environ.get("GRAPHC_DEBUG", "") not in ("", "0")
            options.update(debug=debug, data_parallel=self.data_parallel is not None,
                           num_threads=pool.default_threads() if threads is None else threads)
            key = modelcache.key(self.graph, options, jit.host_id())
        if key is None:
            return None, None, None
        store = jit.open_cache()
        with self.compile_stats.phase("cache read"):
            hit = modelcache.load(store, key)
        return store, key, hit if hit is not None and len(hit) == 4 else None

    def _pipeline(self, name: str, after: str | None = None, stats: list | None = None) -> Func:
        """Run the pass pipeline on entry point ``name`` (up to pass ``after``)."""
        options: dict[str, Any] = {"checkpoint": checkpointing.Options(
            self.checkpoint, self._forward_results(name))}
        if self.check_numerics:     # each op its own kernel: a NaN is caught where it is made
            options["fusion"] = fusion.Options(policy="single")
        return graphc.passes.run_pipeline(self.funcs[name], self.pipeline, after=after,
                                          verify_each=self.verify_each, options=options,
                                          stats=stats)

    def _forward_results(self, name: str) -> int:
        """How many leading results of entry ``name`` the forward computes (the rest are the
        backward's: gradients, updated params)."""
        if name == "train_step" and self._train is not None:
            return self._train.forward_results
        if name in (train.GRAD, train.UPDATE):   # the gradients' buffer; the update
            return 0
        return 1 if name == "sgd_step" else len(self.outputs)

    # -- calling -------------------------------------------------------------------------------
    def _prepare(self, entry: str, given: Mapping[str, Any]
                 ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """The arguments checked by name, converted without changing a value, and the dims
        they bind, checked against every assumption of the compiled code (ir/args.py)."""
        self._entry(entry)                    # a clear error for a missing backward/sgd_step
        return self._binders[entry].bind(given)

    def _entry(self, entry: str) -> Func:
        if entry == "train_step" and entry not in self.optimized:
            raise GraphCallError("this model has no train_step: compile it with an optimiser, "
                                 "e.g. compile(..., optimizer=graphc.optim.Adam(lr=1e-3))")
        if entry not in self.optimized:
            raise GraphCallError(f"graph '{self.name}' has no grad line, so it has no {entry}; "
                                 f"add e.g. 'grad loss' to the graph")
        return self.optimized[entry]

    def _run(self, entry: str, prepared: tuple[dict[str, np.ndarray], dict[str, int]],
             inplace: dict[int, str] | None = None) -> list[np.ndarray]:
        try:
            return self._run_on_backend(entry, *prepared, inplace)
        except GraphError as e:           # run-time errors point at the .graph line, with a caret
            raise attach_snippet(e, self.graph.source) if e.loc and \
                e.loc.file == self.graph.filename else e
        except (MemoryError, ValueError) as e:
            if isinstance(e, ValueError) and not _too_big(e):
                raise
            raise GraphCallError(f"out of memory running {self.name}.{entry} with these "
                                 f"argument shapes") from None

    def _run_on_backend(self, entry: str, args: dict[str, np.ndarray], env: dict[str, int],
                        inplace: dict[int, str] | None) -> list[np.ndarray]:
        if self._native is not None:
            return self._native.run(entry, args, env, inplace)
        outs = [np.array(o) for o in interp.run(self._entry(entry), args,
                                                 check_numerics=self.check_numerics)]
        for i, name in (inplace or {}).items():
            args[name][...] = outs[i]
        return outs

    _sgd_fixed: tuple[str, tuple[str, ...], list[np.dtype]] | None = None

    def _sgd_setup(self) -> tuple[str, tuple[str, ...], list[np.dtype]]:
        """What every sgd_step call needs from the entry: the learning rate's param name, the
        params it updates and their dtypes."""
        func = self._entry("sgd_step")
        updated = func.result_names[1:]
        self._lr_arrays: dict[float, np.ndarray] = {}
        self._sgd_fixed = (func.params[-1].attrs["name"], updated,
                           [self.params[n].dtype.np for n in updated])
        return self._sgd_fixed

    def _lr_array(self, lr: float) -> np.ndarray:
        a = np.array(lr, np.float64)
        a.flags.writeable = False
        if len(self._lr_arrays) >= 16:
            self._lr_arrays.clear()
        self._lr_arrays[lr] = a
        return a

    # the addresses of the native methods' tables (0: the Python path)
    _native_state = 0           # __call__
    _native_vg_state = 0        # value_and_grad
    _native_sgd_state = 0       # sgd_step
    _native_train_state = 0     # train_step (its results: _train_outs)

    def _native_signatures(self) -> None:
        """The tables through which ``__call__``, ``value_and_grad``, ``sgd_step`` and
        ``train_step`` (its ``_train_outs``) run natively (runtime/fastmethod.py); the methods
        are made the first time a native model is."""
        from graphc.runtime import call, fastmethod
        if "methods" not in _NATIVE_CALL:
            # "name(signature)\n--\n\n" first: what inspect.signature reads of a builtin
            made = [fastmethod.native_method(Model, attr, py, f"{name}{sig}\n--\n\n"
                                             f"{py.__doc__ or ''}", name, _failed(table))
                    for name, attr, py, sig, table in _NATIVE_METHODS]
            _NATIVE_CALL["methods"] = made
            if None not in made:
                for (name, *_), method in zip(_NATIVE_METHODS, made):
                    setattr(Model, name, method)
        if None in _NATIVE_CALL["methods"]:
            return
        self._native_steps()
        names = list(self._binders["forward"].signature)
        e = self._native.entries["forward"]
        self._signatures = call.Signatures(e.plan, e.address, self._native.arena, names,
                                           list(self.outputs))
        self._native_state = self._signatures.address
        e = self._native.entries.get("backward")
        if e is not None and list(self._binders["backward"].signature) == names:
            self._vg_signatures = call.Signatures(
                e.plan, e.address, self._native.arena, names,
                list(self.outputs) + list(self.grad_wrt), split=len(self.outputs))
            self._native_vg_state = self._vg_signatures.address

    def _native_steps(self) -> None:
        """The tables of sgd_step and train_step: the arrays are every param but the learning
        rate (a float); the graph's params come from the params dict, the optimiser's state
        from the state dict, the inputs by keyword; each update goes into the caller's array."""
        from graphc.runtime import call
        e = self._native.entries.get("sgd_step")
        if e is not None:
            func = self.optimized["sgd_step"]
            names = [p.attrs["name"] for p in func.params[:-1]]
            self._sgd_signatures = call.Signatures(
                e.plan, e.address, self._native.arena, names, list(func.result_names),
                split=call.Signatures.ALONE, dicts=1,
                sources=[0 if n in self.params or n in ("params", "lr") else -1
                         for n in names],       # an input named lr cannot be a keyword
                targets=[-1] + [names.index(n) for n in func.result_names[1:]])
            self._native_sgd_state = self._sgd_signatures.address
        e = self._native.entries.get("train_step")
        if e is not None and self._train is not None and self.data_parallel is None:
            func = self.optimized["train_step"]
            names = [p.attrs["name"] for p in func.params[:-1]]
            state = {train.state_arg(k): k for k, _ in self._train.state}
            updated = {n for n, _ in self._train.updated}
            self._train_signatures = call.Signatures(
                e.plan, e.address, self._native.arena, names, list(func.result_names),
                split=call.Signatures.ALL, dicts=2,
                sources=[0 if n in self.params or n in ("params", "state", "lr") else
                         1 if n in state else -1 for n in names],
                keys=[state.get(n, n) for n in names],
                targets=[names.index(n) if n in updated else -1 for n in func.result_names])
            self._native_train_state = self._train_signatures.address

    def __call__(self, **arrays: Any) -> dict[str, np.ndarray]:
        """The outputs of the graph for these inputs and params (by name)."""
        prepared = self._prepare("forward", arrays)
        outs = self._run("forward", prepared)
        if self._native_state:          # later calls like this one skip Python
            _install(self._signatures, prepared, arrays)
        return dict(zip(self.outputs, outs))

    def value_and_grad(self, **arrays: Any) -> tuple[dict[str, np.ndarray],
                                                      dict[str, np.ndarray]]:
        """The outputs, and the gradients of the grad target with respect to the graph's
        ``grad ... wrt`` names (by name)."""
        prepared = self._prepare("backward", arrays)
        outs = self._run("backward", prepared)
        if self._native_vg_state:       # later calls like this one skip Python
            _install(self._vg_signatures, prepared, arrays)
        n = len(self.outputs)
        return dict(zip(self.outputs, outs[:n])), dict(zip(self.grad_wrt, outs[n:]))

    def sgd_step(self, params: dict[str, np.ndarray], lr: float, **inputs: Any) -> np.ndarray:
        """One fused forward + backward + ``p -= lr * g`` step; updates ``params`` in place and
        returns the grad target at the old values. (An input that is itself named ``lr`` goes
        in the ``params`` dict.)"""
        fixed = self._sgd_fixed or self._sgd_setup()
        lr_name, updated, want = fixed
        if type(lr) is float and lr:     # the same 0-d array for the same rate, step after step
            cached = self._lr_arrays.get(lr)
            lr = self._lr_array(lr) if cached is None else cached
        prepared = self._prepare("sgd_step", {**params, **inputs, lr_name: lr})
        args = prepared[0]
        for name, dt in zip(updated, want):
            p = params.get(name)
            if type(p) is np.ndarray and p.dtype is dt and p.flags.writeable:
                continue                                    # the usual case, first
            if not isinstance(p, np.ndarray) or not p.flags.writeable or \
                    not np.can_cast(dt, p.dtype, "same_kind"):
                raise GraphCallError(f"sgd_step updates '{name}' in place, so params['{name}'] "
                                     f"must be a writeable float NumPy array "
                                     f"({self.params[name]})")
        # results go straight into the caller's arrays when they are usable as buffers
        direct = {i + 1: n for i, n in enumerate(updated) if args[n] is params[n]}
        outs = self._run("sgd_step", prepared, inplace=direct)
        for i, name in enumerate(updated):
            if args[name] is not params[name]:
                params[name][...] = outs[i + 1]
        if self._native_sgd_state and len(direct) == len(updated):
            given = {**params, **inputs}    # later calls like this one skip Python
            if all(args[n] is given.get(n) for n in self._sgd_signatures.names):
                self._sgd_signatures.install([args[n] for n in self._sgd_signatures.names],
                                             prepared[1])
        return outs[0]

    def train_step(self, params: dict[str, np.ndarray], state: dict[str, np.ndarray],
                   lr: float | None = None, **inputs: Any) -> dict[str, Any]:
        """One optimiser step in one call (forward, backward, clipping, update): updates
        ``params`` and ``state`` in place and returns the stats (``loss`` at the old params,
        ``grad_norm`` before clipping, ``nonfinite``, ``skipped``; docs/training.md). ``lr``
        defaults to the optimiser's. With ``data_parallel=comm``, the gradients are averaged
        over every rank's examples between the backward and the update (docs/distributed.md)."""
        self._entry("train_step")
        if self.data_parallel is not None:
            return distributed.train_step(self, self.data_parallel, params, state, lr, inputs)
        assert self._train is not None
        # a native method (where there is one): a call like an earlier one skips Python
        outs = self._train_outs(params, state, self.optimizer.lr if lr is None else lr,
                                **inputs)
        return train.stats(self._train, outs)

    def _train_outs(self, params: dict[str, np.ndarray], state: dict[str, np.ndarray],
                    lr: Any, **inputs: Any) -> tuple[np.ndarray, ...]:
        """train_step's results: the Python path, which checks everything (the native
        method falls back to it)."""
        spec = self._train
        assert spec is not None
        given, targets = train.arguments(spec, self.optimizer, params, state, lr, inputs)
        prepared = self._prepare("train_step", given)
        args, first = prepared[0], spec.updates_at
        # results go straight into the caller's arrays when they are usable as buffers
        direct = {first + i: n for i, (n, _) in enumerate(spec.updated) if args[n] is targets[n]}
        outs = self._run("train_step", prepared, inplace=direct)
        for i, (name, _) in enumerate(spec.updated):
            if args[name] is not targets[name]:
                targets[name][...] = outs[first + i]
        if self._native_train_state and len(direct) == len(spec.updated):
            table = self._train_signatures    # later calls like this one skip Python
            where = (inputs, params, state)
            if all(args[n] is where[s + 1].get(k) for n, s, k in
                   zip(table.names, table.sources, table.keys)):
                table.install([args[n] for n in table.names], prepared[1])
        return tuple(outs)

    def init_state(self, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The optimiser's state for ``params`` before the first step: zeros for every slot
        (``"W1.exp_avg"``, ...) and ``"step"``, an int64 count of the steps taken."""
        self._entry("train_step")
        assert self._train is not None
        return train.init_state(self._train, params)

    def init_params(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Every param drawn by its initializer; one seed reproduces them all."""
        try:
            return initializers.init_params(self.graph.params, _seed(seed))
        except (MemoryError, ValueError) as e:
            if isinstance(e, GraphError) or isinstance(e, ValueError) and not _too_big(e):
                raise
            raise GraphCallError(f"out of memory initialising the params of {self.name}: "
                                 f"{', '.join(f'{d.name}: {d.type}' for d in self.graph.params)}"
                                 ) from None

    def release_memory(self) -> None:
        """Free the workspace (arena) every thread holds for this model; the next call
        allocates what it needs again."""
        if self._native is not None:
            self._native.release_memory()

    # -- inspection ----------------------------------------------------------------------------
    def dump_ir(self, func: str | None = None, after: str | None = None) -> str:
        """The optimised IR of ``func`` (default: every function), or as it was after pass
        ``after`` (``ir-unopt`` for none)."""
        from graphc.ir.text import print_func
        names = [func] if func else list(self.funcs)
        texts = []
        for name in names:
            if name not in self.funcs:
                raise GraphCallError(f"no function '{name}'" + suggest(name, list(self.funcs)))
            if after is None:
                f = self.optimized[name]
            elif after == "ir-unopt":
                f = self.funcs[name]
            else:
                f = self._pipeline(name, after)
            texts.append(print_func(f) + self._fusion_notes(name, after))
        return "\n\n".join(texts)

    def _fusion_notes(self, name: str, after: str | None) -> str:
        """After the fusion pass, one comment line (which ``ir.parse`` skips) per value that
        was kept out of a kernel that uses it, saying why."""
        if after != "fusion":
            return ""
        names = [s.name for s in self.pipeline]
        step = self.pipeline[names.index("fusion")]
        o = dataclasses.replace(fusion.Options(), **dict(step.given))
        if self.check_numerics:
            o = dataclasses.replace(o, policy="single")
        before = self._pipeline(name, names[names.index("fusion") - 1])
        return "".join(f"\n# {note}" for note in fusion.explain(before, o.recompute, o.policy))

    def memory_plan(self, func: str | None = None, **dims: int) -> Any:
        """The memory plan of entry ``func`` (default: backward if the graph has a grad line,
        else forward) at the binding ``dims`` (e.g. ``N=256``): ``peak_bytes`` (the arena the
        runtime allocates), ``peak_formula``, ``buffers`` (size, lifetime, slot of each kernel's
        result) and ``saved`` (forward results the backward reads)."""
        from graphc.passes import memplan
        name = func or ("backward" if "backward" in self.funcs else "forward")
        if name not in self.funcs and name not in ("backward", "sgd_step", "train_step"):
            raise GraphCallError(f"no function '{name}'" + suggest(name, list(self.funcs)))
        f = self._entry(name)
        for s, n in dims.items():
            if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
                raise GraphArgumentTypeError(f"memory_plan: dim {s} must be an int, got {n!r}")
            if n < 0:
                raise GraphCallError(f"memory_plan: dim {s} must be >= 0, got {n}")
        if name == "train_step" and self._train is not None:
            dims = train.micro_dims(self._train, dims)
        missing = sorted({s for p in f.params for s in p.type.symbols} - set(dims))
        if missing:
            raise GraphCallError(f"memory_plan needs a value for {', '.join(missing)} "
                                 f"(e.g. memory_plan({missing[0]}=256))")
        try:
            return memplan.report(f, dims, self._forward_results(name))
        except ValueError:
            raise GraphCallError(f"{name} has no memory plan: its pipeline has no fusion and "
                                 f"memplan passes") from None

    def to_networkx(self, func: str = "forward", *, nested: bool = True) -> Any:
        """The optimised IR of ``func`` as a ``networkx.MultiDiGraph`` (one node per value with
        its op, type and source location; one edge per operand use), for users' own analyses."""
        from graphc.ir.graphs import to_networkx
        if func not in self.funcs:
            raise GraphCallError(f"no function '{func}'" + suggest(func, list(self.funcs)))
        return to_networkx(self.optimized[func], nested=nested)

    def to_dot(self, func: str = "forward") -> str:
        """Graphviz DOT of entry point ``func`` after the passes: its kernels as clusters
        labelled with their body and ``.graph`` lines, edges with their types."""
        from graphc.dot import model_to_dot
        return model_to_dot(self, func)

    def llvm_ir(self, func: str = "forward") -> str:
        return self._need_native().llvm_ir(func)

    def asm(self, func: str = "forward") -> str:
        return self._need_native().asm(func)

    def _need_native(self) -> Any:
        if self._native is None:
            raise GraphCallError("this model runs on the interpreter (backend='interp'); "
                                 "compile with backend='native' to see LLVM IR or assembly")
        return self._native

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """A model pickles (and deep-copies) as its source, consts and options; unpickling
        compiles it again, which the disk cache makes cheap. So models cross process
        boundaries."""
        g = self.graph
        return _rebuild, (g.source, g.filename, self.name, self._options, g.consts)

    def __repr__(self) -> str:
        ins = ", ".join(f"{n}: {t}" for n, t in {**self.inputs, **self.params}.items())
        return f"<graphc.Model {self.name}({ins}) -> {', '.join(self.outputs)}>"


# what the native methods fall back to (all the checks, every error)
_PY_CALL, _PY_VG, _PY_SGD = Model.__call__, Model.value_and_grad, Model.sgd_step
_PY_TRAIN = Model._train_outs
_NATIVE_METHODS = (     # name, table address attribute, fallback, signature, table
    ("__call__", "_native_state", _PY_CALL, "($self, /, **arrays)", "_signatures"),
    ("value_and_grad", "_native_vg_state", _PY_VG, "($self, /, **arrays)", "_vg_signatures"),
    ("sgd_step", "_native_sgd_state", _PY_SGD, "($self, params, lr, **inputs)",
     "_sgd_signatures"),
    ("_train_outs", "_native_train_state", _PY_TRAIN, "($self, params, state, lr, **inputs)",
     "_train_signatures"))
_NATIVE_CALL: dict[str, Any] = {}


def _failed(table: str) -> Any:
    """What a native method calls when a call that wrote into its arguments failed (it is
    not run again): raise the error, described by ``model.<table>``."""
    @public
    def failed(model: Model, what: bytes) -> None:
        e = getattr(model, table).failure(what)
        raise attach_snippet(e, model.graph.source) if e.loc and \
            e.loc.file == model.graph.filename else e
    return failed


def _rebuild(source: str, filename: str, name: str, options: dict[str, Any],
             consts: tuple[tuple[str, Any], ...] = ()) -> Model:
    """The model ``__reduce__`` describes: its graph elaborated with the consts it had (those
    ``compile(consts=...)`` set included)."""
    from graphc.elaborate import elaborate_source
    return Model(elaborate_source(source, filename, dict(consts))[name], **options)


def _install(signatures: Any, prepared: Any, arrays: dict[str, Any]) -> None:
    """Cache the signature of a call whose arguments were used as given (no array converted),
    so that the native method runs the next call like it without Python."""
    args = prepared[0]
    if all(args[n] is arrays[n] for n in args):
        signatures.install(list(args.values()), prepared[1])
