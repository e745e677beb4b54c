"""The ``graphc`` command line (README, "Command line"). User errors print one message and exit 1;
bad usage exits 2; nobody sees a traceback from inside graphc: a bug is one line asking for a
report, and a reader that closes the pipe early ends the command quietly."""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
import zipfile
from typing import Any, Mapping, Sequence

import numpy as np

import graphc
import graphc.passes
from graphc.ir.errors import GraphError, GraphWarning


def _bindings(items: Sequence[str]) -> dict[str, int]:
    out = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name.strip().isidentifier() or not value.strip().isdigit():
            raise SystemExit(_usage(f"--bind takes NAME=N with N >= 0, got {item!r}"))
        out[name.strip()] = int(value)
    return out


def _seed(text: str) -> int:
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
    return graphc.compile(args.file, graph=args.graph, **kw)


def cmd_compile(args: argparse.Namespace) -> int:
    # --time-passes times the native code generator's phases too
    native = args.emit in ("llvm", "asm", "obj") or args.time_passes
    model = _compile(args, opt_level=args.O, backend="native" if native else "interp",
                     passes=args.passes)
    label = f"-O{args.O}" if args.passes is None else \
        f"--passes {graphc.passes.format_pipeline(model.pipeline)}"
    if args.time_passes:
        for name, f in model.funcs.items():
            stats: list[Any] = []
            graphc.passes.run_pipeline(f, model.pipeline, stats=stats)
            print(f"=== {model.name}.{name} ({label})\n{graphc.passes.format_stats(stats)}",
                  file=sys.stderr)
        print(f"=== {model.name}: compile phases (all entry points)\n"
              f"{model.compile_stats.table()}", file=sys.stderr)
    if args.dump_after:
        names = [s.name for s in model.pipeline]
        chosen = names if args.dump_after == "all" else [args.dump_after]
        for p in chosen:
            if p not in names:
                return _usage(f"no pass '{p}' in the {label} pipeline (try: "
                              f"{', '.join(names)})")
        _write("".join(f"// ----- after {p} -----\n{model.dump_ir(after=p)}\n"
                       for p in chosen), args.o)
        return 0
    if args.emit in ("ir", "ir-unopt"):
        _write(model.dump_ir(after="ir-unopt" if args.emit == "ir-unopt" else None), args.o)
    elif args.emit == "llvm":
        _write("\n".join(model.llvm_ir(f) for f in model.funcs), args.o)
    elif args.emit == "asm":
        _write("\n".join(model.asm(f) for f in model.funcs), args.o)
    elif args.emit == "obj":
        if args.o is None:
            return _usage("--emit obj needs -o FILE")
        # one object file per entry point: OUT.o -> OUT.forward.o, OUT.backward.o, ...
        stem = args.o[:-2] if args.o.endswith(".o") else args.o
        for name in model.funcs:
            _write(model._need_native().object_code(name), f"{stem}.{name}.o")
            print(f"wrote {stem}.{name}.o", file=sys.stderr)
    elif args.emit == "dot":
        from graphc.dot import to_dot
        _write(to_dot(model.optimized["forward"]), args.o)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from graphc.check import check_gradients, format_table
    model = _compile(args, backend="interp")
    if model.graph.grad is None:
        print(f"graph '{model.name}' has no grad line: nothing to check", file=sys.stderr)
        return 1
    bind = _bindings(args.bind)
    types = {**model.inputs, **model.params}
    _fits(types, {s: bind.get(s, 3) for ty in types.values() for s in ty.symbols}, 8, args.bind)
    rows = check_gradients(model.graph, bind, seed=args.seed)
    print(format_table(rows))
    bad = [r.name for r in rows if not r.ok]
    if bad:
        print(f"gradient check FAILED for {', '.join(bad)}", file=sys.stderr)
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
    except Exception as e:                        # corrupt zip, pickle, permissions, ...
        raise graphc.GraphFileError(f"cannot read {path}: {e}") from None


def cmd_run(args: argparse.Namespace) -> int:
    model = _compile(args)
    inputs = _load_npz(args.inputs)
    params = _load_npz(args.params) if args.params else model.init_params(args.seed)
    out = model(**inputs, **params)
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
    model = _compile(args)
    from graphc.check import random_args
    bind = _bindings(args.bind)
    env = {s: bind.get(s, 32) for ty in model.inputs.values() for s in ty.symbols}
    _fits(model.inputs, env, None, args.bind)
    inputs = random_args(model.inputs, env, np.random.default_rng(args.seed))
    params = model.init_params(args.seed)
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="graphc", description="a static graph compiler for "
                                "neural networks")
    sub = p.add_subparsers(dest="cmd", required=True)

    def opt_level(sp: argparse.ArgumentParser) -> None:
        for n in range(4):
            sp.add_argument(f"-O{n}", dest="O", action="store_const", const=n)
        sp.set_defaults(O=2)

    c = sub.add_parser("compile", help="compile and print IR / LLVM IR / assembly")
    c.add_argument("file")
    c.add_argument("--graph")
    opt_level(c)
    c.add_argument("--passes", metavar="SPEC", help="the pass pipeline, e.g. "
                   "'autodiff,simplify,dce' (autodiff and dce are added if missing)")
    c.add_argument("--emit", choices=["ir", "ir-unopt", "llvm", "asm", "obj", "dot"],
                   default="ir")
    c.add_argument("--dump-after", metavar="PASS|all")
    c.add_argument("--time-passes", action="store_true")
    c.add_argument("-o", metavar="OUT")
    c.set_defaults(func=cmd_compile)

    k = sub.add_parser("check", help="check gradients against central differences")
    k.add_argument("file")
    k.add_argument("--graph")
    k.add_argument("--bind", action="append", default=[], metavar="N=4")
    k.add_argument("--seed", type=_seed, default=0)
    k.set_defaults(func=cmd_check)

    r = sub.add_parser("run", help="run the forward function on arrays from an .npz")
    r.add_argument("file")
    r.add_argument("--graph")
    r.add_argument("--inputs", required=True)
    r.add_argument("--params")
    r.add_argument("--seed", type=_seed, default=0,
                   help="init_params seed when --params is absent")
    r.add_argument("-o", metavar="OUT", help="write the outputs to OUT, an .npz archive under "
                   "exactly this name (no suffix is added); default: print them")
    r.set_defaults(func=cmd_run)

    b = sub.add_parser("bench", help="time forward / value_and_grad / sgd_step")
    b.add_argument("file")
    b.add_argument("--graph")
    b.add_argument("--bind", action="append", default=[], metavar="N=256")
    b.add_argument("--seed", type=_seed, default=0)
    b.set_defaults(func=cmd_bench)

    s = sub.add_parser("passes", help="list the pass pipeline")
    opt_level(s)
    s.add_argument("--passes", metavar="SPEC", help="list this pipeline spec's passes instead")
    s.set_defaults(func=cmd_passes)

    t = sub.add_parser("opt", help="run passes on IR text and print the result")
    t.add_argument("file", help="a file of IR text (- for stdin)")
    t.add_argument("-p", "--passes", dest="p", required=True, metavar="SPEC",
                   help="the passes to run, as written, e.g. 'simplify,cse' or O2")
    t.add_argument("-o", metavar="OUT")
    t.set_defaults(func=cmd_opt)

    a = sub.add_parser("cache", help="the compiled-code cache: where, how big; empty it")
    a.add_argument("action", choices=["info", "clear"])
    a.set_defaults(func=cmd_cache)
    return p


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """GraphWarnings read like errors (their text names the .graph line), not Python's
    ``file.py:123: GraphWarning`` with a line of graphc's source."""
    print(f"warning: {message}", file=sys.stderr)


def _drop_stdout() -> None:
    """Point stdout at devnull, so that flushing it at exit cannot fail again (Python's recipe
    for SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):           # no file descriptor (captured): nothing to flush
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("default", GraphWarning)
        warnings.showwarning = _show_warning
        try:
            code = int(args.func(args))
            sys.stdout.flush()              # a closed pipe shows here, not at interpreter exit
            return code
        except GraphError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130
        except BrokenPipeError:             # `graphc ... | head`: the reader has what it wants
            _drop_stdout()
            return 141                      # what a shell reports for a tool killed by SIGPIPE
        except MemoryError:
            hint = " (try smaller --bind values)" if getattr(args, "bind", None) else ""
            print(f"error: out of memory{hint}", file=sys.stderr)
            return 1
        except Exception as e:              # a bug in graphc: one line, still no traceback
            if os.environ.get("GRAPHC_TRACEBACK"):
                raise
            text = " ".join(str(e).split())
            print(f"graphc: internal error: {type(e).__name__}: {text[:300]} (a bug in graphc: "
                  f"please report it with this command and its input; GRAPHC_TRACEBACK=1 "
                  f"shows the traceback)", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
