"""The ``graphc`` command line (README, "Command line"). User errors print one message and exit 1;
bad usage exits 2; nobody sees a traceback from inside graphc: a bug is one line asking for a
report, and a reader that closes the pipe early ends the command quietly."""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
import warnings
from collections.abc import Sequence
from typing import Any

import graphc
import graphc.passes
from graphc.commands import (
    OPTIMIZERS,
    cmd_bench,
    cmd_cache,
    cmd_check,
    cmd_compile,
    cmd_ops,
    cmd_opt,
    cmd_passes,
    cmd_run,
    seed_arg,
)
from graphc.ir.errors import GraphError, GraphWarning

# -- the parser: every subcommand and option says what it does, with an example -------------
EPILOG = """\
examples:
  graphc compile examples/mlp.graph                      print the optimised IR
  graphc compile examples/mlp.graph --emit svg --func backward -o mlp.svg
  graphc check examples/mlp.graph --bind N=4             gradients vs central differences
  graphc run examples/mlp.graph --inputs batch.npz -o out.npz
  graphc bench examples/mlp.graph --bind N=256           time every entry point
  graphc ops softmax                                     one op's reference entry

exit status: 0 ok, 1 an error in the input (or a failed check), 2 bad usage.
'graphc COMMAND --help' shows a command's options."""


def _sub(sub: Any, name: str, help: str, example: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help,
                          description=textwrap.fill(help[0].upper() + help[1:] + ".", 79),
                          epilog=f"example:\n  {example}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _file(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="a .graph file, e.g. examples/mlp.graph")
    p.add_argument("--graph", metavar="NAME", help="the graph to use when FILE defines "
                   "several, e.g. --graph mlp")


def _opt_level(p: argparse.ArgumentParser) -> None:
    for n, what in enumerate(("only the required passes, the IR verified after each",
                              "adds simplify and cse",
                              "adds constant folding and checkpointing (the default)",
                              "runs the simplifications twice")):
        p.add_argument(f"-O{n}", dest="O", action="store_const", const=n,
                       help=f"optimisation level {n}: {what} (e.g. -O{n})")
    p.set_defaults(O=2)


def _bind(p: argparse.ArgumentParser, default: int, example: str) -> None:
    p.add_argument("--bind", action="append", default=[], metavar="DIM=N",
                   help=f"the size of a symbolic dim, repeatable (default {default} for each), "
                   f"e.g. --bind {example}")
    p.add_argument("--seed", type=seed_arg, default=0, metavar="S",
                   help="the seed of the random arguments and params (default 0), e.g. "
                   "--seed 1")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="graphc", description="graphc: a static graph compiler "
                                "for neural networks.", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"graphc {graphc.__version__}",
                   help="print graphc's version and exit (graphc --version)")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    c = _sub(sub, "compile", "compile a graph and print its IR, LLVM IR, assembly or a picture",
             "graphc compile examples/mlp.graph --emit dot --func backward -o mlp.dot")
    _file(c)
    _opt_level(c)
    c.add_argument("--passes", metavar="SPEC", help="the pass pipeline instead of -O's, e.g. "
                   "--passes autodiff,simplify,dce (autodiff and dce are added if missing)")
    c.add_argument("--emit", choices=["ir", "ir-unopt", "llvm", "asm", "obj", "dot", "svg",
                                      "png"], default="ir",
                   help="what to print: optimised IR (default), IR before any pass, LLVM IR, "
                   "assembly, object files (needs -o), or a Graphviz picture of the kernels "
                   "(dot text; svg and png need Graphviz's dot), e.g. --emit llvm")
    c.add_argument("--func", metavar="NAME", help="the entry point to emit: forward, "
                   "backward, sgd_step, train_step (with --optimizer); default: forward for "
                   "llvm/asm/dot/svg/png, every one for ir/obj; e.g. --func backward")
    c.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help="add the entry point "
                   "train_step with this optimiser at its default settings, e.g. "
                   "--optimizer adam --func train_step")
    c.add_argument("--dump-after", metavar="PASS|all", help="print the IR as it is after "
                   "this pass (or after each), e.g. --dump-after fusion")
    c.add_argument("--time-passes", action="store_true", help="print where compile time goes, "
                   "front end to machine code (compiled afresh, no cache), e.g. --time-passes")
    c.add_argument("-o", metavar="OUT", help="write to OUT instead of stdout, e.g. -o mlp.ll")
    c.set_defaults(handler=cmd_compile)

    k = _sub(sub, "check", "check every function of a graph in float64: its grad line's and "
             "grad(...)'s gradients against central differences",
             "graphc check examples/mlp.graph --bind N=4")
    _file(k)
    _bind(k, 3, "N=4")
    k.set_defaults(handler=cmd_check)

    r = _sub(sub, "run", "run the forward function on arrays from an .npz archive",
             "graphc run examples/mlp.graph --inputs batch.npz --params params.npz -o out.npz")
    _file(r)
    r.add_argument("--inputs", required=True, metavar="IN.npz", help="the inputs by name, an "
                   ".npz archive (numpy.savez); it may hold params too; e.g. --inputs batch.npz")
    r.add_argument("--params", metavar="P.npz", help="the params by name (default: drawn by "
                   "their initializers with --seed), e.g. --params params.npz")
    r.add_argument("--seed", type=seed_arg, default=0, metavar="S",
                   help="the init_params seed when --params is absent (default 0), e.g. "
                   "--seed 1")
    r.add_argument("-o", metavar="OUT", help="write the outputs to OUT, an .npz archive under "
                   "exactly this name (no suffix is added); default: print them; e.g. -o out.npz")
    r.set_defaults(handler=cmd_run)

    b = _sub(sub, "bench", "time forward, value_and_grad and sgd_step at random arguments",
             "graphc bench examples/mlp.graph --bind N=256")
    _file(b)
    _bind(b, 32, "N=256")
    b.set_defaults(handler=cmd_bench)

    s = _sub(sub, "passes", "list the passes of a pipeline, one a line, with what each does",
             "graphc passes -O1")
    _opt_level(s)
    s.add_argument("--passes", metavar="SPEC", help="list this pipeline spec's passes instead, "
                   "e.g. --passes simplify,cse")
    s.set_defaults(handler=cmd_passes)

    t = _sub(sub, "opt", "run passes on IR text and print the result",
             "graphc compile m.graph --emit ir-unopt -o m.ir && graphc opt m.ir -p simplify,cse")
    t.add_argument("file", metavar="FILE", help="a file of IR text (- for stdin), e.g. m.ir")
    t.add_argument("-p", "--passes", dest="p", required=True, metavar="SPEC",
                   help="the passes to run, as written, e.g. -p simplify,cse or -p O2")
    t.add_argument("-o", metavar="OUT", help="write to OUT instead of stdout, e.g. -o out.ir")
    t.set_defaults(handler=cmd_opt)

    a = _sub(sub, "cache", "the compiled-code cache: where it is and how big, or empty it",
             "graphc cache info")
    a.add_argument("action", choices=["info", "clear"], help="info: directory, entries, size; "
                   "clear: remove every entry; e.g. graphc cache clear")
    a.set_defaults(handler=cmd_cache)

    o = _sub(sub, "ops", "the op reference: every op in a table, or one op's entry",
             "graphc ops matmul")
    o.add_argument("name", nargs="?", metavar="NAME", help="an op's name, e.g. softmax "
                   "(default: the table of every op)")
    o.set_defaults(handler=cmd_ops)
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


def _exit_code(e: SystemExit) -> int:
    """argparse's (0 for --help and --version, 2 for bad usage) and ``_usage``'s."""
    return e.code if isinstance(e.code, int) else 0 if e.code is None else 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``graphc ARGV``; returns the exit status (0 ok, 1 a GraphError or a failed check,
    2 bad usage) instead of raising SystemExit, so it can be called in-process."""
    try:
        args = parser().parse_args(argv)
        sys.stdout.flush()
    except SystemExit as e:
        return _exit_code(e)
    except BrokenPipeError:
        _drop_stdout()
        return 141
    with warnings.catch_warnings():
        warnings.simplefilter("default", GraphWarning)
        warnings.showwarning = _show_warning
        try:
            code = int(args.handler(args))
            sys.stdout.flush()              # a closed pipe shows here, not at interpreter exit
            return code
        except GraphError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        except SystemExit as e:             # _usage's, from inside a command
            return _exit_code(e)
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
            if os.environ.get("GRAPHC_TRACEBACK", "").strip() not in ("", "0"):
                raise
            text = " ".join(str(e).split())
            print(f"graphc: internal error: {type(e).__name__}: {text[:300]} (a bug in graphc: "
                  f"please report it with this command and its input; GRAPHC_TRACEBACK=full "
                  f"shows the traceback)", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
