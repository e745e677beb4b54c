"""The packed GEMM (runtime/gemm.py) against NumPy: every blocking edge (rows around the
register tile and the 1-row and few-row paths, columns around the panel width and the column
block, depths around the k block, K = 0), every operand layout (A, Aᵀ, B, Bᵀ, batched and
broadcast batches), f32 and f64, fused epilogues (one that changes the dtype, one written in
place over its own input), and every thread count. One compile with symbolic dims serves
many shapes, so the runtime choice of path is exercised too."""
from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.runtime import gemm, matmul_kernels
from tests.runtime.conftest import tolerance

ROWS = [1, 2, 3, 5, 8, 9, 16, 17, 33, 130]
COLS = [1, 15, 16, 33, 127, 129, 513, 1030]
DEPTH = [0, 1, 7, 255, 321, 600, 641]      # around the k block (KC = 320), split evenly

LAYOUTS = {
    "nn": ("A: {t}[M, K]", "B: {t}[K, N]", "A @ B"),
    "tn": ("A: {t}[K, M]", "B: {t}[K, N]", "A.T @ B"),
    "nt": ("A: {t}[M, K]", "B: {t}[N, K]", "A @ B.T"),
    "tt": ("A: {t}[K, M]", "B: {t}[N, K]", "A.T @ B.T"),
}


def _src(layout: str, t: str) -> str:
    a, b, expr = LAYOUTS[layout]
    return (f"graph g {{\n input {a.format(t=t)}\n input {b.format(t=t)}\n C = {expr}\n"
            f" output C\n}}\n")


@pytest.fixture(scope="module", params=[("f32", 1), ("f32", 3), ("f64", 2)],
                ids=lambda p: f"{p[0]}-{p[1]}threads")
def models(request: pytest.FixtureRequest) -> tuple[type, dict[str, graphc.Model]]:
    t, threads = request.param
    dt = np.float32 if t == "f32" else np.float64
    return dt, {lay: graphc.compile_source(_src(lay, t), num_threads=threads)
                for lay in LAYOUTS}


def _operands(layout: str, m: int, k: int, n: int, dt: np.dtype, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = rng.standard_normal((m, k)).astype(dt)
    b = rng.standard_normal((k, n)).astype(dt)
    ga = np.ascontiguousarray(a.T) if layout[0] == "t" else a
    gb = np.ascontiguousarray(b.T) if layout[1] == "t" else b
    return ga, gb, a.astype(np.float64) @ b.astype(np.float64)


def _check(got: np.ndarray, want: np.ndarray, k: int) -> None:
    tol = tolerance(got.dtype)
    # a sum of k products: its rounding grows with k (NumPy's own order differs from ours)
    np.testing.assert_allclose(got, want.astype(got.dtype), rtol=tol["rtol"],
                               atol=tol["atol"] * max(k, 1) ** 0.5 * 4)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_edge_of_the_blocking(models: tuple, layout: str) -> None:
    dt, compiled = models
    model = compiled[layout]
    rng = np.random.default_rng(len(layout))
    shapes = [(m, k, n) for m in ROWS for k, n in zip(DEPTH, COLS[1:])]
    shapes += [(m, 7, n) for m in (1, 17) for n in COLS]
    for m, k, n in shapes:
        ga, gb, want = _operands(layout, m, k, n, dt, rng)
        got = model(A=ga, B=gb)["C"]
        assert got.shape == (m, n)
        _check(got, want, k)


def test_zero_depth_gives_zeros(models: tuple) -> None:
    dt, compiled = models
    got = compiled["nn"](A=np.ones((40, 0), dt), B=np.ones((0, 70), dt))["C"]
    assert got.shape == (40, 70) and not got.any()


def test_static_shapes_and_batches() -> None:
    """Constant dims pick one path at compile time; batches loop over the 2-D product, a
    broadcast batch included."""
    src = """graph g {
        input A: f32[3, 37, 300]
        input B: f32[300, 45]
        input P: f64[2, 1, 5, 20]
        input Q: f64[4, 20, 33]
        C = A @ B
        D = P @ Q
        output C, D
    }"""
    model = graphc.compile_source(src)
    rng = np.random.default_rng(1)
    A, B = rng.standard_normal((3, 37, 300)).astype(np.float32), rng.standard_normal(
        (300, 45)).astype(np.float32)
    P, Q = rng.standard_normal((2, 1, 5, 20)), rng.standard_normal((4, 20, 33))
    out = model(A=A, B=B, P=P, Q=Q)
    _check(out["C"], A.astype(np.float64) @ B, 300)
    _check(out["D"], P @ Q, 20)


def test_epilogues_fused_on_finished_blocks() -> None:
    """Bias + relu (the MLP's layer), a comparison that makes the result bool (the product
    goes to a scratch C), and a product written over an epilogue input in place."""
    src = """graph g {
        input x: f32[N, 300]
        input W: f32[300, 140]
        input b: f32[140]
        input r: f32[N, 140]
        h = relu(x @ W + b)
        pos = x @ W > r
        g = (x @ W) * r
        output h, pos, g
    }"""
    model = graphc.compile_source(src)
    ref = graphc.compile_source(src, backend="interp")
    rng = np.random.default_rng(2)
    for n in (1, 5, 16, 17, 129, 300):
        args = dict(x=rng.standard_normal((n, 300)).astype(np.float32),
                    W=rng.standard_normal((300, 140)).astype(np.float32),
                    b=rng.standard_normal(140).astype(np.float32),
                    r=rng.standard_normal((n, 140)).astype(np.float32))
        got, want = model(**args), ref(**args)
        _check(got["h"], want["h"].astype(np.float64), 300)
        _check(got["g"], want["g"].astype(np.float64), 300)
        prod = args["x"].astype(np.float64) @ args["W"]
        clear = np.abs(prod - args["r"]) > 1e-3 * np.abs(prod).max()   # not a rounding tie
        assert got["pos"].dtype == np.bool_
        np.testing.assert_array_equal(got["pos"][clear], want["pos"][clear])


def test_in_place_over_an_epilogue_input() -> None:
    """The memory plan gives ``(y @ V) * h`` the slot of ``h`` (a matmul's result that dies
    there, as the MLP's backward does with relu's mask): the product must not overwrite h
    before the epilogue reads it."""
    src = """graph g {
        input x: f32[N, 64]
        input W: f32[64, 48]
        input y: f32[N, 32]
        input V: f32[32, 48]
        input U: f32[48, 8]
        h = x @ W
        s = sum(h)
        g = (y @ V) * h
        out = g @ U
        output out, s
    }"""
    model = graphc.compile_source(src)
    assert model.dump_ir().count("offset=0, slot=0,") == 2      # g overwrites h
    rng = np.random.default_rng(3)
    for n in (3, 200):
        x, W, y, V, U = (rng.standard_normal(s).astype(np.float32) for s in (
            (n, 64), (64, 48), (n, 32), (32, 48), (48, 8)))
        want = ((y.astype(np.float64) @ V) * (x.astype(np.float64) @ W)) @ U
        _check(model(x=x, W=W, y=y, V=V, U=U)["out"], want, 64 * 48)


def test_tiles_fit_the_registers() -> None:
    """The register tile leaves room for B's vectors and the broadcast A element."""
    for dt in (graphc.ir.types.DType.f32, graphc.ir.types.DType.f64):
        regs = 32 if gemm.vector_bytes() == 64 else 16
        for rows in ("big", "small", "one"):
            blk = gemm.blocking(dt, rows)
            assert blk.mr * blk.nv + blk.nv + 1 <= regs
            assert blk.nc % blk.nr == 0 and blk.kc > 0


def test_scratch_blocks_and_whole_scratch() -> None:
    """A bool result (the product staged in scratch): one block of scratch when K fits a k
    block, all of C when it does not, around the row and column block sizes."""
    model = graphc.compile_source("graph g {\n input A: f64[M, K]\n input B: f64[K, N]\n"
                                  " C = A @ B > 0.25\n output C\n}\n")
    rng = np.random.default_rng(5)
    for m, k, n in [(300, 5, 1030), (129, 256, 513), (140, 700, 1030), (3, 40, 600)]:
        a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
        prod = a @ b
        got = model(A=a, B=b)["C"]
        clear = np.abs(prod - 0.25) > 1e-9
        np.testing.assert_array_equal(got[clear], (prod > 0.25)[clear])


@pytest.mark.parametrize("dt", ["f32", "f64"])
def test_thin_products_of_small_depth(dt: str) -> None:
    """K of at most SMALL_K (a weight gradient at a small batch) runs as unpacked rank-K updates:
    around the vector block of one row (64 f32 / 32 f64 columns), with every layout, an
    epilogue that writes the product over its own input in place (the SGD update of W), and
    a symbolic K that picks the thin or the packed path at run time."""
    src = f"""graph g {{
        input x: {dt}[K, M]
        input d: {dt}[K, N]
        input e: {dt}[N, K]
        input g: {dt}[K, N]
        input W: {dt}[M, N]
        param lr: {dt}[]
        C = x.T @ d
        D = x.T @ e.T
        W2 = W - lr * (x.T @ g)
        output C, D, W2
    }}"""
    model = graphc.compile_source(src.replace("param lr", "input lr"))
    ref = graphc.compile_source(src.replace("param lr", "input lr"), backend="interp")
    rng = np.random.default_rng(6)
    npdt = np.float32 if dt == "f32" else np.float64
    small = matmul_kernels.SMALL_K
    for k, m, n in [(1, 1, 1), (1, 9, 64), (2, 17, 63), (3, 5, 65), (4, 33, 129),
                    (small, 3, 300), (small + 1, 20, 70), (0, 4, 70)]:
        args = dict(x=rng.standard_normal((k, m)), d=rng.standard_normal((k, n)),
                    e=rng.standard_normal((n, k)), g=rng.standard_normal((k, n)),
                    W=rng.standard_normal((m, n)),
                    lr=np.array(0.5))
        args = {a: v.astype(npdt) for a, v in args.items()}
        got, want = model(**args), ref(**args)
        for name in ("C", "D", "W2"):
            _check(got[name], want[name].astype(np.float64), k)


def test_many_row_blocks_in_one_parallel_region() -> None:
    """More rows than one row block (MC) and several k blocks: on several threads every row
    block's panels are one region's tasks; the result is bitwise the 1-thread one, with the
    bias + relu epilogue and with C += A @ B accumulation across k blocks."""
    src = """graph g {
        input x: f32[N, 600]
        input W: f32[600, 300]
        input b: f32[300]
        h = relu(x @ W + b)
        output h
    }"""
    rng = np.random.default_rng(7)
    models = {t: graphc.compile_source(src, num_threads=t) for t in (1, 2, 3)}
    for n in (129, 300, 517):
        args = dict(x=rng.standard_normal((n, 600)).astype(np.float32),
                    W=rng.standard_normal((600, 300)).astype(np.float32),
                    b=rng.standard_normal(300).astype(np.float32))
        got = {t: m(**args)["h"] for t, m in models.items()}
        want = np.maximum(args["x"].astype(np.float64) @ args["W"] + args["b"], 0)
        _check(got[1], want, 600)
        for t in (2, 3):
            np.testing.assert_array_equal(got[t], got[1], err_msg=f"{t} threads, N={n}")


@pytest.mark.parametrize("threads", [1, 2])
def test_a_strided_along_k_is_packed_first(threads: int) -> None:
    """Aᵀ (a weight gradient's xᵀ) and an A strided both ways (a stepped slice, transposed)
    are copied row-major per row block before the product: full transposed blocks, the last
    rows and the last columns of a k block, one and several row blocks per region."""
    src = """graph g {
        input A: f32[K, M]
        input S: f32[K, 2*M]
        input B: f32[K, N]
        C = A.T @ B
        D = S[:, ::2].T @ B
        output C, D
    }"""
    model = graphc.compile_source(src, num_threads=threads)
    rng = np.random.default_rng(8)
    for m, k, n in [(17, 5, 3), (40, 300, 70), (130, 257, 33), (300, 513, 129)]:
        a, s, bm = (rng.standard_normal(sh).astype(np.float32)
                    for sh in ((k, m), (k, 2 * m), (k, n)))
        got = model(A=a, S=s, B=bm)
        _check(got["C"], a.T.astype(np.float64) @ bm, k)
        _check(got["D"], s[:, ::2].T.astype(np.float64) @ bm, k)


def test_the_library_copies_inline() -> None:
    """The packing's row copies and the edge tiles' stores stay loops of vector moves: LLVM
    turns such loops into calls of memcpy for 40-128 bytes unless told "no-builtins"."""
    from graphc.ir.types import DType
    from graphc.runtime import gemmlib, jit
    text, _ = gemmlib.build(DType.f32)
    asm = jit.assembly(text, gemmlib.OPT_LEVEL)
    assert "memcpy" not in asm and "memmove" not in asm


def test_an_epilogue_that_adds_the_product_to_itself() -> None:
    """``C + C`` after ``A @ B``: the epilogue's two operands are both the product (this
    compile stopped with a StopIteration from the accumulate-mode check)."""
    model = graphc.compile_source("graph g {\n input A: f32[M, K]\n input B: f32[K, N]\n"
                                  " C = A @ B\n D = C + C\n output D\n}\n")
    rng = np.random.default_rng(9)
    a = rng.standard_normal((20, 30)).astype(np.float32)
    b = rng.standard_normal((30, 40)).astype(np.float32)
    _check(model(A=a, B=b)["D"], 2 * (a.astype(np.float64) @ b), 30)
