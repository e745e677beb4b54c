"""What each ``graphc`` subcommand does (graphc/cli.py parses the command line and turns
errors into exit codes)."""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import time
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import graphc
import graphc.passes
from graphc.ir.errors import GraphError
from graphc.ir.ops.registry import suggest

# the optimisers --optimizer names, at their default settings
OPTIMIZERS = {"sgd": lambda o: o.SGD(), "adam": lambda o: o.Adam(), "adamw": lambda o: o.AdamW(),
              "rmsprop": lambda o: o.RMSprop()}


def _bindings(items: Sequence[str]) -> dict[str, int]:
    out = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.strip().isidentifier() or not value.strip().isdigit():
            raise SystemExit(_usage(f"--bind takes NAME=N with N >= 0, got {item!r}"))
        out[name.strip()] = int(value)
    return out


def seed_arg(text: str) -> int:
    """``--seed``: NumPy's SeedSequence takes integers >= 0 only."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"takes an integer >= 0, got {text!r}")
    return value


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n / 1024:.4g} PiB"


def _fits(types: Mapping[str, Any], env: Mapping[str, int], itemsize: int | None,
          bind: Sequence[str]) -> None:
    """Refuse --bind values whose arguments alone cannot fit in this machine's memory (``itemsize``
    overrides the dtypes': ``check`` works in float64), before NumPy fails to allocate them."""
    need = sum(math.prod(ty.concrete(env)) * (itemsize or ty.dtype.np.itemsize)
               for ty in types.values())
    have = _memory_bytes()
    if have is not None and need > have:
        raise graphc.GraphCallError(
            f"{' '.join('--bind ' + b for b in bind) or 'these dims'}: the arguments alone need "
            f"{_human(need)}, and this machine has {_human(have)}")


def _usage(msg: str) -> int:
    print(f"graphc: {msg}", file=sys.stderr)
    return 2


def _write(text: str | bytes, out: str | None) -> None:
    if out is None:
        if isinstance(text, bytes):
            sys.stdout.buffer.write(text)
        else:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    try:
        with open(out, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
    except OSError as e:
        raise graphc.GraphFileError(f"cannot write {out}: {e.strerror or e}") from None


def _compile(args: argparse.Namespace, **kw: Any) -> graphc.Model:
    try:
        return graphc.compile(args.file, graph=args.graph, **kw)
    except GraphError as e:             # the API's wording, said as the command line's flag
        if "several graphs" in e.message:
            e.message = re.sub(r"\bgraph=\S*", "--graph NAME", e.message)
            e.args = (e.message,)
        raise


def _check_dims(model: graphc.Model, bind: Mapping[str, int]) -> str | None:
    """A usage message for a ``--bind`` of a dim the graph does not have, else None."""
    known = sorted({s for ty in {**model.inputs, **model.params}.values() for s in ty.symbols})
    for name in bind:
        if name not in known:
            dims = f"its dims: {', '.join(known)}" if known else "it has no symbolic dims"
            return (f"--bind {name}=...: graph '{model.name}' has no dim '{name}' ({dims})"
                    + suggest(name, known))
    return None


def _binding_line(env: Mapping[str, int]) -> str:
    return "binding " + (" ".join(f"{k}={v}" for k, v in env.items()) or
                         "(none: no symbolic dims)")


def _need_func(model: graphc.Model, name: str) -> str:
    if name not in model.funcs:
        raise graphc.GraphCallError(f"--func {name}: {model.name} has no function '{name}' "
                                    f"(it has {', '.join(model.funcs)})"
                                    + suggest(name, list(model.funcs)))
    return name


def cmd_compile(args: argparse.Namespace) -> int:
    from graphc import dot
    if args.emit == "obj" and args.o is None:
        return _usage("--emit obj needs -o FILE")
    if args.emit in ("svg", "png"):
        dot.check_graphviz(args.emit)           # before compiling: say it at once
    # --time-passes times the native code generator's phases too, all of them: no cache
    native = args.emit in ("llvm", "asm", "obj") or args.time_passes
    kw: dict[str, Any] = {"cache": False} if args.time_passes else {}
    if args.optimizer:
        from graphc import optim
        kw["optimizer"] = OPTIMIZERS[args.optimizer](optim)
    model = _compile(args, opt_level=args.O, backend="native" if native else "interp",
                     passes=args.passes, **kw)
    chosen = [_need_func(model, args.func)] if args.func else list(model.funcs)
    one = chosen[0] if args.func else "forward"
    label = f"-O{args.O}" if args.passes is None else \
        f"--passes {graphc.passes.format_pipeline(model.pipeline)}"
    if args.time_passes:
        for name in chosen:
            stats: list[Any] = []
            graphc.passes.run_pipeline(model.funcs[name], model.pipeline, stats=stats)
            print(f"=== {model.name}.{name} ({label})\n{graphc.passes.format_stats(stats)}",
                  file=sys.stderr)
        print(f"=== {model.name}: compile phases, front end to machine code (all entry "
              f"points, no cache)\n{model.compile_stats.table()}", file=sys.stderr)
    if args.dump_after:
        names = [s.name for s in model.pipeline]
        passes = names if args.dump_after == "all" else [args.dump_after]
        for p in passes:
            if p not in names:
                return _usage(f"no pass '{p}' in the {label} pipeline (try: "
                              f"{', '.join(names)})")
        _write("".join(f"// ----- after {p} -----\n{model.dump_ir(args.func, after=p)}\n"
                       for p in passes), args.o)
        return 0
    if args.emit in ("ir", "ir-unopt"):
        _write(model.dump_ir(args.func, after="ir-unopt" if args.emit == "ir-unopt" else None),
               args.o)
    elif args.emit == "llvm":
        _write(model.llvm_ir(one), args.o)
    elif args.emit == "asm":
        _write(model.asm(one), args.o)
    elif args.emit == "obj":
        assert args.o is not None
        # one object file per entry point: OUT.o -> OUT.forward.o, OUT.backward.o, ...
        stem = args.o.removesuffix(".o")
        for name in chosen:
            _write(model._need_native().object_code(name), f"{stem}.{name}.o")
            print(f"wrote {stem}.{name}.o", file=sys.stderr)
    else:                                       # dot, svg, png
        text = dot.model_to_dot(model, one)
        _write(text if args.emit == "dot" else dot.render(text, args.emit), args.o)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from graphc.check import binding, check_all, format_report
    bind = _bindings(args.bind)
    model = _compile(args, backend="interp")
    bad = _check_dims(model, bind)
    if bad:
        return _usage(bad)
    env = binding(model.graph, bind)
    types = {**model.inputs, **model.params}
    _fits(types, env, 8, args.bind)
    print(f"graph {model.name}: {_binding_line(env)}, seed {args.seed}")
    report = check_all(model.graph, bind, seed=args.seed)
    print(format_report(model.graph, report))
    if report.failed:
        print(f"check FAILED for {', '.join(report.failed)}", file=sys.stderr)
        return 1
    return 0


def _load_npz(path: str) -> dict[str, np.ndarray]:
    """Arrays by name from an ``.npz`` file; anything else is a GraphFileError, not a crash."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (AttributeError, TypeError):           # np.load gave a plain array (.npy)
        raise graphc.GraphFileError(f"{path} is not an .npz archive of named arrays "
                                    f"(save one with numpy.savez)") from None
    except OSError as e:                           # missing, permissions, ...
        raise graphc.GraphFileError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception:  # noqa: BLE001               # not a zip at all, a corrupt one, pickles
        raise graphc.GraphFileError(f"{path} is not an .npz archive of named arrays "
                                    f"(save one with numpy.savez)") from None


def cmd_run(args: argparse.Namespace) -> int:
    model = _compile(args)
    inputs = _load_npz(args.inputs)
    params = _load_npz(args.params) if args.params else model.init_params(args.seed)
    # one archive may hold the params too (what `numpy.savez(f, **inputs, **params)` wrote):
    # they count; a --params archive wins over them, and over init_params when absent
    arrays = {**params, **inputs, **(params if args.params else {})}
    out = model(**arrays)
    if args.o:
        _save_npz(args.o, out)
    else:
        for name, a in out.items():
            print(f"{name}: {a.dtype}{list(a.shape)}\n{a}")
    return 0


def _save_npz(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    """An ``.npz`` archive (what numpy.savez writes) at exactly ``path``: savez would add
    ``.npz`` to a bare name, and cannot store an output named ``file``."""
    try:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
            for name, a in arrays.items():
                with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(a), allow_pickle=False)
    except OSError as e:
        raise graphc.GraphFileError(f"cannot write {path}: {e.strerror or e}") from None


def _time(fn: Any, repeat: int = 20) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cmd_bench(args: argparse.Namespace) -> int:
    bind = _bindings(args.bind)
    model = _compile(args)
    bad = _check_dims(model, bind)
    if bad:
        return _usage(bad)
    from graphc.check import random_args
    types = {**model.inputs, **model.params}
    env = {s: bind.get(s, 32) for s in sorted({s for ty in types.values() for s in ty.symbols})}
    _fits(model.inputs, env, None, args.bind)
    inputs = random_args(model.inputs, env, np.random.default_rng(args.seed))
    params = model.init_params(args.seed)
    print(f"graph {model.name}: {_binding_line(env)}, seed {args.seed}")
    print(f"{'entry':<16} {'best of 20':>12}")
    print(f"{'forward':<16} {_time(lambda: model(**inputs, **params)) * 1e3:>10.3f}ms")
    if model.graph.grad is not None:
        print(f"{'value_and_grad':<16} "
              f"{_time(lambda: model.value_and_grad(**inputs, **params)) * 1e3:>10.3f}ms")
        print(f"{'sgd_step':<16} "
              f"{_time(lambda: model.sgd_step(params, 0.0, **inputs)) * 1e3:>10.3f}ms")
    return 0


def cmd_passes(args: argparse.Namespace) -> int:
    for step in graphc.passes.pipeline(args.O if args.passes is None else args.passes):
        print(f"{step!s:<16} {graphc.passes.PASSES[step.name].doc}")
    return 0


def cmd_opt(args: argparse.Namespace) -> int:
    """IR text in, the passes of ``-p SPEC`` run exactly as written (nothing added), IR text out,
    verified after every pass (as mlir-opt does)."""
    from graphc.ir.text import parse_funcs, print_func
    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8-sig") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise graphc.GraphFileError(f"cannot read {args.file}: "
                                    f"{getattr(e, 'strerror', None) or e}") from None
    steps = graphc.passes.parse_pipeline(args.p)
    funcs = parse_funcs(text, "<stdin>" if args.file == "-" else args.file)
    out = [graphc.passes.run_pipeline(f, steps, required=False) for f in funcs]
    _write("\n\n".join(print_func(f) for f in out), args.o)
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from graphc.runtime.cache import NO_DIR, ObjectCache, cache_dir, cache_limit
    root = cache_dir()
    if root is None:
        raise graphc.GraphFileError(NO_DIR)
    store = ObjectCache(root, cache_limit())
    if args.action == "clear":
        print(f"removed {store.clear()} entries from {root}")
        return 0
    info = store.info()
    limit = f"{_human(info.limit)} (GRAPHC_CACHE_MAX_MB)" if info.limit else "none"
    print(f"directory  {info.directory}\nentries    {info.entries}\n"
          f"size       {_human(info.bytes)}\nlimit      {limit}")
    return 0


def cmd_ops(args: argparse.Namespace) -> int:
    from graphc import opdoc
    _write(opdoc.render(args.name), None)
    return 0
