"""Native ``fused`` kernels vs the interpreter: every kernel shape (loop, row, leading-axis
reduction, GEMM with epilogue, lone ops), every elementwise op as a GEMM epilogue on the vector
tiles and the scalar edges, kernels written in place, functions with and without a memory plan,
and bodies the backend cannot lower as one kernel (run op by op instead)."""
from __future__ import annotations

import numpy as np
import pytest

from graphc.ir.core import Func, Value, const, make
from graphc.ir.ops import registry
from graphc.ir.ops.fused import Body
from graphc.ir.types import Dim, DType
from graphc.passes import fusion, memplan, run_pipeline
from graphc.runtime import compile_module
from graphc.runtime.kernelplan import plan_kernels
from tests.runtime.conftest import assert_matches, reference

N = Dim.sym("N")
M = Dim.sym("M")
F32 = DType.f32


def arg(name: str, shape: tuple, dtype: DType = F32) -> Value:
    return make("arg", name=name, dtype=dtype, shape=shape)


def kernels(func: Func, plan: bool = True) -> Func:
    out = fusion.run(func)
    return memplan.run(out) if plan else out


def check(func: Func, sizes: dict[str, tuple[int, ...]], plan: bool = True, seed: int = 0,
          lo: float = -2.0, hi: float = 2.0) -> Func:
    """Partition ``func``, run it natively at each binding and compare with the interpreter on
    the unpartitioned function; returns the partitioned function."""
    fused = kernels(func, plan)
    assert plan_kernels(fused) is not None, "the backend fell back to plain ops"
    mod = compile_module({"f": fused}, cache=False)
    rng = np.random.default_rng(seed)
    for n in range(len(next(iter(sizes.values())))):
        env = {s: v[n] for s, v in sizes.items()}
        arrays = []
        for p in func.params:
            shape = p.type.concrete(env)
            if p.dtype.is_float:
                arrays.append(rng.uniform(lo, hi, shape).astype(p.dtype.np))
            elif p.dtype is DType.bool:
                arrays.append(rng.random(shape) < 0.5)
            else:
                arrays.append(rng.integers(-3, 4, shape).astype(p.dtype.np))
        got = mod.call("f", {p.attrs["name"]: a for p, a in zip(func.params, arrays)}, dims=env)
        assert_matches(got, reference(func, arrays, env), f"{env}\n{fused}")
    return fused


def bodies(func: Func) -> list[str]:
    return [v.attrs["body"].name for v in func.values() if v.op == "fused"]


def test_loop_row_and_leading_reduction_kernels() -> None:
    x, b, y = arg("x", (N, 5)), arg("b", (5,)), arg("y", (N, 5))
    e = make("exp", x - make("max", x, axis=1, keepdims=True))
    soft = e / make("sum", e, axis=1, keepdims=True)
    loss = make("sum", y * make("log", soft + 1e-3), axis=1) * -1.0
    total = make("sum", make("square", x - y)) / make("dim", value=N, dtype=F32)
    col = b - make("sum", make("relu", x), axis=0) * 0.5
    f = Func("f", (x, b, y), (make("tanh", x + b) * 2.0, soft, loss, total, col))
    out = check(f, {"N": (0, 1, 7, 33)})
    assert bodies(out) == ["loop.mul", "row.div", "row.mul", "row.div", "reduce.sub"]


@pytest.mark.parametrize("dtype", [DType.f32, DType.f64])
def test_gemm_epilogues_on_tiles_and_edges(dtype: DType) -> None:
    """N = 9 rows and 37 or 69 columns: full vector tiles plus both kinds of remainder."""
    for cols in (37, 69):
        x, w = arg("x", (N, 8), dtype), arg("w", (8, cols), dtype)
        b, g = arg("b", (cols,), dtype), arg("g", (N, cols), dtype)
        relu = make("relu", x @ w + b)
        mask = make("where", make("gt", g, const(0.0, dtype)), x @ w, const(0.0, dtype))
        f = Func("f", (x, w, b, g), (relu, mask, make("sigmoid", x @ w) * g, x @ w))
        out = check(f, {"N": (0, 3, 9)})
        assert bodies(out) == ["matmul.relu", "matmul.where", "matmul.mul", "matmul.matmul"]


def unary_float_ops() -> list[str]:
    return [op.name for op in registry.all() if op.kind == registry.ELEMENTWISE
            and op.inputs == ("x",) and not op.attrs and op.name not in ("logical_not",)]


def binary_ops() -> list[str]:
    return [op.name for op in registry.all() if op.kind == registry.ELEMENTWISE
            and op.inputs == ("x", "y") and op.name not in ("logical_and", "logical_or")]


SOME_UNARY = ("relu", "tanh", "isfinite")
SOME_BINARY = ("div", "maximum", "gt")


@pytest.mark.parametrize("unary, binary", [
    (SOME_UNARY, SOME_BINARY),
    pytest.param(tuple(unary_float_ops()), tuple(binary_ops()), marks=pytest.mark.slow,
                 id="every-op")])
def test_elementwise_ops_as_epilogues(unary: tuple[str, ...], binary: tuple[str, ...]) -> None:
    """Each op applied to the product, with a broadcast row and a full matrix as other operand,
    over vector tiles (unit-stride loads), broadcast and strided (gathered) side inputs."""
    x, w = arg("x", (N, 4)), arg("w", (4, 35))
    row, full = arg("row", (35,)), arg("full", (35, N))
    side = make("transpose", full, perm=(1, 0))                    # strided: gathered lanes
    results = []
    for name in unary:
        results.append(make(name, make("tanh", x @ w)))
    for name in binary:
        results.append(make(name, x @ w, row))
        results.append(make(name, side, x @ w))
    results.append(make("cast", make("gt", x @ w, row), dtype=F32) * (x @ w))
    results.append(make("cast", x @ w, dtype=DType.f64))
    f = Func("f", (x, w, row, full), tuple(results))
    out = check(f, {"N": (4, 9)}, lo=0.2, hi=1.5)
    assert all(name.startswith("matmul.") for name in bodies(out))


def test_integer_and_bool_kernels() -> None:
    i, j = arg("i", (N, 3), DType.i32), arg("j", (3, 4), DType.i32)
    big = make("gt", i, make("max", i, axis=1, keepdims=True) - 1)
    f = Func("f", (i, j), (big, make("sum", make("abs", i), axis=1),
                           make("maximum", i @ j, const(0, DType.i32)),
                           make("argmax", i * 2, axis=1)))
    out = check(f, {"N": (0, 2, 9)})
    assert bodies(out) == ["row.gt", "row.sum", "matmul.maximum", "loop.mul", "single.argmax"]


def test_lone_ops_and_views_between_kernels() -> None:
    x, idx = arg("x", (N, 4)), arg("idx", (M,), DType.i64)
    e = make("exp", x)
    t = make("transpose", e, perm=(1, 0))
    f = Func("f", (x, idx), (make("take", e, idx, axis=0), make("reshape", t, shape=(4 * N,)),
                             make("pad", e, lo=(1, 0), hi=(0, 2), interior=(0, 0)),
                             make("concat", e, x, axis=0), t @ e))
    rng_idx = {"N": (3, 5), "M": (2, 4)}
    fused = kernels(f)
    mod = compile_module({"f": fused}, cache=False)
    for n, m in zip(*rng_idx.values()):
        xs = np.random.default_rng(n).standard_normal((n, 4)).astype(np.float32)
        ids = np.arange(m) % n
        assert_matches(mod.call("f", {"x": xs, "idx": ids}), reference(f, [xs, ids]))
    assert bodies(fused) == ["loop.exp", "single.take", "single.reshape", "single.pad",
                             "single.concat", "matmul.matmul"]


def test_symbols_only_a_body_binds() -> None:
    x, y = arg("x", (N,)), arg("y", (M,))
    f = Func("f", (x, y), (x * make("dim", value=M * 2, dtype=F32), make("neg", y)))
    out = check(f, {"N": (0, 3), "M": (2, 5)})
    assert "syms" in out.results[0].attrs


def test_in_place_kernels_give_the_same_results() -> None:
    x, w = arg("x", (N, 40)), arg("w", (40, 40))
    h = make("tanh", x @ w)
    g = make("matmul", h, w)
    out = make("exp", g) * make("sum", h, axis=1, keepdims=True)
    f = Func("f", (x, w), (make("sum", out @ w, axis=1),))
    fused = check(f, {"N": (1, 6, 13)}, lo=-0.3, hi=0.3)
    offsets = [v.attrs.get("offset") for v in fused.values() if v.op == "fused"]
    assert len(set(map(str, offsets))) < len(offsets)            # some kernel wrote in place


def test_without_a_memory_plan_the_runtime_places_buffers() -> None:
    x, w = arg("x", (N, 6)), arg("w", (6, 6))
    f = Func("f", (x, w), (make("sum", make("exp", x @ w) * x, axis=0),))
    out = check(f, {"N": (0, 2, 11)}, plan=False)
    assert all("offset" not in v.attrs for v in out.values())


def test_a_body_with_no_single_lowering_is_refused() -> None:
    """The runtime lowers exactly the kernels the IR holds: one it cannot lower (made by hand;
    the fusion pass never forms it) is a clear error, not silently re-planned."""
    from graphc.ir.errors import GraphError
    x, w = arg("in0", (N, 3)), arg("in1", (3, 3))
    body = Func("two", (x, w), (make("tanh", (x @ w) @ w),))
    xo, wo = arg("x", (N, 3)), arg("w", (3, 3))
    f = Func("f", (xo, wo), (make("fused", xo, wo, body=body),))
    assert isinstance(f.results[0].attrs["body"], Body)
    with pytest.raises(GraphError, match="cannot lower kernel two"):
        compile_module({"f": f}, cache=False)


def test_numerics_guard_names_an_op_inside_a_kernel() -> None:
    from graphc.ir.core import at
    from graphc.ir.errors import Loc, NumericsError
    x = arg("x", (N,))
    with at(Loc("k.graph", 2, 3)):
        lg = make("log", x)
    f = run_pipeline(Func("f", (x,), (make("exp", lg) * 2.0,)), "fusion{policy=single},memplan",
                     required=False)         # as compile(check_numerics=True) plans it
    mod = compile_module({"f": f}, cache=False, check_numerics=True)
    with pytest.raises(NumericsError, match="log") as e:
        mod.call("f", {"x": np.array([1.0, -1.0], np.float32)})
    assert e.value.loc == Loc("k.graph", 2, 3)


def test_values_shared_inside_a_kernel_are_computed_once() -> None:
    """v = sin(v) * v thirty times is one loop kernel whose body is a DAG: lowered as a tree it
    would hold 2**30 nodes."""
    x = arg("x", (N, 4), DType.f64)
    v = make("tanh", x)
    for _ in range(30):
        v = make("sin", v) * v
    out = check(Func("f", (x,), (v, make("sum", v, axis=1))), {"N": (0, 3)})
    assert bodies(out) == ["loop.mul", "row.sum"]
