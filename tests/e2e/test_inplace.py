"""Writing in place never changes an answer: ``sgd_step`` (which may write each update over the
caller's array of its param), ``value_and_grad`` and the forward (kernels that write over a buffer
that dies there) give on the native backend what the interpreter gives, at every opt level, for
losses that read a param, or an intermediate, through a transposed, sliced or broadcast view in
the same kernel that could overwrite it."""
from __future__ import annotations

import numpy as np
import pytest

import graphc

# name -> (the param, its declaration with {n}, the loss)
LOSSES = {
    "matmul-self": ("W", "f32[{n}, {n}] = glorot_uniform", "sum(square(W @ W))"),
    "transpose-sub": ("W", "f32[{n}, {n}] = glorot_uniform", "sum(square(W - transpose(W)))"),
    "matmul-transposed": ("W", "f32[{n}, {n}] = glorot_uniform",
                          "sum(tanh(W @ transpose(W)))"),
    "row-broadcast": ("W", "f32[{n}, {n}] = glorot_uniform", "sum(square(W - W[0:1, :]))"),
    "column-broadcast": ("W", "f32[{n}, {n}] = glorot_uniform", "sum(square(W * W[:, 0:1]))"),
    "vector-broadcast": ("b", "f32[{n}] = normal(1.0)", "sum(square(b - b[0:1]))"),
    "strided-slice": ("b", "f32[{n}] = normal(1.0)", "sum(square(b[::2])) + sum(b * b)"),
    "logsumexp-symmetric": ("W", "f32[{n}, {n}] = glorot_uniform",
                            "sum(logsumexp(W + transpose(W), axis=1))"),
    "reshaped": ("c", "f32[{nn}] = normal(1.0)",
                 "sum(square(reshape(c, [{n}, {n}]) @ transpose(reshape(c, [{n}, {n}]))))"),
}


def source(case: str, n: int) -> str:
    name, decl, loss = LOSSES[case]
    decl, loss = (s.format(n=n, nn=n * n) for s in (decl, loss))
    return (f"graph g {{\n    param {name}: {decl}\n    loss = {loss}\n    output loss\n"
            f"    grad loss\n}}\n")


def compare(case: str, n: int, opt_level: int) -> None:
    src = source(case, n)
    name = LOSSES[case][0]
    got = {}
    for backend in ("native", "interp"):
        model = graphc.compile_source(src, opt_level=opt_level, backend=backend)
        params = model.init_params(seed=3)
        _, grads = model.value_and_grad(**params)
        model.sgd_step(params, lr=0.5)
        got[backend] = (grads[name], params[name])
    for what, a, b in zip(("gradient", "updated param"), got["native"], got["interp"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(b).max()),
                                   err_msg=f"{case}, n={n}, -O{opt_level}: {what}")


@pytest.mark.parametrize("case", list(LOSSES))
def test_sgd_step_through_a_view_of_the_param(case: str) -> None:
    """-O2, n=64: before the fix, ``sum(square(W @ W))`` was 2.5e-2 off (relative)."""
    compare(case, 64, 2)


@pytest.mark.slow
@pytest.mark.parametrize("opt_level", range(4))
@pytest.mark.parametrize("n", (1, 8, 64))
@pytest.mark.parametrize("case", list(LOSSES))
def test_sgd_step_through_a_view_at_every_level(case: str, n: int, opt_level: int) -> None:
    compare(case, n, opt_level)


FORWARD = """
graph g {
    input x: f32[N, N]
    e = exp(x)
    z = e + transpose(e)
    y = z @ x
    output y
}
"""


@pytest.mark.parametrize("opt_level", range(4))
def test_forward_kernel_never_overwrites_a_buffer_it_reads_transposed(opt_level: int) -> None:
    """``exp(x) + transpose(exp(x))`` may not take exp's buffer (38 off at -O2 before)."""
    native = graphc.compile_source(FORWARD, opt_level=opt_level)
    interp = graphc.compile_source(FORWARD, opt_level=opt_level, backend="interp")
    rng = np.random.default_rng(0)
    for n in (1, 8, 64):
        x = rng.standard_normal((n, n)).astype(np.float32)
        np.testing.assert_allclose(native(x=x)["y"], interp(x=x)["y"], rtol=1e-4, atol=1e-4)


def test_a_kernel_that_updates_a_param_in_place_reads_it_through_one_pointer() -> None:
    # the update kernel reads W and writes W's new value over the same memory. Both pointers
    # stay noalias (so the loop vectorises without an overlap check that an exact in-place
    # update always fails): the kernel tests them for equality and, when equal, reads W
    # through the output's pointer; apart, they never overlap (a staged result)
    import re
    src = ("graph g {\n    input x: f32[37]\n    param W: f32[37] = ones\n"
           "    loss = sum(square(W * x))\n    output loss\n    grad loss\n}\n")
    m = graphc.compile_source(src, debug=False)      # a debug build checks each pointer apart
    text = m._native.llvm_ir("sgd_step", optimized=False)
    kernels = re.findall(r"define (?:internal )?i32 @[^(]+\(([^)]*)\)[^{]*\{(.*?)\n\}", text,
                         re.S)
    assert kernels
    versioned = [body for args, body in kernels if re.search(r"icmp eq ptr", body)]
    assert versioned, "no kernel compares an in-place pair's pointers"
    assert all(len(re.findall(r"ptr noalias", a)) == a.count("ptr") - 1 for a, _ in kernels)
    ref = graphc.compile_source(src, backend="interp")
    x = np.linspace(-1, 1, 37).astype(np.float32)
    p1, p2 = {"W": np.ones(37, np.float32)}, {"W": np.ones(37, np.float32)}
    for _ in range(3):
        m.sgd_step(p1, 0.1, x=x)
        ref.sgd_step(p2, 0.1, x=x)
    np.testing.assert_allclose(p1["W"], p2["W"], rtol=1e-6)


@pytest.mark.parametrize("opt_level", [0, 2, 3])
def test_gradient_of_a_self_product_inside_the_graph(opt_level: int) -> None:
    # found by the differential fuzzer on a working tree: native -O2/-O3 was off by 1.16
    src = ("graph r {\n    param W: f64[3, 3]\n    v = grad(sum(tanh(W @ W)), W)\n"
           "    output loss = sum(v)\n}\n")
    w = np.random.default_rng(4).normal(size=(3, 3))
    want = graphc.compile_source(src, backend="interp")(W=w)["loss"]
    got = graphc.compile_source(src, opt_level=opt_level)(W=w)["loss"]
    np.testing.assert_allclose(got, want, rtol=1e-12)
