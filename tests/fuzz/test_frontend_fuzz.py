"""Front-end fuzzer: every input either elaborates to verified IR that prints and reads back (and
every 4th one compiles with backend="interp"), or raises a located ``graphc.GraphError``; never
another exception (RecursionError, lark's, a ValueError), and never a hang. Cases are
grammar-aware random programs (some well-typed by construction: those must elaborate into IR of
one float dtype, and run with the same outputs after every pass), byte mutations of the
repository's .graph sources (examples/ and the programs quoted in tests/), and edge inputs: deep
nesting, very long lines, NUL bytes, a BOM, CRLF and lone CR line ends.

Each case is a pure function of its number (``case(i)``), so a failure prints its number and
its source, and ``python -m tests.fuzz.test_frontend_fuzz I`` prints case I again. The default
run takes 200 cases; ``-m slow`` runs 10,000."""
from __future__ import annotations

import ast
import random
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

import graphc
from graphc.elaborate import elaborate_source
from graphc.errors import GraphError, GraphWarning
from graphc.ir import interp
from graphc.ir.core import Func
from graphc.ir.ops import registry
from graphc.ir.text import parse, print_func
from graphc.ir.verify import VerifyError, verify

ROOT = Path(__file__).resolve().parents[2]
SEED = 20261201
CASE_LIMIT_S = 20.0                 # a case slower than this is a hang (deep cases take ~1 s)
COMPILE_EVERY = 4                   # every 4th case that elaborates is compiled and run too


# ---- the seed corpus: examples/*.graph and the .graph programs quoted in tests/ --------------

def _programs_in(path: Path) -> Iterator[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, OSError):
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                "graph " in node.value and "{" in node.value and len(node.value) < 20_000:
            yield node.value


def corpus() -> list[bytes]:
    texts = [p.read_text(encoding="utf-8") for p in sorted(ROOT.glob("examples/*.graph"))]
    for path in sorted(ROOT.glob("tests/**/*.py")):
        if "fuzz" not in path.parts:
            texts += _programs_in(path)
    return sorted({t.encode("utf-8") for t in texts})


CORPUS = corpus()

# ---- grammar-aware random programs --------------------------------------------------------

KEYWORDS = {"const", "fn", "graph", "input", "param", "output", "grad", "for", "return", "in",
            "wrt", "true", "false"}
OPS = sorted((o for o in registry.all() if o.callable_from_dsl and o.name not in KEYWORDS),
             key=lambda o: o.name)
DTYPES = ["f32", "f32", "f32", "f64", "i32", "i64", "bool"]
BINOPS = ["+", "-", "*", "/", "@", "**", "<", "<=", ">", ">=", "==", "!="]


class Gen:
    """Random programs from the .graph grammar, biased towards ones that type-check: inputs
    share a few shapes, names are mostly ones in scope, literals are mostly small."""

    def __init__(self, rng: random.Random):
        self.r = rng
        self.names: list[str] = []
        self.consts: list[str] = []
        self.wild = rng.random() < 0.5      # half the programs hold deliberate mistakes

    def literal(self) -> str:
        r = self.r
        k = r.random()
        if k < 0.35:
            return str(r.choice([0, 1, 2, 3, -1, 10]))
        if k < 0.6:
            return r.choice(["0.5", "1.0", "2.5", "1e-3", "0.0", ".5", "1e400", "3e38"])
        if k < 0.7 or not self.wild and k >= 0.85:
            return r.choice(["true", "false"])
        if k < 0.73 and self.wild:
            return str(r.choice([2 ** 31, 2 ** 62, 2 ** 63 - 1, 2 ** 63, 10 ** r.randint(1, 60)]))
        if k < 0.85:
            return "[" + ", ".join(self.literal() for _ in range(r.randint(0, 3))) + "]"
        return r.choice(['"mean"', '"none"', '"sum"', "f32", "f64", "i64", "N", "M"])

    def expr(self, depth: int) -> str:
        r = self.r
        if depth <= 0 or r.random() < 0.25:
            if self.names and r.random() < 0.6:
                return r.choice(self.names)
            if self.consts and r.random() < 0.3:
                return r.choice(self.consts)
            return self.literal() if r.random() < 0.97 or not self.wild else \
                r.choice(["xx", "W9", "exq"])
        k = r.random()
        if k < 0.3:
            op = r.choice(BINOPS)
            text = f"{self.expr(depth - 1)} {op} {self.expr(depth - 1)}"
            return f"({text})" if op[0] in "<>=!" and r.random() < 0.9 else text
        if k < 0.4:
            return f"-{self.expr(depth - 1)}"
        if k < 0.5:
            return f"({self.expr(depth - 1)})"
        if k < 0.6:
            items = [r.choice([self.expr(depth - 1), ":", "1:", ":-1", "::2", "0", "-1"])
                     for _ in range(r.randint(1, 3))]
            return f"{self.expr(depth - 1)}[{', '.join(items)}]"
        if k < 0.65:
            return f"{self.expr(depth - 1)}.{r.choice(['T', 'mT'] * 20 + ['x'] * self.wild)}"
        return self.call(depth)

    def call(self, depth: int) -> str:
        r = self.r
        op = r.choice(OPS)
        n = len(op.inputs) + r.choice([0, 0, 0, 0, -1, 1])
        if op.variadic:
            args = ["[" + ", ".join(self.expr(depth - 1) for _ in range(r.randint(1, 3))) + "]"]
        else:
            args = [self.expr(depth - 1) for _ in range(max(n, 0))]
        for name, _ in op.attrs:
            if r.random() < 0.3:
                value = r.choice([self.literal(), "0", "1", "-1", "[0, 1]", "true", "f64",
                                  "[2, N]", "[N, 3]", "[-1]"])
                args.append(f"{name}={value}")
        if r.random() < 0.05 and self.wild:
            args.append(f"bogus={self.literal()}")
        return f"{op.dsl_name}({', '.join(args)})"

    def dims(self, static: bool) -> str:
        pool = ["3", "2", "1", "0", "K"] + ([] if static else ["N", "N", "M", "N+1", "2*N"])
        return "[" + ", ".join(self.r.choice(pool) for _ in range(self.r.randint(0, 3))) + "]"

    def program(self) -> str:
        r = self.r
        out: list[str] = ["const K = 3"]
        self.consts = ["K"]
        for i in range(r.randint(0, 2)):
            out.append(f"const C{i} = {self.expr(2)}")
            self.consts.append(f"C{i}")
        for i in range(r.randint(0, 2)):
            params = ["a", "b"][:r.randint(1, 2)]
            self.names = list(params)
            body = [f"    h = {self.expr(2)}"]
            self.names.append("h")
            body.append(f"    return {self.expr(2)}")
            out.append(f"fn f{i}({', '.join(params)}) {{\n" + "\n".join(body) + "\n}")
        self.names = []
        body = []
        shape = self.dims(False)
        for i in range(r.randint(1, 3)):
            dt = "f32" if i == 0 else r.choice(DTYPES)
            body.append(f"input x{i}: {dt}{shape if r.random() < 0.7 else self.dims(False)}")
            self.names.append(f"x{i}")
        for i in range(r.randint(0, 2)):
            init = r.choice(["", " = zeros", " = normal(0.1)", " = uniform(-1, 1)",
                             " = glorot_uniform", " = he_normal"] + [" = normal(-1)"] * self.wild)
            body.append(f"param w{i}: {r.choice(['f32', 'f64'])}{self.dims(True)}{init}")
            self.names.append(f"w{i}")
        for i in range(r.randint(1, 5)):
            if r.random() < 0.15:
                inner = f"y{i} = {self.expr(2)}"
                body.append(f"for t in 0..{r.randint(0, 3)} {{ {inner} }}")
                self.names += ["t"] if r.random() < 0.2 else []
            else:
                body.append(f"y{i} = {self.expr(3)}")
            self.names.append(f"y{i}")
        outs = r.sample(self.names, k=min(len(self.names), r.randint(1, 2)))
        body.append("output " + ", ".join(outs))
        if r.random() < 0.4:
            body.append(f"s = sum({r.choice(self.names)})")
            body.append(r.choice(["grad s", "grad s wrt x0", f"grad s wrt {outs[0]}"]))
        sep = r.choice(["\n    ", "\n    ", "; "])
        out.append("graph g {" + sep + sep.join(body) + "\n}")
        return "\n".join(out) + "\n"

class TypedGen:
    """Programs that type-check by construction: f32 or f64 tensors of shape [N, 3] through
    elementwise ops, broadcasts, keepdims reductions, matmuls, slices, fns and loops, mixed
    with weakly typed values (``exp(1.0)``, ``1.0 / N``, ``mean(where(c, 0.5, 1.0))``)."""
    UNARY = ["exp", "tanh", "sigmoid", "relu", "abs", "square", "softplus", "gelu", "sin",
             "cos", "neg", "stop_gradient", "log1p", "sign", "elu", "leaky_relu"]
    BINARY = ["+", "-", "*", "maximum", "minimum"]
    REDUCE = ["sum", "mean", "max", "min", "logsumexp"]

    def __init__(self, rng: random.Random):
        self.r = rng
        self.dt = rng.choice(["f32", "f64"])
        self.tensors = ["x", "y"]

    def weak(self, depth: int) -> str:
        r = self.r
        k = r.random()
        if depth <= 0 or k < 0.3:
            return r.choice(["0.5", "2", "1.0 / N", "N", "exp(1.0)", "sqrt(2)", "-1", "(N - 1)"])
        if k < 0.5:
            return f"where(c, {self.weak(depth - 1)}, {self.weak(depth - 1)})"
        if k < 0.7:
            return f"{r.choice(self.REDUCE)}(where(c, {self.weak(depth - 1)}, 1.0))"
        if k < 0.85:
            return f"({self.weak(depth - 1)} {r.choice(['+', '*', '-'])} {self.weak(depth - 1)})"
        return f"{r.choice(['exp', 'tanh', 'abs'])}({self.weak(depth - 1)})"

    def expr(self, depth: int) -> str:
        r = self.r
        k = r.random()
        if depth <= 0 or k < 0.2:
            return r.choice(self.tensors)
        a = self.expr(depth - 1)
        if k < 0.4:
            return f"{r.choice(self.UNARY)}({a})"
        if k < 0.6:
            b = self.expr(depth - 1) if r.random() < 0.6 else self.weak(2)
            op = r.choice(self.BINARY)
            return f"({a} {op} {b})" if len(op) == 1 else f"{op}({a}, {b})"
        if k < 0.7:
            return f"{r.choice(self.REDUCE)}({a}, axis={r.choice([0, -2])}, keepdims=true)"
        if k < 0.75:
            return f"({a} @ W)"
        if k < 0.8:
            return f"where({a} > {self.weak(1)}, {a}, {self.weak(1)})"
        if k < 0.85:
            return f"{a}.T.T"
        if k < 0.9:
            return f"concat([{a}[:, 1:], {a}[:, :1]], 1)"
        if k < 0.95:
            return f"pair({a}, {self.expr(depth - 1)})"
        return f"clip({a}, {self.weak(1)}, 5)"

    def program(self) -> str:
        r = self.r
        lines = [f"input x: {self.dt}[N, 3]", f"input y: {self.dt}[N, 3]", "input c: bool[N, 3]",
                 f"param W: {self.dt}[3, 3]"]
        for i in range(r.randint(1, 4)):
            if r.random() < 0.2:
                lines.append(f"h{i} = x")
                lines.append(f"for t in 0..{r.randint(0, 3)} {{ h{i} = {self.expr(2)} + h{i} }}")
            else:
                lines.append(f"h{i} = {self.expr(3)}")
            self.tensors.append(f"h{i}")
        lines.append(f"loss = mean({r.choice(self.tensors)}) + mean({self.weak(2)})")
        lines.append("output loss, " + ", ".join(r.sample(self.tensors[2:] or ["x"], 1)))
        lines.append(r.choice(["grad loss", "grad loss wrt W, x"]))
        return ("fn pair(a, b) {\n    return a * 0.5 + b\n}\n"
                "graph g {\n    " + "\n    ".join(lines) + "\n}\n")


# ---- byte mutation ----------------------------------------------------------------------------

SPECIAL = [b"\r", b"\r\n", b"\xef\xbb\xbf", b"\x00", b"((((", b"]]]", b"**", b"9" * 30,
           b"\xff", b"\xc3", "é".encode(), b"\t", b"\x0c", b"#", b'"', b"..", b"1e999",
           b"\n}\n", b"{", b"grad ", b"fn ", b"graph ", b"const "]


def mutate(src: bytes, r: random.Random) -> bytes:
    data = bytearray(src)
    for _ in range(r.randint(1, 8)):
        n = len(data)
        i = r.randrange(n + 1)
        span = r.randint(1, 16)
        k = r.random()
        if k < 0.25 and n:
            del data[i:i + span]                                       # deletion
        elif k < 0.45:
            data[i:i] = bytes(r.randrange(256) for _ in range(r.randint(1, 4)))  # random bytes
        elif k < 0.6:
            data[i:i] = r.choice(SPECIAL)
        elif k < 0.7 and n:
            j = r.randrange(n)                                         # swap two spans
            a, b = sorted((i, j))
            if b - a >= span:
                chunk_a, chunk_b = data[a:a + span], data[b:b + span]
                data[b:b + span], data[a:a + span] = chunk_a, chunk_b
        elif k < 0.8 and n:
            data[i:i] = data[i:i + span] * r.randint(1, 3)             # duplication
        elif k < 0.9:
            other = r.choice(CORPUS)                                   # splice another source
            j = r.randrange(len(other) + 1)
            data[i:i] = other[j:j + r.randint(1, 64)]
        elif n:
            data[min(i, n - 1)] = r.randrange(256)                     # replace a byte
    return bytes(data)


# ---- edge inputs ------------------------------------------------------------------------------

def edge_cases(depth: int) -> list[str]:
    """Deep nesting of every kind the grammar allows, long lines, odd bytes and line ends."""
    n = depth
    head = "graph g { input x: f32[2, 2]; "
    fn = "fn f(a) { return a }\n"
    return [
        head + "output z = " + "(" * n + "x" + ")" * n + " }",
        head + "output z = x + " + "[" * n + "1" + "]" * n + " }",
        head + "output z = " + "-" * n + "x }",
        head + "output z = x" + " ** x" * n + " }",
        head + "output z = " + "exp(" * n + "x" + ")" * n + " }",
        head + "output z = x" + "[:]" * n + " }",
        head + "output z = x" + ".T" * n + " }",
        head + "output z = " + "x + (" * n + "x" + ")" * n + " }",
        head + "for t in 0..1 { " * n + "y = x" + " }" * n + "; output x }",
        head + "output z = " + "(" * n + "x }",
        head + "output z = " + "[" * n,
        head + "output z = sum(x, axis=" + "[" * n + "0" + "]" * n + ") }",
        fn + head + "output z = " + "f(" * n + "x" + ")" * n + " }",
        "".join(f"const C{i} = C{i + 1} + 1\n" for i in range(n)) + f"const C{n} = 1\n"
        + head + "output z = x * C0 }",
        head + "s = exp(1.0)\n" + "s = s + exp(1.0)\n" * min(n, 3000) + "output z = x + s }",
        head + "output z = x" + " + 1.0" * n + " }",                  # a very long line
        head + "output z = x * " + "7" * 5000 + " }",
        head + "output z = x" + " " * (20 * n) + "}",
        "# " + "x" * (20 * n) + "\n" + head + "output x }",
        head + "output z = x\x00 }", "\x00", "", "\ufeff", "\ufeff" + head + "output x }",
        head.replace("; ", "\r\n") + "\r\noutput x\r\n}\r\n",
        head.replace("; ", "\r") + "\routput y\r}\r",
        "graph g {\r\n  input x: f32[2]\r  output x @@ x\n}",
        "graph g { input x: f32[2] output x }",
        '"' * n, "{" * n, "}" * n, ";" * n, "\n" * n, "#" * n,
        "graph g {" + " input x: f32[2];" * 2 + " output x }",
    ]


# ---- one case ---------------------------------------------------------------------------------

def case(i: int, edges: list[str] | None = None) -> tuple[str, str]:
    """Case ``i``: (kind, source). The first cases are the edge inputs."""
    edges = edge_cases(10_000) if edges is None else edges
    if i < len(edges):
        return "edge", edges[i]
    r = random.Random(f"{SEED}:{i}")
    k = r.random()
    if k < 0.2:
        return "generated", Gen(r).program()
    if k < 0.4:
        return "typed", TypedGen(r).program()
    src = mutate(r.choice(CORPUS), r)
    if k < 0.45:
        src = mutate(src, r) + mutate(r.choice(CORPUS), r)       # two sources glued
    return "mutated", src.decode("utf-8", errors="replace")


class Hang(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise Hang(f"took more than {CASE_LIMIT_S} s")


def check(src: str, kind: str = "", compile_too: bool = True) -> str:
    """"ok" or "error"; raises anything else (AssertionError for an unlocated GraphError or IR
    that does not verify or read back). A "typed" case must elaborate, and, its literals being
    weakly typed, into IR of its one float dtype. ``compile_too``: also compile and run it."""
    try:
        graphs = elaborate_source(src, "fuzz.graph")
    except VerifyError:
        raise
    except GraphError as e:
        text = str(e)                               # formatting the message must not raise
        assert e.loc is not None and e.loc.file == "fuzz.graph", "no location"
        assert "^" in text or not src.strip(), "no caret under the source line"
        assert kind != "typed", f"a well-typed program was rejected: {text}"
        return "error"
    for name, g in graphs.items():
        verify(g.forward)
        printed = print_func(g.forward)
        assert print_func(parse(printed)) == printed, printed
        if kind == "typed":
            other = "f32[" if "f64[N,3]" in printed else "f64["
            assert other not in printed, f"a weak literal did not adopt the dtype:\n{printed}"
        if compile_too and kind != "edge":    # passes on 10,000-deep programs: not the point
            compile_and_run(src, name, g.forward if kind == "typed" else None)
    return "ok"


def compile_and_run(src: str, name: str, forward: Func | None) -> None:
    """Compile on the interpreter (a GraphError is allowed unless ``forward`` is given); with
    ``forward``, the [N, 3] program's outputs after all passes must match the front end's IR."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GraphWarning)
        try:
            model = graphc.compile_source(src, name, backend="interp", cache=False)
        except GraphError:
            if forward is None:
                return
            raise
        if forward is None:
            return
        rng = np.random.default_rng(len(src))
        dt = forward.params[0].dtype.np
        args = {"x": rng.standard_normal((2, 3)).astype(dt),
                "y": rng.standard_normal((2, 3)).astype(dt), "c": rng.random((2, 3)) < 0.5}
        args.update(model.init_params(seed=0))
        out, _ = model.value_and_grad(**args)
        want = interp.run(forward, args)
        for got, ref in zip(out.values(), want):
            assert got.dtype == dt, f"{got.dtype} output from a {dt} program"
            tol = 1e-4 if dt == np.float32 else 1e-10
            np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)


def run_cases(count: int, depth: int, report: Callable[[str], None] = print) -> None:
    edges = edge_cases(depth)
    tally = {"ok": 0, "error": 0}
    failures: list[str] = []
    times: list[tuple[float, int, str]] = []
    old = signal.signal(signal.SIGALRM, _alarm)
    start = time.perf_counter()
    try:
        for i in range(count):
            kind, src = case(i, edges)
            t0 = time.perf_counter()
            try:
                signal.setitimer(signal.ITIMER_REAL, CASE_LIMIT_S)
                try:
                    tally[check(src, kind, i % COMPILE_EVERY == 0)] += 1
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except BaseException as e:               # noqa: B036 - RecursionError, Hang, ...
                if isinstance(e, KeyboardInterrupt):
                    raise
                shown = repr(src) if len(src) < 800 else repr(src[:500]) + " ... " + \
                    repr(src[-200:]) + f" ({len(src)} chars)"
                failures.append(f"case {i} ({kind}): {type(e).__name__}: "
                                f"{str(e)[:300]}\n  source: {shown}")
            times.append((time.perf_counter() - t0, i, kind))
    finally:
        signal.signal(signal.SIGALRM, old)
    slow = ", ".join(f"{i} ({kind}) {t:.2f} s" for t, i, kind in sorted(times)[-5:])
    report(f"{count} cases in {time.perf_counter() - start:.1f} s: {tally['ok']} elaborated, "
           f"{tally['error']} GraphErrors, {len(failures)} failures; slowest: {slow}")
    assert not failures, f"{len(failures)} of {count} cases failed:\n" + "\n".join(failures[:10])


def test_frontend_fuzz_quick() -> None:
    run_cases(200, depth=1100)


@pytest.mark.slow
def test_frontend_fuzz_4000() -> None:
    run_cases(4_000, depth=10_000)


if __name__ == "__main__":                           # print case I: python -m tests.fuzz....
    for arg in sys.argv[1:]:
        print(repr(case(int(arg))[1]))
