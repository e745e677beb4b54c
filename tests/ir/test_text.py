"""IR text: exact printing of built functions, and print(parse(t)) == t on hand-written dumps."""
# ruff: noqa: E501  (IR lines are compared exactly, so they stay whole)
from __future__ import annotations

import math
import textwrap

import numpy as np

from graphc.ir import Dim, DType, Func, Loc, TensorType, at, const, make
from graphc.ir.text import Module, parse, parse_funcs, parse_type, print_func, print_funcs
from graphc.ir.verify import verify

N, M = Dim.sym("N"), Dim.sym("M")


def ir(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def roundtrip(text: str) -> Func:
    """Parse canonical text, check it prints back exactly and verifies; return the Func."""
    func = parse(text)
    assert isinstance(func, Func)
    assert str(func) == text
    verify(func)
    return func


def arg(name: str, ty: str) -> object:
    t = parse_type(ty)
    return make("arg", name=name, dtype=t.dtype, shape=t.shape)


# ------------------------------------------------------------------------------------ printing

def test_print_numbers_values_and_keeps_args_in_signature(test_ops: None) -> None:
    x, w = arg("x", "f32[N,784]"), arg("W1", "f32[784,256]")
    with at(Loc("mlp.graph", 3, 12, Loc("mlp.graph", 14, 9))):
        s = make("probe", x, w, dt=DType.f32, shape=(N, 256), i=2)
    two = const(2.5, DType.f32)
    y = make("probe", s, two, shape=(), loc=Loc("mlp.graph", 15, 1))
    func = Func("mlp.forward", (x, w), (y, s), ("loss", "h"))
    assert str(func) == ir("""
        func @mlp.forward(%x: f32[N,784], %W1: f32[784,256]) -> (loss: f32[], h: f32[N,256]) {
          %0 = probe %x, %W1 {b=false, d=0, dt=f32, f=0.0, i=2, n=none, s="", shape=[N, 256], t=[]} : f32[N,256]  # mlp.graph:3:12 <- mlp.graph:14:9
          %1 = const 2.5 : f32[]
          %2 = probe %0, %1 {b=false, d=0, dt=f32, f=0.0, i=0, n=none, s="", shape=[], t=[]} : f32[]  # mlp.graph:15:1
          return %2, %0
        }""")


def test_print_empty_function_and_unnamed_results() -> None:
    assert print_func(Func("f", (), ())) == "func @f() -> () {\n  return\n}"
    x = arg("x", "f32[]")
    assert str(Func("g", (x,), (x, x))) == ir("""
        func @g(%x: f32[]) -> (f32[], f32[]) {
          return %x, %x
        }""")


def test_print_quotes_names_that_would_not_read_back() -> None:
    a, b = arg("0", "f32[]"), arg("x.y", "f32[]")
    text = str(Func("my f", (a, b), (a, b), ("f32", "ok")))
    assert text == ir("""
        func @"my f"(%"0": f32[], %x.y: f32[]) -> ("f32": f32[], ok: f32[]) {
          return %"0", %x.y
        }""")
    assert str(parse(text)) == text


def test_f32_constants_print_their_shortest_digits() -> None:
    x = const(0.1, DType.f32)
    assert x.attrs["value"] == float(np.float32(0.1)) != 0.1
    assert str(Func("f", (), (x,))).splitlines()[1] == "  %0 = const 0.1 : f32[]"
    assert parse(str(Func("f", (), (x,)))).results[0].attrs["value"] == x.attrs["value"]


# ------------------------------------------------------------------------------- round trips

def test_roundtrip_every_attribute_kind(test_ops: None) -> None:
    func = roundtrip(ir(r"""
        func @f(%x: f32[N,4]) -> (i64[N+4,2*M*N-N+3]) {
          %0 = probe %x, %x {b=true, d=-N+4, dt=i64, f=-2.5, i=-3, n=none, s="a \"q\"\n\u00e9", shape=[N+4, 2*M*N-N+3], t=[1, [2.0, false], [], inf, -inf, nan, 1e-05, 1e+20, "s", f64, 12*N]} : i64[N+4,2*M*N-N+3]
          return %0
        }"""))
    a = func.results[0].attrs
    assert a["b"] is True and a["n"] is None and a["dt"] is DType.i64
    assert a["d"] == 4 - N and a["f"] == -2.5 and a["i"] == -3 and a["s"] == 'a "q"\n\u00e9'
    assert a["shape"] == (N + 4, 2 * M * N - N + 3) == func.results[0].shape
    t = a["t"]
    assert t[:3] == (1, (2.0, False), ()) and type(t[1][0]) is float
    assert t[3] == math.inf and t[4] == -math.inf and math.isnan(t[5])
    assert t[6:] == (1e-05, 1e+20, "s", DType.f64, 12 * N)


def test_roundtrip_constants() -> None:
    func = roundtrip(ir("""
        func @consts() -> (f32[N,4], i32[3], bool[], bool[2], f32[], f64[], f32[], f64[], f32[0], f32[], f32[], i64[], f64[], i64[]) {
          %0 = const 2.5 : f32[N,4]
          %1 = const [1, -2, 3] : i32[3]
          %2 = const true : bool[]
          %3 = const [true, false] : bool[2]
          %4 = const inf : f32[]
          %5 = const -inf : f64[]
          %6 = const nan : f32[]
          %7 = const -0.0 : f64[]
          %8 = const [] : f32[0]
          %9 = const 1e-05 : f32[]
          %10 = const 123456790.0 : f32[]
          %11 = const -3 : i64[]
          %12 = const 0.1 : f64[]
          %13 = const [7] : i64[]
          return %0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13
        }"""))
    v = [r.attrs["value"] for r in func.results]
    assert v[:4] == [2.5, (1, -2, 3), True, (True, False)]
    assert v[4] == math.inf and v[5] == -math.inf and math.isnan(v[6])
    assert math.copysign(1, v[7]) == -1 and v[8] == () and v[11] == -3 and v[13] == (7,)
    assert func.results[0].type == TensorType(DType.f32, (N, 4))


def test_non_canonical_input_prints_canonically() -> None:
    func = parse(ir("""
        # a comment line, then blank lines

        func @f(%x: f32) -> (f32[]) {
          # comments between ops are dropped
          %a = const 2 : f32   # f.graph:1:2
          %b = const 7 : f32[]
          %c = grad %a, %x : f32[]
          return %c
        }
        """))
    assert str(func) == ir("""
        func @f(%x: f32[]) -> (f32[]) {
          %0 = const 2.0 : f32[]  # f.graph:1:2
          %1 = grad %0, %x : f32[]
          return %1
        }""")


def test_roundtrip_locations_with_inlining_chains() -> None:
    func = roundtrip(ir("""
        func @f(%x: f32[4]) -> (f32[4], f32[]) {
          %0 = const 1.0 : f32[]  # a.graph:4:12 <- a.graph:14:9 <- b.graph:2:1
          %1 = grad %0, %x : f32[4]  # C:\\dir with space\\m.graph:7:3
          return %1, %0
        }"""))
    loc0, loc1 = func.results[1].loc, func.results[0].loc
    assert loc0 == Loc("a.graph", 4, 12, Loc("a.graph", 14, 9, Loc("b.graph", 2, 1)))
    assert loc1 == Loc("C:\\dir with space\\m.graph", 7, 3)


def test_roundtrip_dim_and_grad_ops() -> None:
    func = roundtrip(ir("""
        func @f(%x: f32[N,M], %y: f32[]) -> (f32[], i64[], f32[N,M]) {
          %0 = dim {dtype=f32, value=N+1} : f32[]
          %1 = dim {dtype=i64, value=3} : i64[]
          %2 = grad %y, %x : f32[N,M]
          return %0, %1, %2
        }"""))
    assert func.results[0].attrs["value"] == N + 1 and func.results[1].attrs["value"] == 3


def test_roundtrip_several_functions() -> None:
    text = ir("""
        func @m.forward(%x: f32[3]) -> (y: f32[3]) {
          return %x
        }

        func @m.backward(%x: f32[3], %g: f32[]) -> (dx: f32[3]) {
          %0 = grad %g, %x : f32[3]
          return %0
        }""")
    mod = parse(text)
    assert isinstance(mod, Module) and len(mod) == 2 and str(mod) == text
    assert [f.name for f in parse_funcs(text)] == ["m.forward", "m.backward"]
    assert mod["m.backward"].result_names == ("dx",) and mod[0].name == "m.forward"
    assert print_funcs(mod) == text


def test_roundtrip_nested_body(test_ops: None) -> None:
    func = roundtrip(ir("""
        func @f(%x: f32[N,4], %s: f32[]) -> (f32[N,4]) {
          %0 = probe_fused %x, %s {body=func @k0(%a: f32[N,4], %b: f32[]) -> (f32[N,4]) {
            %0 = grad %b, %a : f32[N,4]
            %1 = probe_fused %0 {body=func @k1(%c: f32[N,4]) -> (f32[N,4]) {
              return %c
            }} : f32[N,4]  # k.graph:2:2
            return %1
          }} : f32[N,4]  # k.graph:1:1
          return %0
        }"""))
    body = func.results[0].attrs["body"]
    assert isinstance(body, Func) and body.name == "k0" and body.params[0].attrs["name"] == "a"


def test_parse_type_reads_polynomial_dims() -> None:
    assert parse_type("f32[2*M*N-N+3, 4]") == TensorType(DType.f32, (2 * M * N - N + 3, 4))
    assert parse_type("i64") == TensorType(DType.i64, ())
    assert parse_type("f64[(N+1)*2]").shape == (2 * N + 2,)
    assert str(parse_type("bool[-N+N*N]")) == "bool[N*N-N]"


def test_indented_text_reads_as_written_in_a_test() -> None:
    text = """
      func @f(%x: f32[4]) -> (f32[4]) {
        %0 = const 1.0 : f32[]
        %1 = grad %0, %x : f32[4]
        return %1
      }"""
    assert str(parse(text)) == textwrap.dedent(text).strip()
